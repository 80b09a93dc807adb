//! Per-layer estimates off the UI thread, for models large enough that recomputing every
//! layer takes longer than a frame (a global slider drag on a 25M-parameter model).
//!
//! Latest wins: while one recipe is being applied, newer requests replace each other in a
//! one-slot mailbox, so the worker never falls behind a drag. Results come back through
//! another slot, and the waker repaints the window.
//!
//! The worker computes in its own thread pool, one thread short of the machine's cores: on
//! the global pool it would keep every core busy and the UI thread's own parallel work (the
//! selected layer's histograms) would queue behind it for hundreds of milliseconds.

use std::sync::{Arc, Condvar, Mutex, PoisonError};

use edgefit_engine::CancelToken;
use edgefit_engine::compress::compressor::{Compression, Compressor};
use edgefit_engine::compress::plan::Recipe;

/// Weights (compressible values) above which a session estimates in the background.
pub const BACKGROUND_ABOVE_WEIGHTS: usize = 1_000_000;

/// What the worker waits on.
#[derive(Default)]
struct Mailbox {
    wanted: Option<Recipe>,
    closed: bool,
}

/// A result: the recipe it is for, and the estimates (or why they failed).
pub type Estimate = (Recipe, Result<Compression, String>);

/// A worker thread owning its own compressor (sharing the original weights).
pub struct Estimator {
    mailbox: Arc<(Mutex<Mailbox>, Condvar)>,
    result: Arc<Mutex<Option<Estimate>>>,
}

impl Estimator {
    /// Starts the worker (`edgefit-estimates`); `wake` is called after each result.
    pub fn start(
        mut compressor: Compressor,
        wake: impl Fn() + Send + 'static,
    ) -> std::io::Result<Self> {
        let mailbox = Arc::new((Mutex::new(Mailbox::default()), Condvar::new()));
        let result = Arc::new(Mutex::new(None));
        let (worker_mailbox, worker_result) = (mailbox.clone(), result.clone());
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .saturating_sub(1)
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("edgefit-estimates-{i}"))
            .build()
            .map_err(std::io::Error::other)?;
        std::thread::Builder::new()
            .name("edgefit-estimates".to_owned())
            .spawn(move || {
                let (lock, ready) = &*worker_mailbox;
                loop {
                    let recipe = {
                        let mut mailbox = lock.lock().unwrap_or_else(PoisonError::into_inner);
                        while mailbox.wanted.is_none() && !mailbox.closed {
                            mailbox = ready.wait(mailbox).unwrap_or_else(PoisonError::into_inner);
                        }
                        if mailbox.closed {
                            return;
                        }
                        mailbox.wanted.take()
                    };
                    let Some(recipe) = recipe else { continue };
                    let estimate = pool
                        .install(|| compressor.apply(&recipe, &CancelToken::new()))
                        .map_err(|e| e.to_string());
                    *worker_result.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some((recipe, estimate));
                    wake();
                }
            })?;
        Ok(Self { mailbox, result })
    }

    /// Asks for the estimates of `recipe`, replacing any request not yet started.
    pub fn request(&self, recipe: Recipe) {
        let (lock, ready) = &*self.mailbox;
        lock.lock().unwrap_or_else(PoisonError::into_inner).wanted = Some(recipe);
        ready.notify_one();
    }

    /// The newest finished estimate, if one arrived since the last call.
    pub fn take(&self) -> Option<Estimate> {
        self.result
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Drop for Estimator {
    fn drop(&mut self) {
        let (lock, ready) = &*self.mailbox;
        lock.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        ready.notify_one();
    }
}
