//! `edgefit bench-analysis --scaling N,N,…`: load + analysis time against graph size, to show
//! that opening a model stays linear in its node count.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use edgefit_engine::{AnalysisOptions, CancelToken, NoProgress, analyse, load_model};

use crate::format::thousands;

/// The figures of one size (medians over the runs).
struct Row {
    nodes: usize,
    file_size_bytes: u64,
    load_ms: f64,
    analysis_ms: f64,
    /// `edgefit fit --device all` on the loaded model (every built-in device, the original)
    /// plus the split's cut listing: what the Devices panel computes when the model opens.
    deploy_ms: f64,
}

impl Row {
    fn total_ms(&self) -> f64 {
        self.load_ms + self.analysis_ms
    }

    /// Microseconds per node: the figure that stays flat when the time is linear.
    fn per_node_us(&self) -> f64 {
        self.total_ms() * 1e3 / self.nodes.max(1) as f64
    }
}

/// Parses `2500,5000,10000`: node counts, each at least 1.
pub fn parse_sizes(text: &str) -> Result<Vec<usize>> {
    let sizes = text
        .split(',')
        .map(|s| {
            let s = s.trim().replace('_', "");
            match s.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("--scaling takes node counts separated by commas, e.g. 2500,5000,10000 (got `{s}`)"),
            }
        })
        .collect::<Result<Vec<usize>>>()?;
    if sizes.is_empty() {
        bail!("--scaling needs at least one node count");
    }
    Ok(sizes)
}

/// Times `load_model` and `analyse` on the synthetic residual CNN
/// (`synthetic::branchy_cnn`, the graph the studio's frame benchmark opens) at each size, and
/// prints time per node and the ratio of time per node at the largest size to the smallest
/// (≈ 1 when opening a model is linear in its size).
pub fn bench_scaling(sizes: &[usize], runs: usize, json: bool) -> Result<()> {
    let dir = super::tempfile_dir()?;
    let result = measure_all(&dir, sizes, runs.max(1));
    let _ = std::fs::remove_dir_all(&dir);
    let rows = result?;
    let smallest = rows
        .iter()
        .min_by_key(|r| r.nodes)
        .context("no size measured")?;
    let largest = rows
        .iter()
        .max_by_key(|r| r.nodes)
        .context("no size measured")?;
    let ratio = largest.per_node_us() / smallest.per_node_us().max(f64::MIN_POSITIVE);
    let profile = if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    };
    if json {
        let sizes: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "nodes": r.nodes,
                    "file_size_bytes": r.file_size_bytes,
                    "load_ms": r.load_ms,
                    "analysis_ms": r.analysis_ms,
                    "total_ms": r.total_ms(),
                    "per_node_us": r.per_node_us(),
                    "deploy_ms": r.deploy_ms,
                })
            })
            .collect();
        let json = serde_json::json!({
            "model": "synthetic branchy_cnn",
            "profile": profile,
            "runs": runs.max(1),
            "threads": rayon::current_num_threads(),
            "sizes": sizes,
            "per_node_ratio": ratio,
        });
        super::print_json("bench-analysis-scaling", &json)?;
        return Ok(());
    }
    println!(
        "load + analysis of the synthetic residual CNN by size ({profile} profile, median of {} runs, {} threads)",
        runs.max(1),
        rayon::current_num_threads()
    );
    println!(
        "{:>8} {:>10} {:>10} {:>12} {:>10} {:>12} {:>10}",
        "nodes", "file", "load ms", "analysis ms", "total ms", "µs per node", "fit ms"
    );
    for r in &rows {
        println!(
            "{:>8} {:>10} {:>10.0} {:>12.0} {:>10.0} {:>12.1} {:>10.0}",
            thousands(r.nodes as u64),
            crate::format::bytes(r.file_size_bytes),
            r.load_ms,
            r.analysis_ms,
            r.total_ms(),
            r.per_node_us(),
            r.deploy_ms
        );
    }
    println!(
        "time per node at {} nodes / at {} nodes: {ratio:.2} (1 = linear; the node count ratio is {:.0})",
        thousands(largest.nodes as u64),
        thousands(smallest.nodes as u64),
        largest.nodes as f64 / smallest.nodes.max(1) as f64
    );
    Ok(())
}

fn measure_all(dir: &std::path::Path, sizes: &[usize], runs: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::with_capacity(sizes.len());
    for &target in sizes {
        let path = dir.join(format!("cnn-{target}.onnx"));
        let model = edgefit_engine::model::synthetic::branchy_cnn(target);
        let encoded = edgefit_engine::model::proto::Message::write_to_bytes(&model)?;
        drop(model);
        edgefit_engine::model::write::write_bytes_atomic(&path, &encoded)?;
        let mut load_times = Vec::with_capacity(runs);
        let mut analysis_times = Vec::with_capacity(runs);
        let mut deploy_times = Vec::with_capacity(runs);
        let mut nodes = 0;
        let catalog = edgefit_engine::deploy::device::DeviceCatalog::built_in();
        for _ in 0..runs {
            let cancel = CancelToken::new();
            let start = Instant::now();
            let loaded = load_model(&path, &NoProgress, &cancel)?;
            let loaded_at = Instant::now();
            let analysis = analyse(&loaded, &AnalysisOptions::default(), &NoProgress, &cancel)?;
            analysis_times.push(loaded_at.elapsed());
            load_times.push(loaded_at - start);
            let deploy_start = Instant::now();
            let graph = edgefit_engine::deploy::graph::DeviceGraph::original(&loaded);
            let _ = edgefit_engine::deploy::fit::fit_devices(
                &graph,
                &catalog.profiles,
                edgefit_engine::deploy::fit::FitTargets::default(),
            );
            let _ = edgefit_engine::deploy::split::prefix_cuts(&loaded);
            deploy_times.push(deploy_start.elapsed());
            nodes = analysis.nodes;
        }
        let _ = std::fs::remove_file(&path);
        rows.push(Row {
            nodes,
            file_size_bytes: encoded.len() as u64,
            load_ms: median_ms(&mut load_times),
            analysis_ms: median_ms(&mut analysis_times),
            deploy_ms: median_ms(&mut deploy_times),
        });
    }
    Ok(rows)
}

fn median_ms(times: &mut [Duration]) -> f64 {
    times.sort();
    times
        .get(times.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}
