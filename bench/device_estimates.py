#!/usr/bin/env python3
"""edgefit's per-device latency estimates against published measurements.

    python3 bench/device_estimates.py [--csv bench/published-latency.csv] [--keep DIR] [--verbose]

Builds the reference architectures (bench/reference_models.py, all-zero weights) into a
temporary folder, then for every row of bench/published-latency.csv runs

    $EDGEFIT_BIN fit MODEL.onnx --device DEVICE_ID --json [--format qdq-int8 | --format fp16]

(`EDGEFIT_BIN` defaults to target/debug/edgefit; int8 rows add `--format qdq-int8`, fp16 rows
`--format fp16`), reads `devices[].latency_ms` of the entry whose `device` is the row's
device id, and prints estimate, published figure and their ratio (estimate / published), then
the median ratio, the worst one (the largest of max(r, 1/r)) and how many rows are within 1.5x
and 3x.

The figures are reported, not asserted: the exit status is 0 whatever the ratios, and non-zero
only when the edgefit binary cannot be run or one of its runs fails (no JSON, unknown device...).

Needs only `pip install onnx numpy`.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import reference_models  # noqa: E402

FORMAT_FLAGS = {"fp32": [], "int8": ["--format", "qdq-int8"], "fp16": ["--format", "fp16"]}


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows, start=2):
        if row["model"] not in reference_models.MODELS:
            sys.exit(f"{path}:{i}: model `{row['model']}` is not built by reference_models.py")
        if row["precision"] not in FORMAT_FLAGS:
            sys.exit(f"{path}:{i}: precision `{row['precision']}` (expected fp32, fp16 or int8)")
        row["published_ms"] = float(row["published_ms"])
    return rows


def estimate(binary: str, model: Path, device: str, precision: str) -> tuple[dict | None, str]:
    """Runs `edgefit fit`; returns (the device's entry, "") or (None, why not)."""
    cmd = [binary, "fit", str(model), "--device", device, "--json", *FORMAT_FLAGS[precision]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except OSError as e:
        return None, f"cannot run {binary}: {e}"
    except subprocess.TimeoutExpired:
        return None, "timed out after 600 s"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"exit {proc.returncode}: {lines[-1] if lines else '(no output)'}"
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        return None, f"output is not JSON ({e})"
    return pick_device(data, device)


def pick_device(data: dict, device: str) -> tuple[dict | None, str]:
    entries = data.get("devices") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None, "JSON has no `devices` list"
    for entry in entries:
        if isinstance(entry, dict) and entry.get("device") == device:
            latency = entry.get("latency_ms")
            if not isinstance(latency, (int, float)) or not latency > 0:
                return None, f"`latency_ms` is {latency!r}"
            return entry, ""
    found = [e.get("device") for e in entries if isinstance(e, dict)]
    return None, f"no entry for `{device}` in `devices` (found {found})"


def fold(r: float) -> float:
    """How far off a ratio is, either way: 2.0 for both 2x and 0.5x."""
    return max(r, 1.0 / r)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=HERE / "published-latency.csv")
    ap.add_argument("--keep", type=Path, help="write the reference models here and keep them")
    ap.add_argument("--verbose", action="store_true", help="also print each estimate's basis")
    args = ap.parse_args()

    binary = os.environ.get("EDGEFIT_BIN", "target/debug/edgefit")
    if not Path(binary).is_file():
        print(f"edgefit binary not found at {binary} (cargo build -p edgefit, or set EDGEFIT_BIN)",
              file=sys.stderr)
        return 2
    rows = read_rows(args.csv)

    with tempfile.TemporaryDirectory(prefix="edgefit-ref-") as tmp:
        out_dir = args.keep or Path(tmp)
        names = sorted({r["model"] for r in rows})
        paths = reference_models.write_all(out_dir, names, quiet=True)

        header = (f"{'model':24} {'device':18} {'prec':5} {'estimate_ms':>12} {'published_ms':>13} "
                  f"{'ratio':>7}")
        print(header)
        print("-" * len(header))
        ratios: list[float] = []
        failures = 0
        for row in rows:
            entry, why = estimate(binary, paths[row["model"]], row["device_id"], row["precision"])
            prefix = f"{row['model']:24} {row['device_id']:18} {row['precision']:5}"
            if entry is None:
                failures += 1
                print(f"{prefix} {'-':>12} {row['published_ms']:>13.2f} {'-':>7}  FAILED: {why}")
                continue
            est = float(entry["latency_ms"])
            ratio = est / row["published_ms"]
            ratios.append(ratio)
            print(f"{prefix} {est:>12.2f} {row['published_ms']:>13.2f} {ratio:>7.2f}")
            if args.verbose:
                print(f"{'':24}   basis: {entry.get('latency_basis', '(none)')}")

    print()
    if ratios:
        worst = max(ratios, key=fold)
        within = lambda k: sum(fold(r) <= k for r in ratios)  # noqa: E731
        print(f"rows estimated: {len(ratios)} of {len(rows)}")
        print(f"median ratio (estimate / published): {statistics.median(ratios):.2f}")
        print(f"geometric mean ratio: {math.exp(statistics.mean(math.log(r) for r in ratios)):.2f}")
        print(f"worst ratio: {worst:.2f} ({fold(worst):.2f}x off)")
        print(f"within 1.5x: {within(1.5)} of {len(ratios)}; within 3x: {within(3.0)} of {len(ratios)}")
    if failures:
        print(f"{failures} row(s) could not be estimated (see FAILED above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
