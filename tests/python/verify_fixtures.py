#!/usr/bin/env python3
"""Check that every file in tests/fixtures/ is what tests/fixtures/README.md says it is.

    python3 tests/python/verify_fixtures.py [FIXTURE_DIR]

Loads each fixture back, runs onnx.checker where the fixture should pass it, runs
onnxruntime on those that should run (random input, fixed seed) and asserts the
fixture-specific claims (storage fields, Constant attribute kinds, subgraph weights,
external data layout, unparsable bad files...). Prints one line per fixture and
"N passed, N failed" at the end; exit 1 if any failed.
Needs onnx, numpy and onnxruntime.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np
import onnx
from onnx import TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.path.join(HERE, "..", "fixtures")
MAX_BYTES = 200 * 1024


def p(*parts: str) -> str:
    return os.path.join(FIX, *parts)


def load(name: str, external: bool = True) -> onnx.ModelProto:
    return onnx.load(p(name), load_external_data=external)


def check(name: str) -> None:
    onnx.checker.check_model(p(name), full_check=True)


def run(name: str, feeds: dict | None = None) -> list:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(p(name), so, providers=["CPUExecutionProvider"])
    r = np.random.default_rng(0)
    feeds = dict(feeds or {})
    np_types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
                "tensor(int64)": np.int64}
    for i in sess.get_inputs():
        if i.name in feeds:
            continue
        shape = [d if isinstance(d, int) else 2 for d in i.shape]
        feeds[i.name] = r.standard_normal(shape).astype(np_types[i.type])
    return sess.run(None, feeds)


def unparsable(name: str) -> None:
    with open(p(name), "rb") as f:
        data = f.read()
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception:  # noqa: BLE001
        return
    raise AssertionError(f"{name} parses")


def all_nodes(g: onnx.GraphProto):
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.HasField("g"):
                yield from all_nodes(a.g)
            for sg in a.graphs:
                yield from all_nodes(sg)


# --------------------------------------------------------------------------- claims


def t_constant_weights():
    check("constant_weights.onnx")
    m = load("constant_weights.onnx")
    assert len(m.graph.initializer) == 0
    kinds = {a.name for n in m.graph.node if n.op_type == "Constant" for a in n.attribute}
    assert kinds == {"value", "value_float", "value_ints"}, kinds
    (y,) = run("constant_weights.onnx")
    assert y.shape == (1, 4) and np.isfinite(y).all()


def t_subgraph_weights():
    check("subgraph_weights.onnx")
    m = load("subgraph_weights.onnx")
    ops = [n.op_type for n in m.graph.node]
    assert "If" in ops and "Loop" in ops and "Gemm" in ops
    if_node = next(n for n in m.graph.node if n.op_type == "If")
    branches = {a.name: a.g for a in if_node.attribute}
    for b in ("then_branch", "else_branch"):
        g = branches[b]
        assert len(g.initializer) == 1 and any(n.op_type == "Constant" for n in g.node)
        assert any(n.op_type == "MatMul" for n in g.node)
    loop = next(n for n in m.graph.node if n.op_type == "Loop")
    assert any(n.op_type == "Constant" for n in loop.attribute[0].g.node)
    assert {t.name for t in m.graph.initializer} >= {"gemm_w", "gemm_b"}
    (y,) = run("subgraph_weights.onnx")
    assert y.shape == (1, 4)


def t_external_data():
    check("external_data/model.onnx")
    m = load("external_data/model.onnx", external=False)
    for t in m.graph.initializer:
        assert t.data_location == TensorProto.EXTERNAL and not t.raw_data
        assert dict((e.key, e.value) for e in t.external_data)["location"] == "weights.bin"
    assert os.path.getsize(p("external_data/weights.bin")) == 4 * (108 + 4 + 640 + 10)
    (y,) = run("external_data/model.onnx")
    assert y.shape == (1, 10)


def t_external_missing():
    assert not os.path.exists(p("external_missing/weights.bin"))
    m = load("external_missing/model.onnx", external=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in m.graph.initializer)
    try:
        load("external_missing/model.onnx")
    except Exception:  # noqa: BLE001
        return
    raise AssertionError("loading external data should fail")


def t_external_escape():
    assert os.listdir(p("external_escape")) == ["model.onnx"]
    assert not os.path.exists(p("escape.bin"))
    m = load("external_escape/model.onnx", external=False)
    locs = [e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"]
    assert locs == ["../escape.bin"], locs
    try:
        onnx.checker.check_model(p("external_escape/model.onnx"))
    except onnx.checker.ValidationError as e:
        assert "outside" in str(e)
    else:
        raise AssertionError("checker accepted an escaping location")


def t_metadata():
    check("metadata.onnx")
    m = load("metadata.onnx")
    assert m.doc_string and m.producer_name == "edgefit-fixtures" and m.model_version == 7
    assert {e.key: e.value for e in m.metadata_props} == {"author": "edgefit", "license": "MIT"}
    vt = {v.name: v.type.WhichOneof("value") for v in m.graph.value_info}
    assert vt["seq"] == "sequence_type" and vt["opt"] == "optional_type"
    assert m.graph.value_info[3].type.sequence_type.elem_type.WhichOneof("value") == "map_type"
    assert m.graph.node[0].doc_string
    dims = [d.dim_param for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "image_width"]
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    (y,) = run("metadata.onnx", {"x": x})
    assert np.allclose(y, np.maximum(x, 0))


def t_fp16():
    check("fp16_weights.onnx")
    m = load("fp16_weights.onnx")
    assert {t.data_type for t in m.graph.initializer} == {TensorProto.FLOAT16}
    (y,) = run("fp16_weights.onnx")
    assert y.shape == (1, 4)


def t_bf16():
    check("bf16_weights.onnx")
    m = load("bf16_weights.onnx")
    assert m.graph.initializer[0].data_type == TensorProto.BFLOAT16
    assert m.graph.node[0].op_type == "Cast"
    (y,) = run("bf16_weights.onnx")
    assert y.shape == (1, 8)


def t_double():
    check("double_weights.onnx")
    m = load("double_weights.onnx")
    assert {t.data_type for t in m.graph.initializer} == {TensorProto.DOUBLE}
    (y,) = run("double_weights.onnx")
    assert y.dtype == np.float64


def t_int():
    check("int_weights.onnx")
    m = load("int_weights.onnx")
    t = {x.name: x for x in m.graph.initializer}
    assert t["emb_table"].float_data and not t["emb_table"].raw_data and list(t["emb_table"].dims) == [100, 16]
    assert t["fixed_ids"].int64_data and not t["fixed_ids"].raw_data
    assert t["bias_i8"].data_type == TensorProto.INT8 and t["bias_i8"].int32_data and not t["bias_i8"].raw_data
    ids = np.array([0, 1, 2, 99], dtype=np.int64)
    (y,) = run("int_weights.onnx", {"ids": ids})
    assert y.shape == (4, 16)


def t_quantized():
    check("quantized.onnx")
    m = load("quantized.onnx")
    assert m.opset_import[0].version == 13
    ops = [n.op_type for n in m.graph.node]
    assert ops == ["QuantizeLinear", "QLinearConv", "DequantizeLinear", "DequantizeLinear", "Conv"], ops
    dq = m.graph.node[3]
    assert [a.i for a in dq.attribute if a.name == "axis"] == [0]
    (y,) = run("quantized.onnx")
    assert y.shape == (1, 8, 8, 8) and np.isfinite(y).all()


def t_nan():
    check("nan_weights.onnx")
    w = onnx.numpy_helper.to_array(load("nan_weights.onnx").graph.initializer[0])
    assert np.isnan(w).any() and np.isposinf(w).any()
    run("nan_weights.onnx")


def t_unknown_op():
    m = load("unknown_op.onnx")
    n = m.graph.node[1]
    assert n.op_type == "FrobnicateXYZ" and n.domain == "com.example"
    assert ("com.example", 1) in [(o.domain, o.version) for o in m.opset_import]


def t_symbolic():
    check("symbolic_dims.onnx")
    m = load("symbolic_dims.onnx")
    d = m.graph.input[0].type.tensor_type.shape.dim
    assert [x.dim_param or x.dim_value for x in d] == ["batch", 3, "height", "width"]
    (y,) = run("symbolic_dims.onnx")
    assert y.shape == (2, 4, 2, 2)


def t_big():
    check("big_dims.onnx")
    m = load("big_dims.onnx")
    dims = [x.dim_value for x in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] * dims[1] >= 2 ** 64


def t_bad():
    assert os.path.getsize(p("empty.onnx")) == 0
    unparsable("truncated.onnx")
    unparsable("not_onnx.onnx")
    unparsable("corrupt.onnx")
    with open(p("not_onnx.onnx"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(p("corrupt.onnx"), "rb") as f:
        assert b"\xff" * 16 in f.read()


def t_lstm():
    check("lstm.onnx")
    y, yh, yc = run("lstm.onnx")
    assert y.shape == (5, 1, 1, 16) and yh.shape == (1, 1, 16) and yc.shape == (1, 1, 16)


def t_gru():
    check("gru.onnx")
    y, yh = run("gru.onnx")
    assert y.shape == (5, 1, 1, 16) and yh.shape == (1, 1, 16)


def t_sizes():
    for root, _d, files in os.walk(FIX):
        for f in files:
            if f.endswith((".onnx", ".bin")):
                assert os.path.getsize(os.path.join(root, f)) < MAX_BYTES, f


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("t_")]


def main() -> int:
    passed = failed = 0
    for t in TESTS:
        try:
            t()
            print(f"ok   {t.__name__[2:]}")
            passed += 1
        except Exception:  # noqa: BLE001
            print(f"FAIL {t.__name__[2:]}")
            traceback.print_exc()
            failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
