#!/usr/bin/env python3
"""edgefit's int8/4-bit exports vs onnxruntime's own static quantization, measured in onnxruntime.

    python3 bench/compare_ort_quantization.py [--runs 200] [--warmup 20] [--keep DIR]

On sample-models/mnist-cnn:

* float        the original model.onnx
* ORT int8     onnxruntime.quantization.quantize_static: QDQ format, per_channel=True,
               weights QInt8 symmetric (WeightSymmetric=True), activations QUInt8 asymmetric
               (ActivationSymmetric=False), reduce_range=False, CalibrationMethod.MinMax,
               default op_types_to_quantize (every op onnxruntime knows how to quantize),
               calibrated with a CalibrationDataReader over calib_inputs.npy (the 300 samples
               edgefit calibrates on), one sample per batch.
               Two rows: on model.onnx as it is, and on the output of
               onnxruntime.quantization.quant_pre_process (onnxruntime's recommended
               pre-processing: shape inference + basic graph optimizations, which fold each
               BatchNormalization into its Conv).
* edgefit      `edgefit optimize model.onnx --out X.onnx --runs 0 --json` with
               --format qdq-int8 --bits 8 --clipping minmax (its defaults: weights int8
               symmetric per output channel, activations uint8 asymmetric, min/max ranges from
               calib_inputs.npy), --format weights-int8 with --bits 8, with --bits 4
               --clipping minmax, --bits 4 --clipping mse (weight error) and --bits 4
               --clipping output-mse (layer output error on calib_inputs.npy), and
               --prune 0.5 + qdq-int8: plain magnitude pruning, with --reconstruct
               --reconstruct-mask magnitude (kept weights re-solved on calib_inputs.npy to
               reproduce the original layer outputs, magnitude mask), and with --reconstruct
               (its default OBS/OBC mask selection), plus that last one as fp32.

Every file is then run in onnxruntime (CPUExecutionProvider, ORT_ENABLE_ALL, 1 intra-op thread,
batch 1): top-1 on the 1000 test samples, top-1 agreement with the float model, the SQNR of the
logits against the float model's (10·log10(Σ float² / Σ (q − float)²) over all samples and
classes; a finer measure than top-1, where 1 sample = 0.1 pp), file size, and
single-sample latency: `--warmup` untimed runs per model, then `--runs` timed runs per model
taken in 10 interleaved rounds (so background load hits every model alike); median and p90.
"weight sparsity" is the fraction of exactly-zero values over the Conv/Gemm weights as stored (the int8
codes of QDQ/weights-int8 files, where small weights can also round to 0). "QDQ'd activations" counts the activation tensors given a QuantizeLinear (weights excluded) and
lists the op types that read a dequantized activation.

Prints one Markdown table. The edgefit binary is $EDGEFIT_BIN (default target/debug/edgefit).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "sample-models" / "mnist-cnn"


class NpyReader(CalibrationDataReader):
    """Feeds calib_inputs.npy one sample at a time."""

    def __init__(self, path: Path, input_name: str, shape: list[int]):
        self.data = np.load(path).astype(np.float32)
        self.name, self.shape, self.i = input_name, shape, 0

    def get_next(self):
        if self.i >= len(self.data):
            return None
        x = self.data[self.i].reshape(self.shape)
        self.i += 1
        return {self.name: x}

    def rewind(self):
        self.i = 0


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_quantize(src: Path, dst: Path, preprocess: bool, workdir: Path) -> None:
    if preprocess:
        pre = workdir / "model.preprocessed.onnx"
        quant_pre_process(str(src), str(pre))
        src = pre
    m = onnx.load(str(src))
    inp = m.graph.input[0]
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    quantize_static(
        str(src),
        str(dst),
        NpyReader(MODEL_DIR / "calib_inputs.npy", inp.name, shape),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


def edgefit(binary: Path, dst: Path, flags: list[str]) -> dict:
    cmd = [str(binary), "optimize", str(MODEL_DIR / "model.onnx"), "--out", str(dst),
           "--runs", "0", "--json", *flags]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


def qdq_summary(path: Path) -> tuple[int, str]:
    """(activation tensors with a QuantizeLinear, op types reading dequantized activations)."""
    g = onnx.load(str(path)).graph
    weights = {t.name for t in g.initializer}
    consts = {o for n in g.node if n.op_type == "Constant" for o in n.output}
    produced_by = {o: n for n in g.node for o in n.output}
    quantized = [n for n in g.node if n.op_type == "QuantizeLinear"
                 and n.input[0] not in weights and n.input[0] not in consts]
    act_dq_out = set()
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            src = produced_by.get(n.input[0])
            if src is not None and src.op_type == "QuantizeLinear" and src in quantized:
                act_dq_out.add(n.output[0])
    readers = collections.Counter(
        n.op_type for n in g.node if any(i in act_dq_out for i in n.input)
    )
    return len(quantized), ", ".join(f"{k}×{v}" for k, v in sorted(readers.items()))


def evaluate(path: Path, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    s = session(path)
    inp = s.get_inputs()[0]
    return np.stack([s.run(None, {inp.name: x[i].reshape(inp.shape)})[0].reshape(-1)
                     for i in range(len(x))])


def latencies(paths: dict[str, Path], sample: np.ndarray, runs: int, warmup: int) -> dict:
    sessions = {k: session(p) for k, p in paths.items()}
    feeds = {k: {s.get_inputs()[0].name: sample.reshape(s.get_inputs()[0].shape)}
             for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[k])
    times = {k: [] for k in sessions}
    rounds = 10
    per = max(1, runs // rounds)
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(per):
                t0 = time.perf_counter()
                s.run(None, feeds[k])
                times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: (float(np.median(v)), float(np.percentile(v, 90)), len(v)) for k, v in times.items()}


def sparsity(path: Path) -> float | None:
    """Fraction of exactly-zero values over the Conv/Gemm weights (int8 codes for QDQ files)."""
    g = onnx.load(str(path)).graph
    inits = {t.name: t for t in g.initializer}
    dq = {n.output[0]: n.input[0] for n in g.node if n.op_type == "DequantizeLinear"}
    zeros = total = 0
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm") or len(n.input) < 2:
            continue
        name = dq.get(n.input[1], n.input[1])
        if name not in inits:
            continue
        w = numpy_helper.to_array(inits[name])
        zeros += int((w == 0).sum())
        total += w.size
    return zeros / total if total else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=200, help="timed single-sample runs per model")
    ap.add_argument("--warmup", type=int, default=20, help="untimed runs per model first")
    ap.add_argument("--keep", metavar="DIR", help="keep the quantized files here")
    args = ap.parse_args()

    env = os.environ.get("EDGEFIT_BIN")
    binary = Path(env) if env else ROOT / "target" / "debug" / "edgefit"
    binary = binary if binary.is_absolute() else ROOT / binary
    if not binary.is_file():
        print(f"edgefit binary not found at {binary}", file=sys.stderr)
        return 2

    tmp = None
    if args.keep:
        work = Path(args.keep).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_ortq.")
        work = Path(tmp.name)

    x = np.load(MODEL_DIR / "test_inputs.npy").astype(np.float32)
    y = np.load(MODEL_DIR / "test_labels.npy").astype(np.int64)

    rows = []  # (name, path, how, preview top1 or None)
    rows.append(("float32 (original)", MODEL_DIR / "model.onnx", "—", None))
    p = work / "ort_int8.onnx"
    ort_quantize(MODEL_DIR / "model.onnx", p, preprocess=False, workdir=work)
    rows.append(("ORT int8 QDQ", p, "quantize_static on model.onnx", None))
    p = work / "ort_int8_pre.onnx"
    ort_quantize(MODEL_DIR / "model.onnx", p, preprocess=True, workdir=work)
    rows.append(("ORT int8 QDQ + pre-process", p, "quant_pre_process, then quantize_static", None))
    for name, stem, flags in [
        ("edgefit int8 QDQ", "ef_qdq8", ["--format", "qdq-int8", "--bits", "8", "--clipping", "minmax"]),
        ("edgefit int8 weights only", "ef_w8", ["--format", "weights-int8", "--bits", "8", "--clipping", "minmax"]),
        ("edgefit 4-bit weights, minmax", "ef_w4_minmax", ["--format", "weights-int8", "--bits", "4", "--clipping", "minmax"]),
        ("edgefit 4-bit weights, mse", "ef_w4_mse", ["--format", "weights-int8", "--bits", "4", "--clipping", "mse"]),
        ("edgefit 4-bit weights, output-mse", "ef_w4_omse", ["--format", "weights-int8", "--bits", "4", "--clipping", "output-mse"]),
        ("edgefit prune 0.5 + int8 QDQ", "ef_p50_qdq8", ["--prune", "0.5", "--format", "qdq-int8"]),
        ("edgefit prune 0.5 + reconstruct (magnitude mask) + int8 QDQ", "ef_p50mag_qdq8",
         ["--prune", "0.5", "--reconstruct", "--reconstruct-mask", "magnitude", "--format", "qdq-int8"]),
        ("edgefit prune 0.5 + reconstruct + int8 QDQ", "ef_p50r_qdq8",
         ["--prune", "0.5", "--reconstruct", "--format", "qdq-int8"]),
        ("edgefit prune 0.5 + reconstruct, fp32", "ef_p50r_fp32",
         ["--prune", "0.5", "--reconstruct", "--format", "fp32"]),
    ]:
        p = work / f"{stem}.onnx"
        rep = edgefit(binary, p, flags)
        rows.append((name, p, "edgefit optimize " + " ".join(flags),
                     rep["compressed"]["accuracy"]["top1"]))

    float_logits = None
    results = []
    for name, path, how, preview in rows:
        logits = evaluate(path, x, y)
        if float_logits is None:
            float_logits = logits
        acc = float((logits.argmax(1) == y).mean())
        agree = float((logits.argmax(1) == float_logits.argmax(1)).mean())
        noise = float(((logits.astype(np.float64) - float_logits) ** 2).sum())
        sqnr = None if noise == 0 else 10 * np.log10(float((float_logits.astype(np.float64) ** 2).sum()) / noise)
        nq, readers = qdq_summary(path)
        results.append(dict(name=name, path=path, how=how, preview=preview, acc=acc, agree=agree, sqnr=sqnr,
                            size=path.stat().st_size, nq=nq, readers=readers, sparsity=sparsity(path)))
    lat = latencies({r["name"]: r["path"] for r in results}, x[0], args.runs, args.warmup)

    base = results[0]
    print(f"mnist-cnn, {len(y)} test samples; onnxruntime {ort.__version__} CPUExecutionProvider "
          f"(ORT_ENABLE_ALL, 1 intra-op thread, batch 1); onnx {onnx.__version__}; "
          f"{os.cpu_count()} CPUs, {platform.machine()}; edgefit {binary}\n")
    print("| model | top-1 (ORT) | Δ vs float | agreement with float | logit SQNR vs float (dB) | edgefit preview top-1 (tract) "
          "| size (bytes) | size vs float | weight sparsity | latency median (ms) | p90 (ms) | QDQ'd activations | ops reading them |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        med, p90, n = lat[r["name"]]
        prev = f"{100 * r['preview']:.2f}%" if r["preview"] is not None else "–"
        sp = f"{100 * r['sparsity']:.1f}%" if r["sparsity"] is not None else "–"
        sq = "∞" if r["sqnr"] is None else f"{r['sqnr']:.1f}"
        print(f"| {r['name']} | {100 * r['acc']:.2f}% | {100 * (r['acc'] - base['acc']):+.2f} pp | "
              f"{100 * r['agree']:.2f}% | {sq} | {prev} | {r['size']:,} | {r['size'] / base['size']:.2f}× | "
              f"{sp} | "
              f"{med:.3f} | {p90:.3f} | {r['nq']} | {r['readers'] or '–'} |")
    print(f"\nlatency: {args.warmup} warm-up + {lat[base['name']][2]} timed runs per model, "
          f"10 interleaved rounds, input = test sample 0")
    print("\nHow each file was made:")
    for r in results:
        print(f"- {r['name']}: {r['how']}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
