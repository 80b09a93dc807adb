//! Deadlines of onnxruntime runs: one watchdog thread terminates the runs past theirs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

type Options = Arc<ort::session::RunOptions>;

struct Watched {
    id: u64,
    started: Instant,
    options: Options,
    fired: bool,
}

static RUNS: Mutex<Vec<Watched>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static WATCHDOG: OnceLock<()> = OnceLock::new();

/// Starts watching a run; returns its id for [`release`].
pub(super) fn watch(options: Options) -> u64 {
    WATCHDOG.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("edgefit-ort-deadline".to_owned())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    let deadline = crate::model::guard::run_timeout();
                    let mut runs = RUNS.lock().unwrap_or_else(PoisonError::into_inner);
                    for run in runs.iter_mut().filter(|r| !r.fired) {
                        if run.started.elapsed() > deadline {
                            run.fired = run.options.terminate().is_ok();
                        }
                    }
                }
            });
    });
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    RUNS.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Watched {
            id,
            started: Instant::now(),
            options,
            fired: false,
        });
    id
}

/// Stops watching run `id`; whether its deadline had fired.
pub(super) fn release(id: u64) -> bool {
    let mut runs = RUNS.lock().unwrap_or_else(PoisonError::into_inner);
    let fired = runs.iter().any(|r| r.id == id && r.fired);
    runs.retain(|r| r.id != id);
    fired
}
