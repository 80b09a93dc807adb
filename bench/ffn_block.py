"""Writes transformer feed-forward blocks (BERT-base shapes: 768 -> 3072 -> 768, ReLU, two
blocks, random normal weights scaled 1/sqrt(fan-in), float32) for the dynamic-int8 latency
figures in the README: `python3 bench/ffn_block.py OUT_DIR` writes ffn_768x3072_t1.onnx (one
token) and ffn_768x3072_t128.onnx (128 tokens), ~75 MB each. Needs `onnx` and `numpy`.
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def ffn(path, tokens, width=768, hidden=3072, blocks=2, seed=0):
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(blocks):
        w1 = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
        w2 = (rng.standard_normal((hidden, width)) / np.sqrt(hidden)).astype(np.float32)
        inits += [numpy_helper.from_array(w1, f"w1_{i}"), numpy_helper.from_array(w2, f"w2_{i}")]
        nodes += [
            helper.make_node("MatMul", [x, f"w1_{i}"], [f"h{i}"], name=f"fc1_{i}"),
            helper.make_node("Relu", [f"h{i}"], [f"r{i}"], name=f"relu_{i}"),
            helper.make_node("MatMul", [f"r{i}", f"w2_{i}"], [f"y{i}"], name=f"fc2_{i}"),
        ]
        x = f"y{i}"
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, width])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, tokens, width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "."
    os.makedirs(out, exist_ok=True)
    for tokens in (1, 128):
        ffn(os.path.join(out, f"ffn_768x3072_t{tokens}.onnx"), tokens)
