#!/usr/bin/env python3
"""Independent reference counts for an ONNX model, printed as ONE JSON object.

    python3 tests/python/onnx_counts.py MODEL.onnx

Uses only the `onnx` package. The model is loaded with load_external_data=False:
every count comes from tensor dims, so a model whose external weights file is missing
(or points outside its folder) is still counted.

Keys
----
parameters
    Number of elements (any element type) of every weight tensor, over the main graph
    and every subgraph, recursively through graph-valued attributes (`g`, `graphs`:
    If/Loop/Scan bodies, at any depth):
      * every initializer: product of its dims (a 0-d tensor counts 1);
      * every sparse_initializer: product of its dense `dims`;
      * every `Constant` node: `value` -> product of the tensor's dims;
        `sparse_value` -> product of its dense dims; `value_float`, `value_int`,
        `value_string` -> 1; `value_floats`, `value_ints`, `value_strings` -> length.
nodes
    Number of NodeProtos in the main graph and all subgraphs (Constant nodes and the
    If/Loop/Scan nodes themselves included).
ops
    {op_type: count} over the same nodes (op_type only, domain ignored).
inputs / outputs
    Main graph inputs that are not initializers / main graph outputs, in order, as
    {"name", "dtype", "shape"}. dtype is a numpy-style name: float32, float16, bfloat16,
    float64, int8, uint8, int16, uint16, int32, int64, uint32, uint64, bool, string,
    complex64, complex128 (also float8e4m3fn, float8e4m3fnuz, float8e5m2,
    float8e5m2fnuz, uint4, int4, float4e2m1, ...); "undefined" for elem_type 0.
    Non-tensor types are written as "sequence(<inner>)", "optional(<inner>)",
    "map(<key>,<value>)", "sparse_tensor(<dtype>)" with shape null.
    shape: null when the type has no shape; otherwise a list with an int for dim_value,
    a string for dim_param, null for a dim that has neither.
weight_bytes
    Sum over the same tensors as `parameters` of ceil(elements * bits / 8), bits being
    the element size (float32 32, float16/bfloat16 16, float64 64, int8 8, bool 8,
    complex64 64, complex128 128, 4-bit types 4, ...). string tensors count 0.
    `value_float` counts 4 bytes, `value_int`/`value_ints` 8 bytes per element (int64),
    `value_floats` 4 bytes per element, `value_string(s)` 0.
macs
    Multiply-accumulates from static shapes after
    onnx.shape_inference.infer_shapes(model, data_prop=True) (non-strict). Shapes known
    to a node are: its graph's inputs/outputs/value_info, initializer dims, Constant
    outputs, and (for subgraph nodes) everything visible in the enclosing graphs.
    Every node is counted once (static count: both If branches count, a Loop body is
    counted once whatever the trip count). Only these op types count, and a node counts
    only if every dim its formula uses is a known integer:
      * Conv (X [N,Cin,s...], W [Cout, Cin/group, k...], Y [N,Cout,o...]):
            N * Cout * prod(o) * (Cin/group) * prod(k)
        with N, o from Y, Cout = W[0], Cin/group = W[1], k = W[2:].
      * ConvTranspose (X [N,Cin,s...], W [Cin, Cout/group, k...]):
            N * Cin * prod(s) * (Cout/group) * prod(k)
        with N, s from X, Cin = W[0], Cout/group = W[1], k = W[2:].
      * Gemm (A [M,K] or [K,M] if transA; B [K,N] or [N,K] if transB):  M * N * K
        (bias and alpha/beta not counted).
      * MatMul (A [...,M,K], B [...,K,N], numpy semantics):  batch * M * N * K
        where batch = prod(broadcast(A[:-2], B[:-2])); a 1-D A means M=1 and no batch
        dims from A, a 1-D B means N=1 and no batch dims from B.
    Other ops (QLinearConv, MatMulInteger, LSTM, GRU, ...) count 0 and are not listed.
    Values are exact Python ints: they can exceed 2**64 (see big_dims.onnx, whose
    MatMul gives 2**127).

Exit status: 0 with the JSON on stdout; 1 with a message on stderr if the file does
not decode as a ModelProto or decodes to one with neither graph nor ir_version (an
empty file decodes to an empty message); 2 on bad usage.
macs_by_node
    {key: macs} for each node counted in `macs`. key is the node name, or
    "#<index>:<op_type>" for an unnamed node, index being its position in the pre-order
    walk (a node, then the subgraphs of its attributes in attribute order, then the next
    node). A name used twice gets "#<index>" appended on its second and later uses.
macs_unknown
    Keys (same scheme) of Conv/ConvTranspose/Gemm/MatMul nodes whose MACs could not be
    computed because some needed dim is unknown or symbolic.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Iterator

import onnx
from onnx import AttributeProto, GraphProto, TensorProto, TypeProto

DTYPE = {
    TensorProto.UNDEFINED: ("undefined", 0),
    TensorProto.FLOAT: ("float32", 32),
    TensorProto.UINT8: ("uint8", 8),
    TensorProto.INT8: ("int8", 8),
    TensorProto.UINT16: ("uint16", 16),
    TensorProto.INT16: ("int16", 16),
    TensorProto.INT32: ("int32", 32),
    TensorProto.INT64: ("int64", 64),
    TensorProto.STRING: ("string", 0),
    TensorProto.BOOL: ("bool", 8),
    TensorProto.FLOAT16: ("float16", 16),
    TensorProto.DOUBLE: ("float64", 64),
    TensorProto.UINT32: ("uint32", 32),
    TensorProto.UINT64: ("uint64", 64),
    TensorProto.COMPLEX64: ("complex64", 64),
    TensorProto.COMPLEX128: ("complex128", 128),
    TensorProto.BFLOAT16: ("bfloat16", 16),
}
# newer element types, only if this onnx knows them
for _attr, _name, _bits in (
    ("FLOAT8E4M3FN", "float8e4m3fn", 8),
    ("FLOAT8E4M3FNUZ", "float8e4m3fnuz", 8),
    ("FLOAT8E5M2", "float8e5m2", 8),
    ("FLOAT8E5M2FNUZ", "float8e5m2fnuz", 8),
    ("UINT4", "uint4", 4),
    ("INT4", "int4", 4),
    ("FLOAT4E2M1", "float4e2m1", 4),
    ("FLOAT8E8M0", "float8e8m0", 8),
    ("UINT2", "uint2", 2),
    ("INT2", "int2", 2),
):
    if hasattr(TensorProto, _attr):
        DTYPE[getattr(TensorProto, _attr)] = (_name, _bits)


def dtype_name(elem: int) -> str:
    return DTYPE.get(elem, (f"unknown({elem})", 0))[0]


def nbytes(elem: int, count: int) -> int:
    bits = DTYPE.get(elem, ("", 0))[1]
    return (count * bits + 7) // 8


def prod(dims) -> int:
    return math.prod(int(d) for d in dims)


# --------------------------------------------------------------------------- walking


def subgraphs(node: onnx.NodeProto) -> Iterator[GraphProto]:
    for a in node.attribute:
        if a.HasField("g"):
            yield a.g
        yield from a.graphs


def walk(graph: GraphProto) -> Iterator[tuple[onnx.NodeProto, GraphProto]]:
    """Pre-order: node, then its subgraphs' nodes, then the next node."""
    for n in graph.node:
        yield n, graph
        for sg in subgraphs(n):
            yield from walk(sg)


def all_graphs(graph: GraphProto) -> Iterator[GraphProto]:
    yield graph
    for n in graph.node:
        for sg in subgraphs(n):
            yield from all_graphs(sg)


def constant_tensor(node: onnx.NodeProto) -> tuple[int, int]:
    """(elements, bytes) held by a Constant node."""
    elems = byts = 0
    for a in node.attribute:
        if a.name == "value":
            n = prod(a.t.dims)
            elems, byts = elems + n, byts + nbytes(a.t.data_type, n)
        elif a.name == "sparse_value":
            n = prod(a.sparse_tensor.dims)
            elems, byts = elems + n, byts + nbytes(a.sparse_tensor.values.data_type, n)
        elif a.name == "value_float":
            elems, byts = elems + 1, byts + 4
        elif a.name == "value_int":
            elems, byts = elems + 1, byts + 8
        elif a.name == "value_string":
            elems += 1
        elif a.name == "value_floats":
            elems, byts = elems + len(a.floats), byts + 4 * len(a.floats)
        elif a.name == "value_ints":
            elems, byts = elems + len(a.ints), byts + 8 * len(a.ints)
        elif a.name == "value_strings":
            elems += len(a.strings)
    return elems, byts


def weights(model: onnx.ModelProto) -> tuple[int, int]:
    params = byts = 0
    for g in all_graphs(model.graph):
        for t in g.initializer:
            n = prod(t.dims)
            params, byts = params + n, byts + nbytes(t.data_type, n)
        for s in g.sparse_initializer:
            n = prod(s.dims)
            params, byts = params + n, byts + nbytes(s.values.data_type, n)
        for n in g.node:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                e, b = constant_tensor(n)
                params, byts = params + e, byts + b
    return params, byts


# --------------------------------------------------------------------------- types


def shape_of(tt) -> list | None:
    if not tt.HasField("shape"):
        return None
    out = []
    for d in tt.shape.dim:
        which = d.WhichOneof("value")
        out.append(d.dim_value if which == "dim_value" else d.dim_param if which == "dim_param" else None)
    return out


def type_name(t: TypeProto) -> str:
    which = t.WhichOneof("value")
    if which == "tensor_type":
        return dtype_name(t.tensor_type.elem_type)
    if which == "sparse_tensor_type":
        return f"sparse_tensor({dtype_name(t.sparse_tensor_type.elem_type)})"
    if which == "sequence_type":
        return f"sequence({type_name(t.sequence_type.elem_type)})"
    if which == "optional_type":
        return f"optional({type_name(t.optional_type.elem_type)})"
    if which == "map_type":
        return f"map({dtype_name(t.map_type.key_type)},{type_name(t.map_type.value_type)})"
    return "undefined"


def io_entry(vi: onnx.ValueInfoProto) -> dict:
    t = vi.type
    which = t.WhichOneof("value")
    shape = shape_of(t.tensor_type) if which == "tensor_type" else (
        shape_of(t.sparse_tensor_type) if which == "sparse_tensor_type" else None)
    return {"name": vi.name, "dtype": type_name(t), "shape": shape}


# --------------------------------------------------------------------------- MACs


def known(dims) -> bool:
    return dims is not None and all(isinstance(d, int) and not isinstance(d, bool) for d in dims)


def graph_shapes(graph: GraphProto, parent: dict) -> dict:
    shapes = dict(parent)
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.WhichOneof("value") == "tensor_type":
            shapes[vi.name] = shape_of(vi.type.tensor_type)
    for t in graph.initializer:
        shapes[t.name] = list(t.dims)
    for s in graph.sparse_initializer:
        shapes[s.values.name] = list(s.dims)
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    shapes[n.output[0]] = list(a.t.dims)
                elif a.name == "sparse_value":
                    shapes[n.output[0]] = list(a.sparse_tensor.dims)
                elif a.name in ("value_float", "value_int", "value_string"):
                    shapes[n.output[0]] = []
                elif a.name in ("value_floats", "value_ints", "value_strings"):
                    shapes[n.output[0]] = [len(a.floats) + len(a.ints) + len(a.strings)]
    return shapes


def attr_int(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return default


def node_macs(node: onnx.NodeProto, shapes: dict) -> int | None:
    def s(i: int, outputs: bool = False):
        names = node.output if outputs else node.input
        if i >= len(names) or not names[i]:
            return None
        return shapes.get(names[i])

    op = node.op_type
    if op == "Conv":
        w, y = s(1), s(0, outputs=True)
        if not (known(w) and known(y)) or len(w) < 3 or len(y) != len(w):
            return None
        return y[0] * w[0] * prod(y[2:]) * w[1] * prod(w[2:])
    if op == "ConvTranspose":
        x, w = s(0), s(1)
        if not (known(x) and known(w)) or len(w) < 3 or len(x) != len(w):
            return None
        return x[0] * w[0] * prod(x[2:]) * w[1] * prod(w[2:])
    if op == "Gemm":
        a, b = s(0), s(1)
        if not (known(a) and known(b)) or len(a) != 2 or len(b) != 2:
            return None
        m, k = (a[1], a[0]) if attr_int(node, "transA", 0) else (a[0], a[1])
        n = b[0] if attr_int(node, "transB", 0) else b[1]
        return m * n * k
    if op == "MatMul":
        a, b = s(0), s(1)
        if not (known(a) and known(b)) or not a or not b:
            return None
        if len(a) == 1:
            m, k, abatch = 1, a[0], []
        else:
            m, k, abatch = a[-2], a[-1], a[:-2]
        if len(b) == 1:
            n, bbatch = 1, []
        else:
            n, bbatch = b[-1], b[:-2]
        batch = 1
        la, lb = len(abatch), len(bbatch)
        for i in range(max(la, lb)):
            da = abatch[la - 1 - i] if i < la else 1
            db = bbatch[lb - 1 - i] if i < lb else 1
            batch *= max(da, db) if 1 in (da, db) else da
        return batch * m * n * k
    return None


MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def macs(model: onnx.ModelProto) -> tuple[int, dict, list]:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - fall back to the shapes the file already declares
        inferred = model
    by_node: dict[str, int] = {}
    unknown: list[str] = []
    seen: set[str] = set()
    counter = [0]

    def visit(graph: GraphProto, parent: dict) -> None:
        shapes = graph_shapes(graph, parent)
        for n in graph.node:
            idx = counter[0]
            counter[0] += 1
            key = n.name if n.name else f"#{idx}:{n.op_type}"
            if key in seen:
                key = f"{key}#{idx}"
            seen.add(key)
            if n.op_type in MAC_OPS and n.domain in ("", "ai.onnx"):
                v = node_macs(n, shapes)
                if v is None:
                    unknown.append(key)
                else:
                    by_node[key] = v
            for sg in subgraphs(n):
                visit(sg, shapes)

    visit(inferred.graph, {})
    return sum(by_node.values()), by_node, unknown


# --------------------------------------------------------------------------- main


def counts(model: onnx.ModelProto) -> dict:
    params, byts = weights(model)
    ops: dict[str, int] = {}
    nodes = 0
    for n, _g in walk(model.graph):
        nodes += 1
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    init_names = {t.name for t in model.graph.initializer} | {s.values.name for s in model.graph.sparse_initializer}
    total, by_node, unknown = macs(model)
    return {
        "parameters": params,
        "nodes": nodes,
        "ops": dict(sorted(ops.items())),
        "inputs": [io_entry(v) for v in model.graph.input if v.name not in init_names],
        "outputs": [io_entry(v) for v in model.graph.output],
        "weight_bytes": byts,
        "macs": total,
        "macs_by_node": by_node,
        "macs_unknown": unknown,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} MODEL.onnx", file=sys.stderr)
        return 2
    try:
        model = onnx.load(argv[1], load_external_data=False)
    except Exception as e:  # noqa: BLE001 - report, don't trace back
        print(f"error: {argv[1]}: not a readable ONNX model: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    # zero bytes (or only unknown fields) decode as an empty ModelProto: not a model
    if not model.HasField("graph") and model.ir_version == 0:
        print(f"error: {argv[1]}: not an ONNX model (no graph, no ir_version)", file=sys.stderr)
        return 1
    print(json.dumps(counts(model), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
