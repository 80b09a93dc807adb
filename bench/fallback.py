#!/usr/bin/env python3
"""`edgefit search` next to an NNCF-style accuracy-control loop, on the same model and floor.

The loop (as NNCF's `quantize_with_accuracy_control` does it, with output SQNR as the metric):
start from every compressible layer in int8; while the plan's output SQNR is below the floor,
try returning each still-quantized layer to float32 alone, measure every one of those plans,
and keep the one with the highest SQNR. Each measurement is a full `edgefit optimize` (the
same job `search` measures its picks with: preview, write, verify), so the two differ only in
how they choose what to measure.

    python3 bench/fallback.py MODEL [--min-sqnr 30] [--max-steps 3] [--data DATA]

Prints, for both: full evaluations, wall time, and the plan found (float layers, size,
measured SQNR). EDGEFIT_BIN overrides the binary (default target/release/edgefit).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def edgefit():
    return os.environ.get("EDGEFIT_BIN", "target/release/edgefit")


def run_json(args):
    out = subprocess.run([edgefit(), *args, "--json"], capture_output=True, text=True)
    if not out.stdout.strip():
        sys.exit(f"edgefit {' '.join(args)} failed:\n{out.stderr}")
    return json.loads(out.stdout)


def measure(model, layers_float, all_layers, work, extra):
    """One full evaluation: every layer int8 except `layers_float`."""
    recipe = {
        "version": 1,
        "defaults": {"precision": {"type": "int", "bits": 8}},
        "layers": {name: {"precision": {"type": "float32"}} for name in layers_float},
    }
    path = os.path.join(work, "recipe.json")
    with open(path, "w") as f:
        json.dump(recipe, f)
    # Exit status 4 (below the floor) still prints the report.
    report = run_json(
        ["optimize", model, "--recipe", path, "--format", "weights-int8", "--runs", "0",
         "--out", os.path.join(work, "plan.onnx"), *extra]
    )
    sqnr = report["quality"]["worst_sqnr_db"]
    sqnr = float("inf") if sqnr is None else float(sqnr)
    return sqnr, report["compressed"]["size_bytes"]


def fallback(model, floor, max_steps, extra):
    layers = [l["name"] for l in run_json(
        ["sensitivity", model, "--bits", "8", "--no-fp16", "--no-prune", "--samples", "1", *extra]
    )["layers"]]
    started = time.monotonic()
    evaluations = 0
    kept_float = []
    with tempfile.TemporaryDirectory() as work:
        sqnr, size = measure(model, kept_float, layers, work, extra)
        evaluations += 1
        for _ in range(max_steps):
            if sqnr >= floor:
                break
            best = None
            for name in layers:
                if name in kept_float:
                    continue
                s, z = measure(model, kept_float + [name], layers, work, extra)
                evaluations += 1
                if best is None or s > best[0]:
                    best = (s, z, name)
            if best is None:
                break
            sqnr, size, name = best
            kept_float.append(name)
    return {
        "evaluations": evaluations,
        "seconds": time.monotonic() - started,
        "float_layers": kept_float,
        "size_bytes": size,
        "sqnr_db": sqnr,
        "passed": sqnr >= floor,
        "layers": len(layers),
    }


def search(model, floor, extra):
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        out = run_json(
            ["search", model, "--min-sqnr", str(floor), "--runs", "0",
             "--out", os.path.join(work, "searched.onnx"), *extra]
        )
    seconds = time.monotonic() - started
    s = out["search"]
    export = out.get("export") or {}
    return {
        "evaluations": len(s["evaluations"]),
        "seconds": seconds,
        "sweep_runs": out["sensitivity"]["model_runs"],
        "sweep_seconds": out["sensitivity"]["wall_time_s"],
        "size_bytes": (export.get("compressed") or {}).get("size_bytes"),
        "sqnr_db": (export.get("quality") or {}).get("worst_sqnr_db"),
        "passed": s["chosen"] is not None,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--min-sqnr", type=float, default=30.0)
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--data")
    a = p.parse_args()
    extra = ["--data", a.data] if a.data else []
    f = fallback(a.model, a.min_sqnr, a.max_steps, extra)
    s = search(a.model, a.min_sqnr, extra)
    print(f"model {a.model}, floor {a.min_sqnr} dB, {f['layers']} compressible layers")
    print(f"{'':28} {'evaluations':>11} {'time':>8} {'size':>12} {'SQNR':>7}  passed")
    print(f"{'fallback loop (NNCF-style)':28} {f['evaluations']:>11} {f['seconds']:>7.1f}s "
          f"{f['size_bytes']:>12,} {f['sqnr_db']:>7.1f}  {f['passed']}  (float: {', '.join(f['float_layers']) or 'none'})")
    size = "–" if s["size_bytes"] is None else f"{s['size_bytes']:,}"
    sqnr = "–" if s["sqnr_db"] is None else f"{float(s['sqnr_db']):.1f}"
    print(f"{'edgefit search':28} {s['evaluations']:>11} {s['seconds']:>7.1f}s {size:>12} {sqnr:>7}  {s['passed']}"
          f"  (+ sweep: {s['sweep_runs']:,} model runs, {s['sweep_seconds']:.1f} s, included in the time)")
    if s["evaluations"]:
        print(f"ratio of full evaluations: {f['evaluations'] / s['evaluations']:.1f}x; "
              f"of wall time: {f['seconds'] / s['seconds']:.1f}x")


if __name__ == "__main__":
    main()
