#!/usr/bin/env python3
"""qdq-int8 and dynamic-int8 exports compute the same on a CPU without VNNI as on this one.

    python3 tests/python/check_cpu_kinds.py [--samples 200] [--models mnist-cnn,digits-mlp]

onnxruntime runs QDQ Conv/Gemm/MatMul as fused u8×s8 integer kernels. On x86-64 without VNNI
(e.g. AMD EPYC before Zen 4) those kernels multiply with VPMADDUBSW, which adds pairs of u8·s8
products into int16 and saturates when the weights use the full int8 range: the file then
computes something else than the preview (tract, which simulates QDQ exactly in float) showed.
edgefit's default target (`portable`) keeps the weights of integer layers within 7 bits, where
no pair can saturate; `--target x86-64-vnni` (or `arm64`) unlocks the full range.

A CI machine has one CPU, so the other kind is emulated: the onnxruntime runs below are done
twice, natively and under `qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512, no VNNI: the kernels
that saturate). For each sample model:

  portable  `edgefit optimize --format qdq-int8` (default target). onnxruntime with all graph
            optimizations (integer kernels), natively AND emulated, must match onnxruntime
            with optimizations off (QDQ computed in float, as tract computes it): max |Δ logit|
            <= 0.5, SQNR >= 40 dB, identical top-1 on every sample — the bounds of
            check_exports.py.
  dynamic   `--format dynamic-int8` (default target, 7-bit weight codes): onnxruntime emulated
            must match onnxruntime natively within the same bounds.
  control   `--target x86-64-vnni` (full-range weights) on mnist-cnn must FAIL those bounds
            when emulated: it proves the emulated CPU really runs the saturating kernels (else
            the check above would prove nothing). Natively it is printed only (it passes on a
            VNNI CPU and fails on one without).

Prints a table, then `check_cpu_kinds: N passed, M failed`. Exit 0 when nothing failed, 1
otherwise, 2 when qemu-x86_64 or the edgefit binary is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
MAX_ABS = 0.5
MIN_SQNR_DB = 40.0
QEMU_CPU = "Haswell"


def logits(path: str, x: np.ndarray, optimize: bool) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    static = all(isinstance(d, int) for d in inp.shape)
    outs = []
    for i in range(len(x)):
        sample = x[i].reshape(inp.shape) if static else x[i : i + 1]
        outs.append(np.asarray(sess.run(None, {inp.name: sample})[0], dtype=np.float32).reshape(-1))
    return np.stack(outs)


def worker(out: str, jobs: list[str]) -> int:
    """Runs under emulation: `inputs.npy=model.onnx` pairs → logits with optimizations on."""
    results = {}
    for i, job in enumerate(jobs):
        inputs, model = job.split("=", 1)
        results[f"r{i}"] = logits(model, np.load(inputs), optimize=True)
    np.savez(out, **results)
    return 0


def compare(ref: np.ndarray, got: np.ndarray) -> dict:
    r, g = ref.astype(np.float64), got.astype(np.float64)
    noise = float(((r - g) ** 2).sum())
    sqnr = float("inf") if noise == 0 else 10 * np.log10(float((r**2).sum()) / noise)
    return {
        "max_abs": float(np.abs(r - g).max()),
        "sqnr_db": sqnr,
        "top1_same": bool((ref.argmax(1) == got.argmax(1)).all()),
    }


def within(c: dict) -> bool:
    return c["max_abs"] <= MAX_ABS and c["sqnr_db"] >= MIN_SQNR_DB and c["top1_same"]


def fmt(c: dict) -> str:
    return f"{c['max_abs']:.3g} / {c['sqnr_db']:.1f} dB / {'same' if c['top1_same'] else 'DIFFERS'}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=200, help="test samples per model")
    ap.add_argument("--models", default="mnist-cnn,digits-mlp")
    ap.add_argument("--worker", nargs="+", metavar=("OUT.npz", "INPUTS=MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1:])

    qemu = shutil.which("qemu-x86_64")
    env_bin = os.environ.get("EDGEFIT_BIN")
    binary = Path(env_bin) if env_bin else ROOT / "target" / "debug" / "edgefit"
    if qemu is None:
        print("check_cpu_kinds: qemu-x86_64 not found (apt-get install qemu-user)", file=sys.stderr)
        return 2
    if not binary.is_file():
        print(f"check_cpu_kinds: edgefit binary not found at {binary}", file=sys.stderr)
        return 2

    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}; emulated CPU: qemu-x86_64 -cpu {QEMU_CPU}; "
          f"bounds: max |Δ logit| <= {MAX_ABS}, SQNR >= {MIN_SQNR_DB} dB, same top-1\n")
    with tempfile.TemporaryDirectory(prefix="check_cpu_kinds.") as tmp:
        cases = []  # (model, variant, path, inputs path)
        for model in [m for m in args.models.split(",") if m]:
            model_dir = ROOT / "sample-models" / model
            meta = json.loads((model_dir / "dataset.json").read_text())
            x = np.load(model_dir / meta.get("inputs", "test_inputs.npy")).astype(np.float32)[: args.samples]
            inputs = Path(tmp) / f"{model}.inputs.npy"
            np.save(inputs, x)
            for variant, fmt_name, flags in [
                ("portable", "qdq-int8", []),
                ("full range (control)", "qdq-int8", ["--target", "x86-64-vnni"]),
                ("dynamic-int8 portable", "dynamic-int8", []),
            ]:
                out = Path(tmp) / f"{model}.{len(cases)}.onnx"
                cmd = [str(binary), "optimize", str(model_dir / "model.onnx"), "--out", str(out),
                       "--format", fmt_name, "--runs", "0", "--json", *flags]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    print(f"`{' '.join(cmd)}` failed: {proc.stderr[-600:]}", file=sys.stderr)
                    return 1
                bits = json.loads(proc.stdout).get("integer_kernels", {}).get("weight_bits")
                cases.append((model, variant, bits, out, inputs))

        emulated_out = Path(tmp) / "emulated.npz"
        jobs = [f"{inputs}={path}" for (_, _, _, path, inputs) in cases]
        proc = subprocess.run(
            [qemu, "-cpu", QEMU_CPU, sys.executable, __file__, "--worker", str(emulated_out), *jobs],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            print(f"the emulated run failed: {proc.stderr[-1200:]}", file=sys.stderr)
            return 1
        emulated = np.load(emulated_out)

        print("| model | export | weight bits | native: max Δ / SQNR / top-1 | emulated (no VNNI): max Δ / SQNR / top-1 | result |")
        print("|---|---|---|---|---|---|")
        failures = []
        for i, (model, variant, bits, path, inputs) in enumerate(cases):
            x = np.load(inputs)
            if variant.startswith("dynamic"):
                # onnxruntime runs DynamicQuantizeLinear + MatMulInteger as integer kernels
                # even unoptimized: the native run is the reference (on a VNNI CPU it is exact;
                # check_exports.py compares it with tract's preview wherever CI runs).
                exact = logits(str(path), x, optimize=True)
            else:
                exact = logits(str(path), x, optimize=False)
            native = compare(exact, logits(str(path), x, optimize=True))
            emu = compare(exact, emulated[f"r{i}"])
            if variant.startswith("dynamic"):
                ok = within(emu) and bits == 7
                why = "" if ok else "the emulated CPU without VNNI computes another result than this one"
            elif variant == "portable":
                ok = within(native) and within(emu) and bits == 7
                why = "" if ok else "integer kernels differ from the exact QDQ result beyond the bounds"
            else:
                ok = model != "mnist-cnn" or not within(emu)
                why = "" if ok else ("the full-range control agrees when emulated: the emulated CPU does not "
                                     "run the saturating kernels, so this check proves nothing")
            if not ok:
                failures.append(f"{model} {variant}: {why}")
            print(f"| {model} | {variant} | {bits} | {fmt(native)} | {fmt(emu)} | {'ok' if ok else 'FAIL'} |")
        if failures:
            print("\nFailures:")
            for f in failures:
                print(f"  {f}")
        print(f"\ncheck_cpu_kinds: {len(cases) - len(failures)} passed, {len(failures)} failed")
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
