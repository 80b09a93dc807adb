#!/usr/bin/env python3
"""How edgefit's time and memory grow with model size, next to onnxruntime's quantize_dynamic.

Builds float MLPs (MatMul + Add + Relu blocks of width 4096, 16.8M parameters each; random
weights, seed 0) of the given sizes — by default 1 block (16.8M parameters, 67 MB) and 6
blocks (100.7M, 403 MB) — and measures, each in a fresh process, wall time and peak resident
memory (ru_maxrss of the child) of:

- `edgefit inspect MODEL --json`                       (load + full analysis)
- `edgefit optimize MODEL --format weights-int8 --out`  (the new user's command: it also
  generates inputs, measures the export against the original on them, times both, and
  verifies the written file in onnxruntime and tract)
- onnxruntime `quantize_dynamic(weight_type=QInt8, per_channel=True)` (writes weights only,
  runs nothing)

    python3 bench/scale.py [--sizes 17,100] [--keep DIR]

Targets (issue 9): inspect peak <= 2x the file, export peak <= 3x the file, export time
within 2x of quantize_dynamic. EDGEFIT_BIN overrides the binary (default target/debug/edgefit).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np


def build_mlp(path, params_millions, width=4096):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    per_block = width * width + width
    blocks = max(1, round(params_millions * 1e6 / per_block))
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    x = "input"
    for b in range(blocks):
        w = (rng.standard_normal((width, width), dtype=np.float32) / np.sqrt(width)).astype(np.float32)
        bias = (rng.standard_normal(width, dtype=np.float32) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{b}"), numpy_helper.from_array(bias, f"b{b}")]
        nodes += [
            helper.make_node("MatMul", [x, f"w{b}"], [f"mm{b}"], name=f"matmul{b}"),
            helper.make_node("Add", [f"mm{b}", f"b{b}"], [f"add{b}"], name=f"add{b}"),
        ]
        if b + 1 < blocks:
            nodes.append(helper.make_node("Relu", [f"add{b}"], [f"relu{b}"], name=f"relu{b}"))
            x = f"relu{b}"
        else:
            x = f"add{b}"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return blocks * per_block


ORT_DYNAMIC = """
import sys
from onnxruntime.quantization import quantize_dynamic, QuantType
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8, per_channel=True)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="17,100", help="millions of parameters (rounded to whole 16.8M blocks), comma-separated")
    parser.add_argument("--keep", help="folder for the models and exports (default: a temp dir)")
    args = parser.parse_args()
    binary = os.environ.get("EDGEFIT_BIN", "target/debug/edgefit")
    work = args.keep or tempfile.mkdtemp(prefix="edgefit-scale-")
    os.makedirs(work, exist_ok=True)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        model = os.path.join(work, f"mlp{size}m.onnx")
        if not os.path.exists(model):
            build_mlp(model, size)
        file_bytes = os.path.getsize(model)
        params = max(1, round(size * 1e6 / (4096 * 4096 + 4096))) * (4096 * 4096 + 4096)
        # Each measurement runs in its own child so ru_maxrss is that child's peak: a fresh
        # Python process wraps every command (RUSAGE_CHILDREN is the max over all children).
        def measured(argv):
            wrapper = (
                "import resource,subprocess,sys,time,json;"
                "t=time.perf_counter();"
                "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.PIPE);"
                "w=time.perf_counter()-t;"
                "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024;"
                "sys.stderr.write(p.stderr.decode(errors='replace')[-1500:] if p.returncode not in (0,3) else '');"
                "print(json.dumps([p.returncode,w,r]))"
            )
            out = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True)
            if out.stderr:
                sys.stderr.write(out.stderr)
            return json.loads(out.stdout)

        inspect = measured([binary, "inspect", model, "--json"])
        export = measured([binary, "optimize", model, "--format", "weights-int8",
                           "--out", os.path.join(work, f"mlp{size}m.w8.onnx")])
        ort = measured([sys.executable, "-c", ORT_DYNAMIC, model,
                        os.path.join(work, f"mlp{size}m.ort-dyn.onnx")])
        rows.append((params, file_bytes, inspect, export, ort))

    print(f"edgefit: {binary}; file = model size on disk; peak = peak resident memory of the process")
    print()
    print("| model | file MB | inspect s | inspect peak (× file) | weights-int8 export s | export peak (× file) "
          "| ORT quantize_dynamic s | ORT peak (× file) | export time / ORT |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, fb, (ic, iw, ip), (ec, ew, ep), (oc, ow, op) in rows:
        mb = fb / 1e6
        def cell(code, wall):
            return f"{wall:.1f}" + ("" if code in (0, 3) else f" (exit {code})")
        print(f"| MLP {size / 1e6:.1f}M params | {mb:.0f} | {cell(ic, iw)} | {ip/1e9:.2f} GB ({ip/fb:.1f}×) "
              f"| {cell(ec, ew)} | {ep/1e9:.2f} GB ({ep/fb:.1f}×) | {cell(oc, ow)} "
              f"| {op/1e9:.2f} GB ({op/fb:.1f}×) | {ew/ow:.1f}× |")


if __name__ == "__main__":
    main()
