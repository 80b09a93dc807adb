//! Device profiles: what a deployment target offers (memory, throughput, power, runtime and
//! accelerator), read from JSON files. The built-in profiles live in `assets/devices/` and
//! are compiled in; a user adds their own by dropping a file of the same schema into the
//! user profile folder ([`user_profile_dir`]) or by passing a path.
//!
//! Schema (version 1), every number in the unit its name says:
//!
//! ```json
//! {
//!   "schema": 1,
//!   "id": "raspberry-pi-4",                  // lower-case, unique, used on the CLI
//!   "name": "Raspberry Pi 4 Model B",        // for people
//!   "class": "board",                        // microcontroller | board | phone | laptop | accelerator-board
//!   "cpu": { "core": "Cortex-A72", "cores": 4, "clock_mhz": 1500,
//!            "integer_target": "arm64" },    // a `Target` name: decides the int8 weight range
//!   "memory": { "ram_bytes": 4294967296, "flash_bytes": null, "storage_bytes": 32000000000,
//!               "bandwidth_gb_per_s": 4.0 },
//!   "throughput_gops": { "fp32": 24.0, "fp16": null, "int8": 48.0 },   // peak, 1 op = 1 MAC x 2
//!   "power_w": { "active": 6.4, "idle": 2.7 },
//!   "runtime": { "name": "onnxruntime 1.20 (CPU, MLAS)", "runs_onnx": true,
//!                "integer_kernels_saturate": false },
//!   "accelerator": { "name": "...", "execution_provider": "NnapiExecutionProvider",
//!                    "precisions": ["fp16", "int8"], "throughput_gops": { ... },
//!                    "power_w": 2.0, "ops": ["Conv", "Relu", ...], "ops_source": "url" },
//!   "radio": { "uplink_nj_per_byte": 100.0 },   // optional: energy of sending a byte (splits)
//!   "sources": [ { "what": "RAM, clock", "url": "https://..." } ],
//!   "notes": ["..."]
//! }
//! ```
//!
//! `flash_bytes` is where a microcontroller keeps its weights; boards and phones keep them in
//! `storage_bytes` (then the weights are loaded into RAM too, see
//! [`DeviceProfile::weights_in_ram`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compress::plan::Target;
use crate::error::{Error, Result};

/// The schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;

use super::built_in::BUILT_IN;

/// What kind of device a profile describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceClass {
    Microcontroller,
    Board,
    Phone,
    Laptop,
    AcceleratorBoard,
    /// A machine in a data centre (the far side of an edge-cloud split).
    Server,
}

/// Peak throughput per precision, in billions of operations per second (1 MAC = 2 ops);
/// `None` where the device has no fast path for that precision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throughput {
    pub fp32: Option<f64>,
    pub fp16: Option<f64>,
    pub int8: Option<f64>,
}

/// The device's CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    pub core: String,
    pub cores: u32,
    pub clock_mhz: f64,
    /// The CPU kind the integer (QDQ) export is made for: decides whether full-range int8
    /// weights compute exactly there (see [`Target`]).
    pub integer_target: Target,
}

/// Memory budgets and bandwidth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    /// RAM available to the model (activations; on devices without flash also the weights).
    pub ram_bytes: u64,
    /// On-chip flash for weights and code (microcontrollers).
    #[serde(default)]
    pub flash_bytes: Option<u64>,
    /// File storage (boards, phones, laptops).
    #[serde(default)]
    pub storage_bytes: Option<u64>,
    /// Sustained memory bandwidth, GB/s.
    pub bandwidth_gb_per_s: f64,
}

/// Power draw while running a model and at rest, watts.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Power {
    pub active: f64,
    #[serde(default)]
    pub idle: Option<f64>,
}

/// The runtime the estimates assume on the CPU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub name: String,
    /// Whether it loads ONNX files (microcontrollers run a TFLite-Micro-style interpreter).
    pub runs_onnx: bool,
    /// Whether its int8 kernels saturate with full-range weights (x86-64 without VNNI).
    pub integer_kernels_saturate: bool,
}

/// An accelerator and the execution provider that reaches it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accelerator {
    pub name: String,
    /// The onnxruntime execution provider (or delegate) that hands nodes to it.
    pub execution_provider: String,
    /// Precisions it computes: `fp32`, `fp16`, `int8`.
    pub precisions: Vec<String>,
    pub throughput_gops: Throughput,
    pub power_w: f64,
    /// ONNX op types it accepts (from the provider's published support list).
    pub ops: Vec<String>,
    /// Where `ops` comes from.
    pub ops_source: String,
}

/// The radio of a device that sends tensors to a server (edge-cloud splits).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Radio {
    /// Energy of sending one byte, nanojoules.
    pub uplink_nj_per_byte: f64,
}

/// Where a number in the profile comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    pub what: String,
    pub url: String,
}

/// One deployment target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    pub schema: u32,
    pub id: String,
    pub name: String,
    pub class: DeviceClass,
    pub cpu: Cpu,
    pub memory: Memory,
    pub throughput_gops: Throughput,
    pub power_w: Power,
    pub runtime: Runtime,
    #[serde(default)]
    pub accelerator: Option<Accelerator>,
    #[serde(default)]
    pub radio: Option<Radio>,
    pub sources: Vec<Source>,
    #[serde(default)]
    pub notes: Vec<String>,
    /// Where the profile was read from (`built-in` or a path); not part of the file.
    #[serde(skip)]
    pub origin: String,
}

impl DeviceProfile {
    /// Parses and checks one profile; `origin` names it in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self> {
        let mut profile: DeviceProfile = serde_json::from_str(text).map_err(|e| Error::Device {
            what: format!("device profile {origin}"),
            reason: e.to_string(),
        })?;
        profile.origin = origin.to_owned();
        profile.check()?;
        Ok(profile)
    }

    fn check(&self) -> Result<()> {
        let bad = |reason: String| Error::Device {
            what: format!("device profile {}", self.origin),
            reason,
        };
        if self.schema != SCHEMA_VERSION {
            return Err(bad(format!(
                "schema {} (this build reads schema {SCHEMA_VERSION})",
                self.schema
            )));
        }
        let id_ok = !self.id.is_empty()
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(bad(format!(
                "id `{}` must be lower-case letters, digits and dashes",
                self.id
            )));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if self.memory.ram_bytes == 0 || !positive(self.memory.bandwidth_gb_per_s) {
            return Err(bad("RAM and bandwidth must be positive".to_owned()));
        }
        if !positive(self.power_w.active) || self.cpu.cores == 0 {
            return Err(bad("power and cores must be positive".to_owned()));
        }
        let rates = [
            self.throughput_gops.fp32,
            self.throughput_gops.fp16,
            self.throughput_gops.int8,
        ];
        if rates.iter().flatten().any(|&v| !positive(v)) || self.throughput_gops.fp32.is_none() {
            return Err(bad(
                "throughput_gops needs a positive fp32 figure (fp16/int8 positive or null)"
                    .to_owned(),
            ));
        }
        if let Some(acc) = &self.accelerator
            && [
                acc.throughput_gops.fp32,
                acc.throughput_gops.fp16,
                acc.throughput_gops.int8,
            ]
            .iter()
            .flatten()
            .any(|&v| !positive(v))
        {
            return Err(bad("accelerator throughput must be positive".to_owned()));
        }
        Ok(())
    }

    /// Whether the weights must sit in RAM next to the activations: devices that load the
    /// model from storage (no execute-in-place flash).
    pub fn weights_in_ram(&self) -> bool {
        self.memory.flash_bytes.is_none()
    }

    /// The budget the weights are checked against: flash, else storage.
    pub fn weight_budget_bytes(&self) -> Option<u64> {
        self.memory.flash_bytes.or(self.memory.storage_bytes)
    }
}

/// The folder a user's own profiles are read from: `$EDGEFIT_DEVICES_DIR`, else
/// `$XDG_CONFIG_HOME/edgefit/devices`, else `~/.config/edgefit/devices`.
pub fn user_profile_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("EDGEFIT_DEVICES_DIR") {
        return Some(PathBuf::from(dir));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(config.join("edgefit").join("devices"))
}

/// Every profile available: the built-in ones, then the user's (a user file with a built-in
/// id replaces it). A user file that does not parse is reported in `problems`, not fatal.
#[derive(Clone, Debug, Default)]
pub struct DeviceCatalog {
    pub profiles: Vec<DeviceProfile>,
    /// User files that could not be read, with the reason.
    pub problems: Vec<String>,
}

impl DeviceCatalog {
    /// The built-in profiles and those in [`user_profile_dir`].
    pub fn load() -> Self {
        let mut catalog = Self::built_in();
        if let Some(dir) = user_profile_dir() {
            catalog.add_dir(&dir);
        }
        catalog
    }

    /// Only the profiles compiled into Edgefit.
    pub fn built_in() -> Self {
        let mut catalog = Self::default();
        for (file, text) in BUILT_IN {
            match DeviceProfile::from_json(text, &format!("built-in {file}")) {
                Ok(p) => catalog.insert(p),
                // A broken built-in profile is caught by the engine's tests; at run time it
                // is reported like a user's.
                Err(e) => catalog.problems.push(e.to_string()),
            }
        }
        catalog
    }

    /// Adds every `*.json` in `dir` (a missing folder adds nothing).
    pub fn add_dir(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        for path in paths {
            if let Err(e) = self.add_file(&path) {
                self.problems.push(e.to_string());
            }
        }
    }

    /// Adds one profile file; returns its id.
    pub fn add_file(&mut self, path: &Path) -> Result<String> {
        crate::model::guard::regular_file(path, "device profile")?;
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io("cannot read the device profile", path, e))?;
        // A profile is a few kilobytes with its op list; refuse to read a huge file.
        if meta.len() > 4 << 20 {
            return Err(Error::Device {
                what: format!("device profile {}", path.display()),
                reason: format!("{} bytes (a profile is at most 4 MiB)", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io("cannot read the device profile", path, e))?;
        let profile = DeviceProfile::from_json(&text, &path.display().to_string())?;
        let id = profile.id.clone();
        self.insert(profile);
        Ok(id)
    }

    fn insert(&mut self, profile: DeviceProfile) {
        match self.profiles.iter_mut().find(|p| p.id == profile.id) {
            Some(existing) => *existing = profile,
            None => self.profiles.push(profile),
        }
    }

    /// The profile with this id.
    pub fn get(&self, id: &str) -> Option<&DeviceProfile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// The profile with this id, or an error listing the ids there are.
    pub fn require(&self, id: &str) -> Result<&DeviceProfile> {
        self.get(id).ok_or_else(|| Error::Device {
            what: format!("device `{id}`"),
            reason: format!(
                "no such profile; known: {}",
                self.profiles
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
    }
}
