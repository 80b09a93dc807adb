//! `edgefit split`: the edge–cloud split of a model — every cut with what crosses it
//! (`--list`), or the two halves at a chosen cut, written and verified.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgefit_engine::LoadedModel;
use edgefit_engine::deploy::split::{
    Cut, SplitModels, SplitVerification, Transfer, VerifyOptions, prefix_cuts, split_model,
    verify_split, write_split,
};
use edgefit_engine::measure::runtime::RuntimeKind;
use edgefit_engine::model::write::OutputSet;
use edgefit_engine::pipeline::{
    GENERATED_SAMPLES, merge_input_settings, parse_input_shape, parse_input_value, resolve_inputs,
};
use serde::Serialize;

use super::args::DataArgs;
use super::{interruptible, print_json, progress_bar, sink};
use crate::exit::Failure;
use crate::format::{bytes, fit, terminal_safe, thousands};

/// `edgefit split`.
#[derive(Debug, clap::Args)]
pub struct SplitArgs {
    /// The ONNX model to split.
    pub model: PathBuf,
    /// List every cut of the execution order with the tensors that cross it, instead of
    /// splitting.
    #[arg(long, conflicts_with_all = ["at", "head", "tail"])]
    pub list: bool,
    /// The tensors sent from the device to the server (see --list), comma-separated.
    #[arg(long, value_name = "TENSOR[,TENSOR..]", value_delimiter = ',',
          required_unless_present_any = ["list", "device"], requires_all = ["head", "tail"],
          conflicts_with = "device")]
    pub at: Vec<String>,
    /// Where to write the device half (everything the sent tensors depend on).
    #[arg(long, value_name = "HEAD.onnx")]
    pub head: Option<PathBuf>,
    /// Where to write the server half (the rest; its inputs are the sent tensors).
    #[arg(long, value_name = "TAIL.onnx")]
    pub tail: Option<PathBuf>,
    /// The format the sent tensors travel in for the verification: fp32 (exact), fp16, or
    /// int8 (per tensor, asymmetric over each sample's range).
    #[arg(long, default_value = "fp32", value_parser = ["fp32", "fp16", "int8"])]
    pub transfer: String,
    /// Runtime(s) the split is verified in (`both`: onnxruntime when it is installed).
    #[arg(long, default_value = "both", value_parser = ["tract", "onnxruntime", "both"])]
    pub runtime: String,
    /// Print one JSON object (`"schema": "edgefit.split/1"`, or `edgefit.split-list/1`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub data: DataArgs,
    /// Concrete shape for a model input with symbolic dims, batch included:
    /// NAME=1,3,224,224 (repeatable). With --list: the sizes are computed at that shape.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shape: Vec<String>,
    /// Hold a model input at this value for every sample: NAME=0 (repeatable).
    #[arg(long = "input-value", value_name = "NAME=V")]
    pub input_value: Vec<String>,
    /// List the cuts with their cost on this device (see `edgefit devices`): device time up
    /// to the cut, transfer and server time after it, total latency and device energy (all
    /// estimates), and the best cut.
    #[arg(long, value_name = "ID")]
    pub device: Option<String>,
    /// The server of the split (a device profile id).
    #[arg(
        long,
        value_name = "ID",
        default_value = "x86-server-no-vnni",
        requires = "device"
    )]
    pub server: String,
    /// Uplink bandwidth from the device to the server, Mbit/s.
    #[arg(long, value_name = "MBPS", default_value_t = 20.0, requires = "device")]
    pub bandwidth_mbps: f64,
    /// Round-trip time between them, ms.
    #[arg(long, value_name = "MS", default_value_t = 30.0, requires = "device")]
    pub rtt_ms: f64,
    /// A device profile file of your own (repeatable).
    #[arg(long = "device-file", value_name = "PATH")]
    pub device_files: Vec<PathBuf>,
    /// The ONNX Runtime shared library to load (a file, or a folder holding
    /// libonnxruntime.so*). Default: $EDGEFIT_ONNXRUNTIME_LIB, $ORT_DYLIB_PATH, a
    /// pip-installed onnxruntime wheel, system library folders.
    #[arg(long, value_name = "PATH")]
    pub onnxruntime_lib: Option<PathBuf>,
}

/// Samples verified when `--samples` is not given (the server half is rebuilt per sample
/// when it has several inputs).
const DEFAULT_SAMPLES: usize = GENERATED_SAMPLES;

/// Runs `edgefit split`.
pub fn split_cmd(args: &SplitArgs) -> Result<()> {
    let transfer = Transfer::parse(&args.transfer).with_context(|| {
        format!(
            "--transfer takes fp32, fp16 or int8, not `{}`",
            args.transfer
        )
    })?;
    let runtimes: Vec<RuntimeKind> = match args.runtime.as_str() {
        "tract" => vec![RuntimeKind::Tract],
        "onnxruntime" => vec![RuntimeKind::OnnxRuntime],
        _ => RuntimeKind::ALL.to_vec(),
    };
    let mut settings = Vec::new();
    for text in &args.input_shape {
        settings.push(parse_input_shape(text)?);
    }
    for text in &args.input_value {
        settings.push(parse_input_value(text)?);
    }
    let settings = merge_input_settings(settings)?;
    let list = args.list || args.device.is_some();
    if !list {
        let (Some(head), Some(tail)) = (&args.head, &args.tail) else {
            return Err(Failure::Usage("--at needs --head and --tail".to_owned()).into());
        };
        // Outputs are checked before any work: never the model, never each other.
        OutputSet::new(&[head.clone(), tail.clone()], &[args.model.as_path()])?;
        // onnxruntime asked for by name must load; `both` runs without it (reported).
        let loaded =
            edgefit_engine::measure::runtime::onnxruntime::load(args.onnxruntime_lib.as_deref());
        if args.runtime == "onnxruntime" {
            loaded?;
        }
    }
    let bar = progress_bar();
    let cancel = interruptible();
    let mut model = edgefit_engine::load_model(&args.model, &sink(&bar), &cancel)
        .with_context(|| format!("loading {}", args.model.display()))?;
    if list {
        if !settings.is_empty() {
            let resolved = resolve_inputs(&model, None, &settings)?;
            model = model.with_input_shape(&resolved.shape);
        }
        bar.finish_and_clear();
        let cuts = prefix_cuts(&model);
        let mut rows = cut_rows(&model, &cuts);
        let link = args
            .device
            .as_deref()
            .map(|device| estimate_cuts(args, &model, &cuts, device, transfer, &mut rows))
            .transpose()?;
        if args.json {
            return print_json(
                "split-list",
                &ListJson {
                    model: model.path.display().to_string(),
                    nodes: cuts.len().saturating_sub(1),
                    link,
                    best_cut: best_index(&rows),
                    cuts: &rows,
                },
            );
        }
        print!("{}", list_text(&model, &rows));
        return Ok(());
    }
    let (Some(head_path), Some(tail_path)) = (&args.head, &args.tail) else {
        bail!("--at needs --head and --tail");
    };
    let split = split_model(&model, &args.at)?;
    let mut data = args
        .data
        .load(&model, &settings)
        .context("preparing the verification inputs")?;
    if args.data.samples.is_none() {
        data.data = data.data.first(DEFAULT_SAMPLES);
    }
    let resolved = resolve_inputs(&model, Some(&data.data), &data.settings)?;
    let verification = verify_split(
        &model,
        &split,
        &VerifyOptions {
            data: &data.data,
            input: &resolved.input,
            input_shape: &resolved.shape,
            fixed_inputs: &resolved.fixed,
            runtimes: &runtimes,
            transfer,
        },
        &sink(&bar),
        &cancel,
    )
    .context("verifying the split")?;
    write_split(&model, &split, head_path, tail_path).context("writing the halves")?;
    bar.finish_and_clear();
    let report = SplitJson {
        model: model.path.display().to_string(),
        head: half_json(head_path, &split, true),
        tail: half_json(tail_path, &split, false),
        sent: &split.sent,
        forwarded_inputs: &split.forwarded_inputs,
        device_outputs: &split.device_outputs,
        server_outputs: &split.server_outputs,
        verification: &verification,
    };
    if args.json {
        print_json("split", &report)?;
    } else {
        print!("{}", split_text(&report));
    }
    if !verification.passed {
        let failed: Vec<String> = verification
            .runtimes
            .iter()
            .filter(|r| r.ran && !r.passed)
            .map(|r| format!("{}: {}", r.runtime, r.note.clone().unwrap_or_default()))
            .collect();
        let reason = if failed.is_empty() {
            "no runtime could run the model".to_owned()
        } else {
            failed.join("; ")
        };
        return Err(Failure::Verification(format!(
            "head → tail does not reproduce the model ({reason}); the halves were written"
        ))
        .into());
    }
    Ok(())
}

/// One tensor of a cut, as listed.
#[derive(Clone, Debug, Serialize)]
pub struct CutTensorRow {
    pub name: String,
    pub dtype: Option<String>,
    /// `[1, 16, 14, 14]`, `?` when unknown.
    pub shape: String,
    pub elements: Option<u64>,
    /// Bytes sent as float32 (other types as they are).
    pub bytes_fp32: Option<u64>,
    /// A graph input the device forwards.
    pub graph_input: bool,
}

/// One cut, as `--list` prints it (text and JSON). Extended by the deployment estimates.
#[derive(Clone, Debug, Serialize)]
pub struct CutRow {
    /// Index of the cut: the number of nodes on the device.
    pub index: usize,
    /// The last node on the device (`None`: cloud-only).
    pub after_node: Option<String>,
    pub after_op: Option<String>,
    /// The tensors sent.
    pub tensors: Vec<CutTensorRow>,
    /// Elements sent per inference, when every size is known.
    pub elements: Option<u64>,
    /// Bytes sent per inference as float32 / float16 / int8.
    pub bytes_fp32: Option<u64>,
    pub bytes_fp16: Option<u64>,
    pub bytes_int8: Option<u64>,
    /// Graph outputs computed on the device.
    pub device_outputs: Vec<String>,
    /// With --device: the cut's device, transfer and server times (estimates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimate: Option<edgefit_engine::deploy::split_cost::CutCost>,
}

/// The link of `--list --device`, as the JSON gives it.
#[derive(Serialize)]
struct LinkJson {
    device: String,
    server: String,
    uplink_mbps: f64,
    rtt_ms: f64,
    transfer: Transfer,
    estimates_note: &'static str,
}

/// Adds the cost of every cut between `device` and `--server` to `rows`.
fn estimate_cuts(
    args: &SplitArgs,
    model: &LoadedModel,
    cuts: &[Cut],
    device: &str,
    transfer: Transfer,
    rows: &mut [CutRow],
) -> Result<LinkJson> {
    use edgefit_engine::deploy::estimate::estimate;
    use edgefit_engine::deploy::graph::DeviceGraph;
    use edgefit_engine::deploy::partition::partition;
    use edgefit_engine::deploy::split_cost::{Link, cut_costs};
    let link_ok = args.bandwidth_mbps.is_finite()
        && args.bandwidth_mbps > 0.0
        && args.rtt_ms.is_finite()
        && args.rtt_ms >= 0.0;
    if !link_ok {
        return Err(Failure::Usage(
            "--bandwidth-mbps must be positive and --rtt-ms at least 0".to_owned(),
        )
        .into());
    }
    let catalog = super::deploy::catalog(&args.device_files)?;
    let on = catalog.require(device)?;
    let server = catalog.require(&args.server)?;
    let graph = DeviceGraph::original(model);
    let on_device = estimate(&graph, on, &partition(&graph, on));
    let on_server = estimate(&graph, server, &partition(&graph, server));
    let link = Link {
        uplink_mbps: args.bandwidth_mbps,
        rtt_ms: args.rtt_ms,
        transfer,
    };
    for (row, cost) in rows
        .iter_mut()
        .zip(cut_costs(cuts, on, &on_device, &on_server, link))
    {
        row.estimate = Some(cost);
    }
    Ok(LinkJson {
        device: on.id.clone(),
        server: server.id.clone(),
        uplink_mbps: args.bandwidth_mbps,
        rtt_ms: args.rtt_ms,
        transfer,
        estimates_note: "device_ms, transfer_ms, server_ms, total_ms and device_energy_mj are estimates (roofline of each profile), not measurements",
    })
}

/// The cut with the lowest estimated total, when estimated.
fn best_index(rows: &[CutRow]) -> Option<usize> {
    rows.iter()
        .filter_map(|r| r.estimate.as_ref().map(|e| (r.index, e.total_ms)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The rows of `--list` for `cuts` of `model` (the model is for columns that need more than
/// the cut: device and server estimates).
pub fn cut_rows(model: &LoadedModel, cuts: &[Cut]) -> Vec<CutRow> {
    let _ = model;
    cuts.iter()
        .map(|cut| CutRow {
            index: cut.after_nodes,
            after_node: cut.last_node.clone(),
            after_op: cut.last_op.clone(),
            tensors: cut
                .tensors
                .iter()
                .map(|t| CutTensorRow {
                    name: t.name.clone(),
                    dtype: t.dtype.map(|d| d.name()),
                    shape: edgefit_engine::model::graph::format_shape(t.shape.as_deref()),
                    elements: t.elements,
                    bytes_fp32: t.bytes(Transfer::Fp32),
                    graph_input: t.graph_input,
                })
                .collect(),
            elements: cut.elements(),
            bytes_fp32: cut.bytes(Transfer::Fp32),
            bytes_fp16: cut.bytes(Transfer::Fp16),
            bytes_int8: cut.bytes(Transfer::Int8),
            device_outputs: cut.device_outputs.iter().map(|t| t.name.clone()).collect(),
            estimate: None,
        })
        .collect()
}

#[derive(Serialize)]
struct ListJson<'a> {
    model: String,
    nodes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<LinkJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    best_cut: Option<usize>,
    cuts: &'a [CutRow],
}

fn opt_bytes(v: Option<u64>) -> String {
    v.map_or("?".to_owned(), bytes)
}

/// The readable table of `--list`.
pub fn list_text(model: &LoadedModel, rows: &[CutRow]) -> String {
    let mut out = String::new();
    let nodes = rows.len().saturating_sub(1);
    let _ = writeln!(
        out,
        "{}: {nodes} nodes, {} cuts (tensors sent from the device to the server per inference)",
        terminal_safe(&model.path.display().to_string()),
        rows.len()
    );
    let label = |r: &CutRow| match (&r.after_node, r.index) {
        (None, _) => "(cloud only)".to_owned(),
        (Some(n), i) if i == nodes => format!("{n} (device only)"),
        (Some(n), _) => n.clone(),
    };
    let width = rows
        .iter()
        .map(|r| crate::format::display_width(&terminal_safe(&label(r))))
        .max()
        .unwrap_or(10)
        .clamp(14, 40);
    let estimated = rows.iter().any(|r| r.estimate.is_some());
    let best = best_index(rows);
    let _ = writeln!(
        out,
        "{:>5}  {:<width$}  {:<18} {:>5} {:>12} {:>11}  {}tensors (--at)",
        "cut",
        "after node",
        "op",
        "sent",
        "elements",
        "fp32",
        if estimated {
            format!(
                "{:>10} {:>10} {:>10} {:>10} {:>10}  ",
                "device ms", "send ms", "server ms", "total ms", "device mJ"
            )
        } else {
            String::new()
        }
    );
    for r in rows {
        let tensors: Vec<String> = r.tensors.iter().map(|t| terminal_safe(&t.name)).collect();
        let tensors = if tensors.is_empty() {
            format!(
                "— (outputs on the device: {})",
                terminal_safe(&r.device_outputs.join(", "))
            )
        } else {
            tensors.join(",")
        };
        let costs = r.estimate.as_ref().map_or(String::new(), |e| {
            format!(
                "{:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}{} ",
                e.device_ms,
                e.transfer_ms,
                e.server_ms,
                e.total_ms,
                e.device_energy_mj,
                if best == Some(r.index) { "*" } else { " " }
            )
        });
        let _ = writeln!(
            out,
            "{:>5}  {}  {} {:>5} {:>12} {:>11}  {costs}{tensors}",
            r.index,
            fit(&label(r), width),
            fit(r.after_op.as_deref().unwrap_or(""), 18),
            r.tensors.len(),
            r.elements.map_or("?".to_owned(), thousands),
            opt_bytes(r.bytes_fp32),
        );
    }
    if let Some(b) = best.and_then(|b| rows.get(b)) {
        let _ = writeln!(
            out,
            "\nbest (*): cut {} ({}); times and energy are estimates from the device profiles, not measurements",
            b.index,
            label(b)
        );
    }
    if !model.shapes.complete {
        let _ = writeln!(
            out,
            "\nSome shapes are unknown (?): give a concrete input shape with --input-shape NAME=DIMS."
        );
    }
    out
}

#[derive(Serialize)]
struct HalfJson {
    path: String,
    nodes: usize,
    file_size_bytes: u64,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

fn half_json(path: &Path, split: &SplitModels, head: bool) -> HalfJson {
    let proto = if head { &split.head } else { &split.tail };
    let names = |v: &[edgefit_engine::model::proto::ValueInfoProto]| -> Vec<String> {
        v.iter().map(|i| i.name().to_owned()).collect()
    };
    let graph = proto.graph.as_ref();
    HalfJson {
        path: path.display().to_string(),
        nodes: if head {
            split.head_nodes
        } else {
            split.tail_nodes
        },
        file_size_bytes: std::fs::metadata(path).map_or(0, |m| m.len()),
        inputs: graph.map(|g| names(&g.input)).unwrap_or_default(),
        outputs: graph.map(|g| names(&g.output)).unwrap_or_default(),
    }
}

#[derive(Serialize)]
struct SplitJson<'a> {
    model: String,
    head: HalfJson,
    tail: HalfJson,
    sent: &'a [String],
    forwarded_inputs: &'a [String],
    device_outputs: &'a [String],
    server_outputs: &'a [String],
    verification: &'a SplitVerification,
}

fn split_text(r: &SplitJson<'_>) -> String {
    let mut out = String::new();
    let v = r.verification;
    let safe = |names: &[String]| terminal_safe(&names.join(", "));
    for (label, half) in [("device half", &r.head), ("server half", &r.tail)] {
        let _ = writeln!(
            out,
            "{label}  {}  {} nodes, {}; inputs {}; outputs {}",
            terminal_safe(&half.path),
            half.nodes,
            bytes(half.file_size_bytes),
            safe(&half.inputs),
            safe(&half.outputs)
        );
    }
    let _ = writeln!(
        out,
        "sent         {} per inference as {}: {}",
        opt_bytes(v.sent_bytes_per_sample),
        v.transfer,
        safe(r.sent)
    );
    if !r.forwarded_inputs.is_empty() {
        let _ = writeln!(
            out,
            "             (graph inputs the server reads are forwarded by the device: {})",
            safe(r.forwarded_inputs)
        );
    }
    let _ = writeln!(
        out,
        "\nverified on {} samples of {}{}, {} transfer:",
        v.samples,
        terminal_safe(&v.data),
        if v.generated_inputs {
            " (generated: fidelity only)"
        } else {
            ""
        },
        v.transfer
    );
    for c in &v.runtimes {
        if !c.ran {
            let _ = writeln!(
                out,
                "  {:<12} not run: {}",
                c.runtime,
                terminal_safe(c.note.as_deref().unwrap_or(""))
            );
            continue;
        }
        let sqnr = c
            .sqnr_db
            .map_or("identical".to_owned(), |d| format!("SQNR {d:.1} dB"));
        let _ = writeln!(
            out,
            "  {:<12} max abs error {:.3e}, {sqnr}  {}{}",
            c.runtime,
            c.max_abs_error,
            if c.passed { "passed" } else { "FAILED" },
            c.note
                .as_deref()
                .map_or(String::new(), |n| format!(": {}", terminal_safe(n)))
        );
    }
    out
}
