#!/usr/bin/env python3
"""What you preview is what you ship: every export format, checked in onnxruntime.

    python3 tests/python/check_exports.py [--keep DIR] [--models mnist-cnn,digits-mlp]

For each sample model (sample-models/<name>/) and each export variant below, this runs

    edgefit optimize MODEL --out OUT.onnx --runs 0 --json <variant flags>
    edgefit eval OUT.onnx --data sample-models/<name> --reference LOOKUP.onnx --json

and runs OUT.onnx in onnxruntime (CPUExecutionProvider, ORT_ENABLE_ALL graph optimizations,
batch 1 per sample, 1 intra-op thread) on the whole labelled test split. The original model is
checked the same way (row "original"). A variant passes when all of these hold:

  checker   onnx.checker.check_model(OUT, full_check=True) passes, and onnxruntime loads
            and runs the file on every test sample.
  verify    edgefit's own export verification (report["verification"]["passed"]) is true.
  ort=eval  onnxruntime's top-1 accuracy equals `edgefit eval`'s (tract, reloaded file)
            within 0.2 percentage points.
  ort=prev  onnxruntime's top-1 accuracy equals the preview's, report["compressed"]["accuracy"]
            ["top1"], within 0.2 percentage points ("what you preview is what you ship").
            For the "original" row: report["original"]["accuracy"]["top1"].
  logits    max |onnxruntime logits - tract logits| over every test sample and class is within
            the tolerance below (and, for qdq-int8 and dynamic-int8, SQNR(tract vs
            onnxruntime) >= 40 dB).

0.2 percentage points is 2 of 1000 samples for mnist-cnn, and less than one of 450 samples for
digits-mlp, where the accuracies must therefore be identical.

How tract's logits are obtained: `edgefit eval` prints no logits, but it prints the fidelity
(max abs error, SQNR, top-1 agreement) of the evaluated model against a --reference model on
the same samples. LOOKUP.onnx is a small float model built here with the same input and output
as OUT: it stores the test inputs and onnxruntime's logits for them, finds the stored input at
squared distance 0 from its input (Sub, ReduceSumSquare, ArgMin) and returns that sample's
onnxruntime logits (Gather). So eval's `fidelity.max_abs_err` *is* max |tract - onnxruntime|
per sample. The script checks in onnxruntime that LOOKUP reproduces the stored logits exactly.

Tolerances for max |tract - onnxruntime| (logits of these models reach |21.7| / |34.4|):
  1e-4 for exports computed in float in both runtimes (fp32, fp16 stored weights cast to
       float, weights-int8 DequantizeLinear weights, pruned, 4-bit): only operation order
       differs (observed <= 1.6e-5).
  0.5 (about 2% of the largest logit) and SQNR >= 40 dB for qdq-int8. onnxruntime fuses
       DequantizeLinear -> Conv/Gemm (-> Relu) -> QuantizeLinear into integer kernels; tract
       simulates QDQ in float. They agree because the export (1) keeps the weights of
       integer layers within 7 bits on the default `portable` target, so that the u8×s8
       kernels of x86-64 without VNNI cannot saturate (check_cpu_kinds.py checks that on an
       emulated CPU), (2) stores Conv/Gemm biases as int32 at input scale × weight scale, as
       the kernels add them, and (3) quantizes a Conv followed by Relu once, after the Relu.
       Observed 2026-12-02: 0.07-0.09, SQNR 67-71 dB. What is left: a handful of activations
       one step apart (float rounding of the requantization multiplier, and tract's
       QuantizeLinear computing round(x * (1/scale)) where onnxruntime computes
       round(x / scale)). Before (1)-(3): 0.26 and 44 dB with VNNI, 6.9 and 14 dB without.

Also printed, not asserted: the fidelity of the export against the original model, both in
onnxruntime (ORT export vs ORT original) and in the preview (report["fidelity"]).

The edgefit binary is $EDGEFIT_BIN, default target/debug/edgefit under the repository root.
Prints one table row per check, then details of failures, then exactly
`check_exports: N passed, M failed`. Exit 0 when nothing failed, 1 otherwise, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
MODELS = ["mnist-cnn", "digits-mlp"]

# (variant name, edgefit optimize flags)
VARIANTS = [
    ("fp32", ["--format", "fp32"]),
    ("fp16", ["--format", "fp16"]),
    ("weights-int8", ["--format", "weights-int8"]),
    ("qdq-int8", ["--format", "qdq-int8"]),
    ("dynamic-int8", ["--format", "dynamic-int8"]),
    ("prune0.3-fp32", ["--prune", "0.3", "--format", "fp32"]),
    ("int4-mse-weights-int8", ["--bits", "4", "--clipping", "mse", "--format", "weights-int8"]),
    ("int4-output-mse-weights-int8",
     ["--bits", "4", "--clipping", "output-mse", "--format", "weights-int8"]),
    ("prune0.5-reconstruct-fp32",
     ["--prune", "0.5", "--reconstruct", "--format", "fp32"]),
    ("qdq-int8-prune0.5-reconstruct",
     ["--prune", "0.5", "--reconstruct", "--format", "qdq-int8"]),
]

ACC_TOL = 0.002  # 0.2 percentage points, as a fraction
FLOAT_LOGIT_TOL = 1e-4
QDQ_LOGIT_TOL = 0.5
QDQ_MIN_SQNR_DB = 40.0


class Fail(Exception):
    pass


def edgefit_bin() -> Path:
    env = os.environ.get("EDGEFIT_BIN")
    p = Path(env) if env else ROOT / "target" / "debug" / "edgefit"
    return p if p.is_absolute() else (ROOT / p)


def run_json(cmd: list[str]) -> dict:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise Fail(f"`{' '.join(cmd)}` exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        raise Fail(f"`{' '.join(cmd)}` printed no JSON ({e}): {proc.stdout[:300]!r}")


def load_dataset(model_dir: Path):
    meta = json.loads((model_dir / "dataset.json").read_text())
    x = np.load(model_dir / meta.get("inputs", "test_inputs.npy")).astype(np.float32)
    y = np.load(model_dir / meta.get("labels", "test_labels.npy")).astype(np.int64)
    return x, y


def ort_session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """First output for every sample, run one sample at a time (batch 1)."""
    sess = ort_session(path)
    inp = sess.get_inputs()[0]
    shape = inp.shape
    static = all(isinstance(d, int) for d in shape)
    outs = []
    for i in range(len(x)):
        sample = x[i].reshape(shape) if static else x[i : i + 1]
        outs.append(np.asarray(sess.run(None, {inp.name: sample})[0], dtype=np.float32).reshape(-1))
    return np.stack(outs)


def fidelity(ref: np.ndarray, out: np.ndarray) -> dict:
    """Same definitions as engine/src/eval.rs `fidelity` (argmax ties -> lowest index)."""
    r, o = ref.astype(np.float64), out.astype(np.float64)
    noise = float(((r - o) ** 2).sum())
    return {
        "agreement": float((ref.argmax(1) == out.argmax(1)).mean()),
        "sqnr_db": None if noise == 0 else 10 * np.log10(float((r**2).sum()) / noise),
        "max_abs_err": float(np.abs(r - o).max()),
    }


def build_lookup(model_path: Path, x: np.ndarray, logits: np.ndarray, out_path: Path) -> None:
    """A float model with MODEL's input/output that returns the stored logits of its input."""
    m = onnx.load(str(model_path), load_external_data=False)
    gin, gout = m.graph.input[0], m.graph.output[0]
    sess_shape = [d.dim_value for d in gin.type.tensor_type.shape.dim]
    table = x.reshape([len(x)] + sess_shape[1:]).astype(np.float32)
    out_shape = [d.dim_value for d in gout.type.tensor_type.shape.dim]
    values = logits.reshape([len(x)] + (out_shape[1:] if len(out_shape) > 1 else [-1]))
    axes = list(range(1, table.ndim))
    nodes = [
        helper.make_node("Sub", [gin.name, "lookup_table"], ["lookup_diff"]),
        helper.make_node("ReduceSumSquare", ["lookup_diff"], ["lookup_dist"], axes=axes, keepdims=0),
        helper.make_node("ArgMin", ["lookup_dist"], ["lookup_index"], axis=0, keepdims=1),
        helper.make_node("Gather", ["lookup_values", "lookup_index"], [gout.name], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "logit_lookup",
        [gin],
        [gout],
        [
            numpy_helper.from_array(table, "lookup_table"),
            numpy_helper.from_array(values.astype(np.float32), "lookup_values"),
        ],
    )
    lk = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    lk.ir_version = 7
    onnx.checker.check_model(lk, full_check=True)
    onnx.save(lk, str(out_path))


def pp(a: float) -> str:
    return f"{100 * a:.2f}%"


def check_case(
    *,
    binary: Path,
    model_name: str,
    variant: str,
    flags: list[str] | None,
    workdir: Path,
    x: np.ndarray,
    y: np.ndarray,
    ref_logits: np.ndarray,
    baseline_report: dict | None,
) -> tuple[dict, list[str]]:
    """Returns (row, failures). flags None = the original model itself."""
    model_dir = ROOT / "sample-models" / model_name
    original = model_dir / "model.onnx"
    row = {"model": model_name, "variant": variant}
    fails: list[str] = []
    t0 = time.time()

    if flags is None:
        out = original
        report = baseline_report
        preview_top1 = report["original"]["accuracy"]["top1"] if report else None
    else:
        out = workdir / f"{model_name}.{variant}.onnx"
        report = run_json(
            [str(binary), "optimize", str(original), "--out", str(out), "--runs", "0", "--json", *flags]
        )
        preview_top1 = report["compressed"]["accuracy"]["top1"]
        if not report.get("verification", {}).get("passed"):
            fails.append(f"edgefit verification did not pass: {report.get('verification')}")
    row["size"] = out.stat().st_size

    # (a) checker + onnxruntime accepts the file.
    try:
        onnx.checker.check_model(str(out), full_check=True)
        row["checker"] = "ok"
    except Exception as e:  # noqa: BLE001 - any checker error is the finding
        row["checker"] = "FAIL"
        fails.append(f"onnx.checker full_check: {type(e).__name__}: {str(e)[:400]}")
    try:
        logits = ort_logits(out, x)
    except Exception as e:  # noqa: BLE001
        row["ort"] = "FAIL"
        fails.append(f"onnxruntime could not load/run the file: {type(e).__name__}: {str(e)[:400]}")
        return row, fails
    row["ort_top1"] = float((logits.argmax(1) == y).mean())

    # tract's logits, via a lookup reference model holding onnxruntime's logits.
    lookup = workdir / f"{model_name}.{variant}.ort-lookup.onnx"
    build_lookup(out, x, logits, lookup)
    replay = ort_logits(lookup, x)
    if not np.array_equal(replay, logits):
        fails.append("internal: the lookup model does not reproduce onnxruntime's logits")
    ev = run_json(
        [str(binary), "eval", str(out), "--data", str(model_dir), "--reference", str(lookup), "--json"]
    )
    row["eval_top1"] = ev["accuracy"]["top1"]
    row["preview_top1"] = preview_top1
    if ev["accuracy"]["samples"] != len(y) or ev["fidelity"]["samples"] != len(y):
        fails.append(f"edgefit eval used {ev['accuracy']['samples']} samples, expected {len(y)}")

    # (b) onnxruntime accuracy == edgefit eval (tract) accuracy; == preview accuracy.
    if abs(row["ort_top1"] - row["eval_top1"]) > ACC_TOL + 1e-9:
        fails.append(
            f"top-1 onnxruntime {pp(row['ort_top1'])} vs edgefit eval (tract) {pp(row['eval_top1'])}: "
            f"differs by {100 * abs(row['ort_top1'] - row['eval_top1']):.2f} pp > 0.2 pp"
        )
    if preview_top1 is None:
        fails.append("no preview accuracy in the optimize report")
    elif abs(row["ort_top1"] - preview_top1) > ACC_TOL + 1e-9:
        fails.append(
            f"top-1 onnxruntime {pp(row['ort_top1'])} vs preview {pp(preview_top1)}: "
            f"differs by {100 * abs(row['ort_top1'] - preview_top1):.2f} pp > 0.2 pp"
        )

    # (c) max |onnxruntime - tract| logits.
    tf = ev["fidelity"]
    # Both runtimes run dynamic-int8's MatMulInteger as integers (observed identical on
    # digits-mlp, 133 dB on mnist-cnn); DynamicQuantizeLinear may round a near-tie apart.
    qdq = variant.startswith("qdq") or variant.startswith("dynamic")
    tol = QDQ_LOGIT_TOL if qdq else FLOAT_LOGIT_TOL
    row["tract_vs_ort_max"] = tf["max_abs_err"]
    row["tract_vs_ort_sqnr"] = tf["sqnr_db"]
    row["tract_vs_ort_agree"] = tf["agreement"]
    row["tol"] = tol
    if not tf["max_abs_err"] <= tol:
        fails.append(f"max |tract - onnxruntime| logits {tf['max_abs_err']:.4g} > tolerance {tol:g}")
    if qdq and (tf["sqnr_db"] is not None and tf["sqnr_db"] < QDQ_MIN_SQNR_DB):
        fails.append(f"SQNR tract vs onnxruntime {tf['sqnr_db']:.1f} dB < {QDQ_MIN_SQNR_DB} dB")

    # Fidelity to the original (informational): onnxruntime, and the preview's.
    row["ort_fid"] = fidelity(ref_logits, logits)
    row["preview_fid"] = report.get("fidelity") if (report and flags is not None) else None
    row["seconds"] = time.time() - t0
    return row, fails


def fmt_sqnr(v) -> str:
    return "inf" if v is None else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", metavar="DIR", help="write the exports here and keep them")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated sample models")
    args = ap.parse_args()

    binary = edgefit_bin()
    if not binary.is_file():
        print(f"check_exports: edgefit binary not found at {binary} (set EDGEFIT_BIN or cargo build)",
              file=sys.stderr)
        return 2
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if not (ROOT / "sample-models" / m / "dataset.json").is_file():
            print(f"check_exports: no sample-models/{m}/dataset.json", file=sys.stderr)
            return 2

    print(f"edgefit: {binary}")
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__} (CPUExecutionProvider, "
          f"ORT_ENABLE_ALL, 1 thread, batch 1), numpy {np.__version__}")
    print(f"tolerances: accuracy 0.2 pp; max |tract - ort| logits {FLOAT_LOGIT_TOL:g} (float exports), "
          f"{QDQ_LOGIT_TOL:g} and SQNR >= {QDQ_MIN_SQNR_DB:g} dB (qdq-int8)\n")

    tmp = None
    if args.keep:
        workdir = Path(args.keep).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="check_exports.")
        workdir = Path(tmp.name)

    rows: list[tuple[dict, list[str]]] = []
    try:
        for model_name in models:
            model_dir = ROOT / "sample-models" / model_name
            x, y = load_dataset(model_dir)
            try:
                ref_logits = ort_logits(model_dir / "model.onnx", x)
            except Exception as e:  # noqa: BLE001
                rows.append(({"model": model_name, "variant": "original"},
                             [f"onnxruntime cannot run the original: {e}"]))
                continue
            cases = [("original", None)] + VARIANTS
            # The original row needs a report for the preview's original accuracy: taken from
            # the first variant's optimize run, so run the variants first and the original last.
            results = {}
            baseline = None
            for variant, flags in cases[1:] + cases[:1]:
                try:
                    row, fails = check_case(
                        binary=binary, model_name=model_name, variant=variant, flags=flags,
                        workdir=workdir, x=x, y=y, ref_logits=ref_logits, baseline_report=baseline,
                    )
                except Fail as e:
                    row, fails = {"model": model_name, "variant": variant}, [str(e)]
                if flags is not None and baseline is None:
                    rep = workdir / f"{model_name}.{variant}.report.json"
                    if rep.is_file():
                        baseline = json.loads(rep.read_text())
                results[variant] = (row, fails)
            rows.extend(results[v] for v, _ in cases)
    finally:
        if tmp is not None:
            tmp.cleanup()

    header = ("| model | variant | checker | top-1 ORT | top-1 eval (tract) | top-1 preview "
              "| max\\|tract−ORT\\| (tol) | SQNR tract/ORT dB | ORT vs original: agree / SQNR dB / max | "
              "preview vs original: agree / SQNR dB / max | size (B) | s | result |")
    print(header)
    print("|" + "|".join(["---"] * (header.count("|") - 1 - header.count("\\|"))) + "|")
    for row, fails in rows:
        def g(key, f=lambda v: v):
            return f(row[key]) if row.get(key) is not None else "–"
        of, pf = row.get("ort_fid"), row.get("preview_fid")
        ofs = f"{pp(of['agreement'])} / {fmt_sqnr(of['sqnr_db'])} / {of['max_abs_err']:.3g}" if of else "–"
        pfs = f"{pp(pf['agreement'])} / {fmt_sqnr(pf['sqnr_db'])} / {pf['max_abs_err']:.3g}" if pf else "–"
        tmax = (f"{row['tract_vs_ort_max']:.2g} ({row['tol']:g})" if "tract_vs_ort_max" in row else "–")
        print(
            f"| {row['model']} | {row['variant']} | {g('checker')} | {g('ort_top1', pp)} | "
            f"{g('eval_top1', pp)} | {g('preview_top1', pp)} | {tmax} | "
            f"{g('tract_vs_ort_sqnr', fmt_sqnr) if 'tract_vs_ort_max' in row else '–'} | {ofs} | {pfs} | "
            f"{g('size')} | {g('seconds', lambda s: f'{s:.1f}')} | {'FAIL' if fails else 'ok'} |"
        )
    failed = [(r, f) for r, f in rows if f]
    if failed:
        print("\nFailures:")
        for row, fails in failed:
            for f in fails:
                print(f"  {row['model']} {row['variant']}: {f}")
    passed = len(rows) - len(failed)
    print(f"\ncheck_exports: {passed} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
