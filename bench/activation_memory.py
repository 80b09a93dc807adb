"""Peak activation memory of one inference: the arena planner (edgefit fit) against the lower
bound (most bytes alive during one node) and a runtime that reuses nothing, on the sample
models and real models from PyPI wheels (tests/fixtures/real, provenance in its README).

    python3 bench/activation_memory.py        # EDGEFIT_BIN defaults to target/debug/edgefit

Figures, not assertions: exit status 0 unless the tool fails to run.
"""

import json
import os
import subprocess
import sys

MODELS = [
    ("sample-models/mnist-cnn/model.onnx", []),
    ("sample-models/digits-mlp/model.onnx", []),
    ("tests/fixtures/real/ch_ppocr_mobile_v2.0_cls_infer.onnx", ["--input-shape", "x=1,3,48,192"]),
    ("tests/fixtures/real/attacut-c.onnx", ["--input-shape", "input=1,64"]),
]


def main():
    binary = os.environ.get("EDGEFIT_BIN", "target/debug/edgefit")
    print(f"{'model':<44} {'planner':>11} {'lower bound':>12} {'no reuse':>11} {'no reuse / planner':>19}")
    for path, extra in MODELS:
        out = subprocess.run(
            [binary, "fit", path, "--device", "raspberry-pi-4", "--json", *extra],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            print(f"{path}: edgefit fit failed: {out.stderr.strip()}", file=sys.stderr)
            return 1
        d = json.loads(out.stdout)["devices"][0]
        peak, low, naive = (
            d["peak_activation_bytes"],
            d["activation_lower_bound_bytes"],
            d["naive_activation_bytes"],
        )
        unknown = f"  ({d['unknown_tensors']} sizes unknown)" if d["unknown_tensors"] else ""
        print(
            f"{os.path.basename(os.path.dirname(path)) + '/' + os.path.basename(path):<44} "
            f"{peak / 1024:>8.1f} KiB {low / 1024:>9.1f} KiB {naive / 1024:>8.1f} KiB {naive / max(peak, 1):>18.2f}x{unknown}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
