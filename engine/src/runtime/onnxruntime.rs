//! Running models with ONNX Runtime, loaded at run time from an installed shared library.
//!
//! The `ort` crate is built with `load-dynamic`: nothing is linked or downloaded at build time,
//! and the library is opened by [`load`] the first time onnxruntime is asked for. Any other
//! `ort` call before a successful load would try to open a library itself and panic when there
//! is none, so every entry point here calls [`load`] first. One ONNX Runtime environment is
//! created per process.
//!
//! `Session::run` needs `&mut Session`: an [`OrtModel`] keeps a small pool of sessions of the
//! same model (one per thread that runs it concurrently), each with an explicit intra-op
//! thread count.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::FixedInput;
use ort::environment::Environment;
use ort::logging::LogLevel;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{
    DynMapValueType, DynSequenceValueType, DynValue, TensorElementType, TensorRef, ValueType,
};

use crate::error::{Error, Result};
use crate::proto::{Message, ModelProto, ValueInfoProto};

const RUNTIME: &str = "onnxruntime";

/// Environment variable naming the ONNX Runtime shared library (or a folder holding it).
pub const LIBRARY_ENV: &str = "EDGEFIT_ONNXRUNTIME_LIB";

/// `ort`'s own environment variable for the library, honoured too.
pub const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// How to enable onnxruntime, for messages.
pub const HOW_TO_ENABLE: &str = "to enable it, `pip install onnxruntime` (its wheel holds the library) or set EDGEFIT_ONNXRUNTIME_LIB=/path/to/libonnxruntime.so.X";

/// The session option that tells onnxruntime where external-data files are when the model is
/// given as bytes.
const EXTERNAL_DATA_FOLDER: &str = "session.model_external_initializers_file_folder_path";

fn runtime_error(reason: impl std::fmt::Display) -> Error {
    Error::Runtime {
        runtime: RUNTIME,
        reason: reason.to_string(),
    }
}

fn ort_error(context: &str, error: impl std::fmt::Display) -> Error {
    runtime_error(format!("{context}: {error}"))
}

/// The library this process loaded, once loaded.
static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
/// This process's one ONNX Runtime environment, created right after the library loads.
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();
/// Serializes load attempts.
static LOADING: Mutex<()> = Mutex::new(());
/// The outcome of looking in the well-known places when nothing was configured, remembered
/// so a missing library is not searched for again and again.
static DISCOVERY_FAILED: OnceLock<String> = OnceLock::new();

/// The ONNX Runtime library loaded by this process, if one is.
pub fn loaded_library() -> Option<&'static Path> {
    LIBRARY.get().map(PathBuf::as_path)
}

/// Loads the ONNX Runtime shared library (once per process) and returns its path.
///
/// Looked for, in order:
/// 1. `explicit` (a setting or a command-line option): a library file or a folder holding one;
/// 2. `$EDGEFIT_ONNXRUNTIME_LIB`, then `$ORT_DYLIB_PATH`;
/// 3. well-known places: the `onnxruntime/capi/` folder of a pip-installed `onnxruntime`
///    (user, system, pyenv, virtualenv and conda site-packages, then where `python3` imports
///    it from), and system library folders (`/usr/lib`, `/usr/local/lib`, …).
///
/// A path given in (1) or (2) is used alone: when it does not load, the error says why rather
/// than falling back to another library. Each candidate is opened with `ort::init_from` until
/// one loads; only then is any other `ort` API used. Once a library is loaded, later calls
/// return it whatever they ask for (a process keeps the library it loaded).
///
/// When none loads: [`Error::Runtime`] naming what was tried and how to enable onnxruntime.
pub fn load(explicit: Option<&Path>) -> Result<&'static Path> {
    if let Some(path) = LIBRARY.get() {
        return Ok(path);
    }
    let _guard = LOADING.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = LIBRARY.get() {
        return Ok(path);
    }
    let configured = explicit
        .map(|p| (p.to_path_buf(), "the configured library path".to_owned()))
        .or_else(|| env_path(LIBRARY_ENV).map(|p| (p, LIBRARY_ENV.to_owned())))
        .or_else(|| env_path(ORT_LIBRARY_ENV).map(|p| (p, ORT_LIBRARY_ENV.to_owned())));
    match configured {
        Some((path, origin)) => {
            let candidates = if path.is_dir() {
                libraries_in(&path)
            } else {
                vec![path.clone()]
            };
            if candidates.is_empty() {
                return Err(runtime_error(format!(
                    "the ONNX Runtime library was not found: {origin} is a folder with no libonnxruntime in it ({}); {HOW_TO_ENABLE}",
                    path.display()
                )));
            }
            try_candidates(&candidates).map_err(|tried| {
                runtime_error(format!(
                    "the ONNX Runtime library from {origin} does not load: {}; {HOW_TO_ENABLE}",
                    tried.join("; ")
                ))
            })
        }
        None => {
            if let Some(message) = DISCOVERY_FAILED.get() {
                return Err(runtime_error(message));
            }
            let mut candidates = well_known_libraries();
            let mut result = try_candidates(&candidates);
            if result.is_err() {
                let more: Vec<PathBuf> = python_capi_dir()
                    .map(|dir| libraries_in(&dir))
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|p| !candidates.contains(p))
                    .collect();
                if !more.is_empty() {
                    let tried_before = result.err().unwrap_or_default();
                    result = try_candidates(&more).map_err(|mut t| {
                        t.splice(0..0, tried_before);
                        t
                    });
                    candidates.extend(more);
                }
            }
            result.map_err(|tried| {
                let message = if tried.is_empty() {
                    format!(
                        "the ONNX Runtime library was not found (looked in pip's onnxruntime/capi folders and system library folders; ${LIBRARY_ENV} is not set); {HOW_TO_ENABLE}"
                    )
                } else {
                    format!(
                        "no ONNX Runtime library found loads ({}); {HOW_TO_ENABLE}",
                        tried.join("; ")
                    )
                };
                let _ = DISCOVERY_FAILED.set(message.clone());
                runtime_error(message)
            })
        }
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Opens each candidate in turn with `ort::init_from`; on the first that loads, commits this
/// process's one environment and records it. Otherwise returns what each attempt said.
fn try_candidates(candidates: &[PathBuf]) -> std::result::Result<&'static Path, Vec<String>> {
    let mut tried = Vec::new();
    for path in candidates {
        if !path.exists() {
            tried.push(format!("{}: no such file", path.display()));
            continue;
        }
        let attempt = catch_unwind(|| {
            ort::init_from(path)
                .map_err(|e| e.to_string())?
                .with_name("edgefit")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("{}: {e}", path.display()))
        });
        match attempt {
            Ok(Ok(environment)) => {
                let _ = ENVIRONMENT.set(environment);
                let _ = LIBRARY.set(path.clone());
                if let Some(p) = LIBRARY.get() {
                    return Ok(p);
                }
            }
            Ok(Err(e)) => tried.push(e),
            Err(_) => tried.push(format!("{}: loading it crashed", path.display())),
        }
    }
    Err(tried)
}

/// Whether `name` is an ONNX Runtime library file name (`libonnxruntime.so`,
/// `libonnxruntime.so.1.32.0`, `libonnxruntime.1.32.0.dylib`, `onnxruntime.dll`), not one of
/// its provider plug-ins.
fn is_library_name(name: &str) -> bool {
    if name.eq_ignore_ascii_case("onnxruntime.dll") {
        return true;
    }
    let Some(rest) = name.strip_prefix("libonnxruntime") else {
        return false;
    };
    if rest.starts_with('_') {
        return false;
    }
    let numeric = |s: &str| {
        s.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(version) = rest.strip_prefix(".so") {
        return version.is_empty() || version.strip_prefix('.').is_some_and(numeric);
    }
    if let Some(version) = rest.strip_suffix(".dylib") {
        return version.is_empty() || version.strip_prefix('.').is_some_and(numeric);
    }
    false
}

/// The version numbers in a library file name, for ordering (newest first).
fn version_key(path: &Path) -> Vec<u64> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(|n| {
            n.split(|c: char| !c.is_ascii_digit())
                .filter(|p| !p.is_empty())
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// ONNX Runtime library files directly in `dir`, newest version first.
fn libraries_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_library_name))
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort_by(|a, b| version_key(b).cmp(&version_key(a)).then(a.cmp(b)));
    found
}

/// Expands `*` in the components of `pattern` (no other wildcards), sorted.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::new()];
    for component in Path::new(pattern).components() {
        let part = component.as_os_str().to_string_lossy().into_owned();
        if let Some((prefix, suffix)) = part.split_once('*') {
            let mut next = Vec::new();
            for base in &paths {
                let Ok(entries) = std::fs::read_dir(if base.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    base.as_path()
                }) else {
                    continue;
                };
                let mut names: Vec<String> = entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter(|n| {
                        n.len() >= prefix.len() + suffix.len()
                            && n.starts_with(prefix)
                            && n.ends_with(suffix)
                    })
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| base.join(n)));
            }
            paths = next;
        } else {
            for p in &mut paths {
                p.push(&part);
            }
        }
    }
    paths.into_iter().filter(|p| p.exists()).collect()
}

/// Library files in the well-known places, in the order they are tried.
fn well_known_libraries() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut folders: Vec<String> = Vec::new();
    let capi = "site-packages/onnxruntime/capi";
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = env_path(var) {
            folders.push(format!("{}/lib/python3*/{capi}", prefix.display()));
        }
    }
    if let Some(home) = &home {
        let home = home.display();
        folders.push(format!("{home}/.local/lib/python3*/{capi}"));
        folders.push(format!("{home}/.pyenv/versions/*/lib/python3*/{capi}"));
        folders.push(format!("{home}/miniconda3/lib/python3*/{capi}"));
        folders.push(format!("{home}/anaconda3/lib/python3*/{capi}"));
    }
    if let Some(root) = env_path("PYENV_ROOT") {
        folders.push(format!("{}/versions/*/lib/python3*/{capi}", root.display()));
    }
    for prefix in ["/usr/local/lib", "/usr/lib", "/opt/conda/lib"] {
        folders.push(format!("{prefix}/python3*/{capi}"));
        folders.push(format!("{prefix}/python3*/dist-packages/onnxruntime/capi"));
    }
    folders.push("/usr/lib/python3/dist-packages/onnxruntime/capi".to_owned());
    for dir in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/onnxruntime/lib",
        "/usr/local/onnxruntime/lib",
        "/opt/homebrew/lib",
    ] {
        folders.push(dir.to_owned());
    }
    let mut libraries = Vec::new();
    for pattern in folders {
        for dir in expand(&pattern) {
            for lib in libraries_in(&dir) {
                if !libraries.contains(&lib) {
                    libraries.push(lib);
                }
            }
        }
    }
    libraries
}

/// The `onnxruntime/capi` folder of the `onnxruntime` that `python3` imports, if any.
fn python_capi_dir() -> Option<PathBuf> {
    let python = std::env::var("EDGEFIT_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(python)
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    let dir = String::from_utf8(output.stdout).ok()?;
    let dir = PathBuf::from(dir.trim()).join("capi");
    dir.is_dir().then_some(dir)
}

/// Element type of the model input, as fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputType {
    F32,
    F64,
    /// Whole numbers (token ids, indices) in the f32 samples.
    I64,
    I32,
    U8,
    I8,
    Bool,
}

/// A model ready to run in onnxruntime.
pub struct OrtModel {
    /// The model as given to onnxruntime (with any extra outputs added).
    bytes: Arc<[u8]>,
    model_dir: Option<PathBuf>,
    /// Sessions not in use; a thread that finds none builds another.
    idle: Mutex<Vec<Session>>,
    input_name: String,
    input_type: InputType,
    /// Shape of the input tensor, batch included.
    pub input_shape: Vec<usize>,
    /// Names of the outputs, in order: the model's first output, then the extra tensors.
    pub output_names: Vec<String>,
    /// Intra-op threads of each session.
    pub threads: usize,
    /// Inputs held at a value, fed as inputs on every run (not baked into the graph:
    /// onnxruntime 1.32 crashes while constant-folding some `If` models, e.g. silero-vad,
    /// whose state inputs were made initializers).
    fixed: Vec<(FixedInput, InputType)>,
}

impl OrtModel {
    /// Builds `model` for one input of `input_shape` (fed as f32, or f64 for a double input),
    /// with the model's first output plus the intermediate tensors named in `extra_outputs`,
    /// each inference on `threads` intra-op threads. `model_dir` is where external data is
    /// read from.
    pub fn build(
        model: &ModelProto,
        model_dir: Option<&Path>,
        input_shape: &[usize],
        extra_outputs: &[String],
        threads: usize,
        fixed_inputs: &[FixedInput],
    ) -> Result<Self> {
        load(None)?;
        let threads = threads.max(1);
        // Constants above a quarter of the memory budget (onnxruntime folds them at load) are
        // refused before the session exists; the rest of onnxruntime validates itself.
        let size = Message::compute_size(model);
        let budget = crate::guard::memory_budget_bytes(size) / 4;
        if let Some(h) = crate::guard::hazards(model, budget)
            .into_iter()
            .find(|h| h.message.contains("memory budget"))
        {
            return Err(runtime_error(format!(
                "the model would exhaust memory ({h}); --memory-budget raises the limit"
            )));
        }
        let view = crate::graph::GraphView::new(model);
        for f in fixed_inputs {
            if !view.inputs.iter().any(|i| i.name == f.name) {
                return Err(runtime_error(format!(
                    "the model has no input `{}`",
                    f.name
                )));
            }
        }
        let inputs: Vec<String> = view
            .inputs
            .iter()
            .filter(|i| !fixed_inputs.iter().any(|f| f.name == i.name))
            .map(|i| i.name.clone())
            .collect();
        if inputs.len() != 1 {
            return Err(runtime_error(super::one_input_only(&view)));
        }
        let first_output = model
            .graph
            .as_ref()
            .and_then(|g| g.output.first())
            .map(|o| o.name().to_owned())
            .ok_or_else(|| runtime_error("the model has no output"))?;
        let bytes = if extra_outputs.is_empty() {
            model.write_to_bytes()
        } else {
            with_outputs(model, extra_outputs).write_to_bytes()
        }
        .map_err(runtime_error)?;
        let mut output_names = vec![first_output];
        output_names.extend(extra_outputs.iter().cloned());
        let mut built = Self {
            bytes: bytes.into(),
            model_dir: model_dir.map(Path::to_path_buf),
            idle: Mutex::new(Vec::new()),
            input_name: inputs[0].clone(),
            input_type: InputType::F32,
            input_shape: input_shape.to_vec(),
            output_names,
            threads,
            fixed: Vec::new(),
        };
        let session = built.new_session()?;
        let type_of = |name: &str| -> Result<InputType> {
            let input = session
                .inputs()
                .iter()
                .find(|i| i.name() == name)
                .ok_or_else(|| runtime_error(format!("the session has no input `{name}`")))?;
            Ok(match input.dtype().tensor_type() {
                Some(TensorElementType::Float32) => InputType::F32,
                Some(TensorElementType::Float64) => InputType::F64,
                Some(TensorElementType::Int64) => InputType::I64,
                Some(TensorElementType::Int32) => InputType::I32,
                Some(TensorElementType::Uint8) => InputType::U8,
                Some(TensorElementType::Int8) => InputType::I8,
                Some(TensorElementType::Bool) => InputType::Bool,
                other => {
                    return Err(runtime_error(format!(
                        "input `{name}` is {}; data can feed float32, float64, int64, int32, uint8, int8 and bool inputs",
                        other.map_or_else(|| "not a tensor".to_owned(), |t| format!("{t:?}"))
                    )));
                }
            })
        };
        built.input_type = type_of(&built.input_name)?;
        built.fixed = fixed_inputs
            .iter()
            .map(|f| Ok((f.clone(), type_of(&f.name)?)))
            .collect::<Result<_>>()?;
        for name in &built.output_names {
            if !session.outputs().iter().any(|o| o.name() == name) {
                return Err(runtime_error(format!("no output called `{name}`")));
            }
        }
        built
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
        Ok(built)
    }

    fn new_session(&self) -> Result<Session> {
        let environment = ENVIRONMENT
            .get()
            .ok_or_else(|| runtime_error("the ONNX Runtime library is not loaded"))?;
        let build = || -> Result<Session> {
            let mut builder = Session::builder(environment)
                .map_err(|e| ort_error("creating a session", e))?
                .with_log_level(LogLevel::Fatal)
                .map_err(|e| ort_error("setting the log level", e))?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| ort_error("setting the optimization level", e))?
                .with_intra_threads(self.threads)
                .map_err(|e| ort_error("setting the thread count", e))?
                .with_inter_threads(1)
                .map_err(|e| ort_error("setting the thread count", e))?;
            if let Some(dir) = &self.model_dir {
                builder = builder
                    .with_config_entry(EXTERNAL_DATA_FOLDER, dir.to_string_lossy())
                    .map_err(|e| ort_error("setting the external data folder", e))?;
            }
            builder
                .commit_from_memory(&self.bytes)
                .map_err(|e| ort_error("loading the model", e))
        };
        catch_unwind(AssertUnwindSafe(build))
            .unwrap_or_else(|_| Err(runtime_error("onnxruntime crashed while loading the model")))
    }

    /// Runs one sample (its values in C order, `input_shape` elements) and returns every
    /// selected output flattened, as f32.
    pub fn run(&self, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut session = match idle {
            Some(s) => s,
            None => self.new_session()?,
        };
        let result = catch_unwind(AssertUnwindSafe(|| self.run_in(&mut session, sample)))
            .unwrap_or_else(|_| Err(runtime_error("onnxruntime crashed while running")));
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
        result
    }

    fn run_in(&self, session: &mut Session, sample: &[f32]) -> Result<Vec<Vec<f32>>> {
        let expected: usize = self.input_shape.iter().product();
        if sample.len() != expected {
            return Err(runtime_error(format!(
                "a sample has {} values but the input {:?} takes {expected}",
                sample.len(),
                self.input_shape
            )));
        }
        let shaping = |e| ort_error("shaping the input", e);
        let mut inputs: Vec<(
            std::borrow::Cow<'_, str>,
            ort::session::SessionInputValue<'_>,
        )> = Vec::with_capacity(1 + self.fixed.len());
        let main = match self.input_type {
            InputType::F32 => TensorRef::from_array_view((self.input_shape.clone(), sample))
                .map_err(shaping)?
                .into(),
            other => tensor_of(
                other,
                &self.input_shape,
                sample.iter().map(|&v| f64::from(v)),
            )
            .map_err(shaping)?,
        };
        inputs.push((self.input_name.as_str().into(), main));
        for (f, ty) in &self.fixed {
            let count: usize = f.shape.iter().product();
            let value = tensor_of(*ty, &f.shape, std::iter::repeat_n(f.value, count))
                .map_err(|e| ort_error(&format!("making input `{}`", f.name), e))?;
            inputs.push((f.name.as_str().into(), value));
        }
        // One inference may not run forever: a Loop whose condition never turns false is a
        // valid ONNX model that would (found by the fuzzer). A watchdog terminates runs past
        // the deadline (--run-timeout).
        let options =
            Arc::new(ort::session::RunOptions::new().map_err(|e| ort_error("preparing a run", e))?);
        let watched = deadline::watch(options.clone());
        let outputs = session.run_with_options(inputs, &options);
        let timed_out = deadline::release(watched);
        let outputs = outputs.map_err(|e| {
            if timed_out {
                runtime_error(format!(
                    "one inference ran past the {} s deadline and was stopped (--run-timeout)",
                    crate::guard::run_timeout().as_secs()
                ))
            } else {
                ort_error("running", e)
            }
        })?;
        self.output_names
            .iter()
            .map(|name| {
                let value = outputs
                    .get(name.as_str())
                    .ok_or_else(|| runtime_error(format!("no output called `{name}`")))?;
                to_f32(name, value)
            })
            .collect()
    }
}

/// Deadlines of onnxruntime runs: one watchdog thread terminates the runs past theirs.
mod deadline {
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
                        let deadline = crate::guard::run_timeout();
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
}

/// A tensor of `ty` holding `values` (whole numbers for integer types: `as` saturates).
fn tensor_of(
    ty: InputType,
    shape: &[usize],
    values: impl Iterator<Item = f64>,
) -> ort::Result<ort::session::SessionInputValue<'static>> {
    let shape = shape.to_vec();
    Ok(match ty {
        InputType::F32 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as f32).collect::<Vec<_>>()))?
                .into()
        }
        InputType::F64 => {
            ort::value::Tensor::from_array((shape, values.collect::<Vec<_>>()))?.into()
        }
        InputType::I64 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as i64).collect::<Vec<_>>()))?
                .into()
        }
        InputType::I32 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as i32).collect::<Vec<_>>()))?
                .into()
        }
        InputType::U8 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as u8).collect::<Vec<_>>()))?
                .into()
        }
        InputType::I8 => {
            ort::value::Tensor::from_array((shape, values.map(|v| v as i8).collect::<Vec<_>>()))?
                .into()
        }
        InputType::Bool => {
            ort::value::Tensor::from_array((shape, values.map(|v| v != 0.0).collect::<Vec<_>>()))?
                .into()
        }
    })
}

/// A sequence of maps (a scikit-learn classifier's ZipMap probabilities): each map's values
/// in key order, maps one after the other.
fn sequence_of_maps(name: &str, value: &DynValue) -> Result<Vec<f32>> {
    let read = |e: ort::Error| ort_error(&format!("reading output `{name}`"), e);
    let maps = value
        .view()
        .downcast::<DynSequenceValueType>()
        .map_err(read)?
        .try_extract_sequence::<DynMapValueType>()
        .map_err(read)?;
    let mut values = Vec::new();
    for map in &maps {
        match map.dtype() {
            ValueType::Map {
                key: TensorElementType::Int64,
                ..
            } => {
                let mut pairs = map.try_extract_key_values::<i64, f32>().map_err(read)?;
                pairs.sort_by_key(|(k, _)| *k);
                values.extend(pairs.into_iter().map(|(_, v)| v));
            }
            ValueType::Map {
                key: TensorElementType::String,
                ..
            } => {
                let mut pairs = map.try_extract_key_values::<String, f32>().map_err(read)?;
                pairs.sort_by(|a, b| a.0.cmp(&b.0));
                values.extend(pairs.into_iter().map(|(_, v)| v));
            }
            other => {
                return Err(runtime_error(format!(
                    "output `{name}` holds {other}; only maps of int64 or string keys to float are read"
                )));
            }
        }
    }
    Ok(values)
}

/// An output tensor's values as f32 (a sequence of maps: see [`sequence_of_maps`]).
fn to_f32(name: &str, value: &DynValue) -> Result<Vec<f32>> {
    if let ValueType::Sequence(inner) = value.dtype() {
        if matches!(**inner, ValueType::Map { .. }) {
            return sequence_of_maps(name, value);
        }
        // A sequence of tensors (SplitToSequence, a Loop's scan outputs): their values one
        // after the other.
        let read = |e: ort::Error| ort_error(&format!("reading output `{name}`"), e);
        let tensors = value
            .view()
            .downcast::<DynSequenceValueType>()
            .map_err(read)?
            .try_extract_sequence::<ort::value::DynTensorValueType>()
            .map_err(read)?;
        let mut values = Vec::new();
        for t in tensors {
            values.extend(to_f32(name, &t.into_dyn())?);
        }
        return Ok(values);
    }
    let read = |e| ort_error(&format!("reading output `{name}`"), e);
    let ty = value.dtype().tensor_type();
    Ok(match ty {
        Some(TensorElementType::Float32) => {
            value.try_extract_tensor::<f32>().map_err(read)?.1.to_vec()
        }
        Some(TensorElementType::Float64) => value
            .try_extract_tensor::<f64>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Some(TensorElementType::Int64) => value
            .try_extract_tensor::<i64>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Some(TensorElementType::Int32) => value
            .try_extract_tensor::<i32>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| v as f32)
            .collect(),
        Some(TensorElementType::Int8) => value
            .try_extract_tensor::<i8>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| f32::from(v))
            .collect(),
        Some(TensorElementType::Uint8) => value
            .try_extract_tensor::<u8>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| f32::from(v))
            .collect(),
        Some(TensorElementType::Bool) => value
            .try_extract_tensor::<bool>()
            .map_err(read)?
            .1
            .iter()
            .map(|&v| if v { 1.0 } else { 0.0 })
            .collect(),
        other => {
            return Err(runtime_error(format!(
                "output `{name}` is {}; only numeric tensors are read",
                other.map_or_else(|| "not a tensor".to_owned(), |t| format!("{t:?}"))
            )));
        }
    })
}

/// A copy of `model` whose graph also outputs the tensors named in `extra` (onnxruntime only
/// returns graph outputs).
fn with_outputs(model: &ModelProto, extra: &[String]) -> ModelProto {
    let mut model = model.clone();
    if let Some(graph) = model.graph.as_mut() {
        for name in extra {
            if !graph.output.iter().any(|o| o.name() == name.as_str()) {
                let mut info = ValueInfoProto::new();
                info.set_name(name.clone());
                graph.output.push(info);
            }
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        for ok in [
            "libonnxruntime.so",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime.so.1",
            "libonnxruntime.dylib",
            "libonnxruntime.1.20.1.dylib",
            "onnxruntime.dll",
        ] {
            assert!(is_library_name(ok), "{ok}");
        }
        for no in [
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.32.0.dbg",
            "libonnxruntime.so.x",
            "onnxruntime.py",
            "libonnxruntime.a",
        ] {
            assert!(!is_library_name(no), "{no}");
        }
    }

    #[test]
    fn newest_version_first() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.32.0",
            "libonnxruntime_providers_shared.so",
            "libonnxruntime.so.1.20.1",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap_or_else(|e| panic!("{e}"));
        }
        let names: Vec<String> = libraries_in(dir.path())
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        assert_eq!(
            names,
            [
                "libonnxruntime.so.1.32.0",
                "libonnxruntime.so.1.20.1",
                "libonnxruntime.so.1.9.0"
            ]
        );
        let pattern = format!("{}/libonnxruntime.so.1.*", dir.path().display());
        assert_eq!(expand(&pattern).len(), 3);
    }
}
