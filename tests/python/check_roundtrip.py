#!/usr/bin/env python3
"""Check that WRITTEN is a faithful re-serialisation of ORIGINAL.

    python3 tests/python/check_roundtrip.py ORIGINAL.onnx WRITTEN.onnx

Exit 0 when everything holds; otherwise print every difference found and exit 1
(exit 2 on bad usage).

What is checked
---------------
1. onnx.checker on WRITTEN, by path (so external data next to it is resolved), with
   full_check=True (strict shape inference). If that fails and ORIGINAL fails the same
   check, the check is lowered to full_check=False; if ORIGINAL fails that too (e.g.
   unknown_op.onnx, external_escape/, external_missing/), the checker is skipped and a
   note says so. A check that ORIGINAL passes and WRITTEN fails is a difference.
2. Both files are loaded with onnx.load (external data read into raw_data and its
   location cleared, so a model that moves weights between inline and external storage
   still compares equal). If the external data of one cannot be read (missing file,
   location escaping the folder) both are compared as stored (load_external_data=False).
3. Named checks, each reported on its own: ir_version, producer_name, producer_version,
   domain, model_version, doc_string, opset_import, metadata_props, functions, the main
   graph's name/doc_string/inputs/outputs, every value_info entry of every graph
   (including sequence/map/optional types), every initializer of every graph (same
   TensorProto, and the same element bytes, compared bitwise so NaN == NaN), node
   count and op sequence.
4. Whole-model equality: ORIGINAL == WRITTEN as protobuf messages (or equal
   deterministic serialisations, which treats identical NaN bit patterns as equal).
   When they differ, a field-by-field walk prints the paths that differ.
"""

from __future__ import annotations

import hashlib
import os
import struct
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from google.protobuf.descriptor import FieldDescriptor

MAX_DIFFS = 60


def short(v) -> str:
    if isinstance(v, bytes):
        return f"<{len(v)} bytes sha256={hashlib.sha256(v).hexdigest()[:12]}>"
    s = repr(v)
    return s if len(s) <= 120 else s[:117] + "..."


def same_scalar(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b) or a == b
    return a == b


def label(msg, i: int) -> str:
    name = getattr(msg, "name", "") if hasattr(msg, "DESCRIPTOR") and "name" in msg.DESCRIPTOR.fields_by_name else ""
    if not name and hasattr(msg, "DESCRIPTOR") and "key" in msg.DESCRIPTOR.fields_by_name:
        name = msg.key
    if not name and hasattr(msg, "DESCRIPTOR") and "domain" in msg.DESCRIPTOR.fields_by_name:
        name = msg.domain or "ai.onnx"
    return f"[{i}]" + (f"({name})" if name else "")


def is_repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 5.28; `label` is gone in 7
        return bool(field.is_repeated)
    return field.label == FieldDescriptor.LABEL_REPEATED


def diff_messages(a, b, path: str, out: list[str]) -> None:
    """Field-by-field difference of two messages of the same type."""
    for field in a.DESCRIPTOR.fields:
        if len(out) >= MAX_DIFFS:
            return
        p = f"{path}.{field.name}" if path else field.name
        va, vb = getattr(a, field.name), getattr(b, field.name)
        if is_repeated(field):
            if len(va) != len(vb):
                out.append(f"{p}: {len(va)} entries in original, {len(vb)} in written")
            for i, (x, y) in enumerate(zip(va, vb)):
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    diff_messages(x, y, p + label(x, i), out)
                elif not same_scalar(x, y):
                    out.append(f"{p}[{i}]: {short(x)} != {short(y)}")
                    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE,
                                      FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64,
                                      FieldDescriptor.TYPE_UINT64):
                        break  # one element is enough for a numeric array
            continue
        has_presence = field.has_presence if hasattr(field, "has_presence") else True
        ha = a.HasField(field.name) if has_presence else True
        hb = b.HasField(field.name) if has_presence else True
        if ha != hb:
            out.append(f"{p}: {'set' if ha else 'unset'} in original, {'set' if hb else 'unset'} in written")
            continue
        if not ha:
            continue
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            diff_messages(va, vb, p, out)
        elif not same_scalar(va, vb):
            out.append(f"{p}: {short(va)} != {short(vb)}")


def subgraphs(graph: onnx.GraphProto, path: str):
    yield path, graph
    for i, n in enumerate(graph.node):
        for a in n.attribute:
            if a.HasField("g"):
                yield from subgraphs(a.g, f"{path}.node[{i}]({n.name or n.op_type}).{a.name}")
            for j, g in enumerate(a.graphs):
                yield from subgraphs(g, f"{path}.node[{i}]({n.name or n.op_type}).{a.name}[{j}]")


def load(path: str) -> tuple[onnx.ModelProto | None, bool, str]:
    """(model, external data loaded?, error)."""
    try:
        return onnx.load(path), True, ""
    except Exception as e:  # noqa: BLE001
        first = f"{type(e).__name__}: {e}"
    try:
        return onnx.load(path, load_external_data=False), False, first
    except Exception as e:  # noqa: BLE001
        return None, False, f"{type(e).__name__}: {e}"


def checker(path: str, full: bool) -> str:
    try:
        onnx.checker.check_model(path, full_check=full)
        return ""
    except Exception as e:  # noqa: BLE001
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def run_checker(orig_path: str, written_path: str, diffs: list[str], notes: list[str]) -> None:
    err = checker(written_path, True)
    if not err:
        notes.append("checker: full_check passed")
        return
    if not checker(orig_path, True):
        diffs.append(f"checker(full_check) fails on written but passes on original: {err}")
        return
    err2 = checker(written_path, False)
    if not err2:
        notes.append("checker: original fails full_check too; basic check passed")
        return
    if not checker(orig_path, False):
        diffs.append(f"checker fails on written but passes on original: {err2}")
        return
    notes.append(f"checker: skipped, original fails it too ({err2})")


def tensor_bytes(t: onnx.TensorProto) -> bytes | None:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    try:
        return np.ascontiguousarray(numpy_helper.to_array(t)).tobytes()
    except Exception:  # noqa: BLE001 - e.g. a type numpy_helper can't convert
        return None


def named_checks(o: onnx.ModelProto, w: onnx.ModelProto, diffs: list[str]) -> None:
    for f in ("ir_version", "producer_name", "producer_version", "domain", "model_version", "doc_string"):
        if getattr(o, f) != getattr(w, f):
            diffs.append(f"{f}: {short(getattr(o, f))} != {short(getattr(w, f))}")
    ops_o = [(x.domain, x.version) for x in o.opset_import]
    ops_w = [(x.domain, x.version) for x in w.opset_import]
    if ops_o != ops_w:
        diffs.append(f"opset_import: {ops_o} != {ops_w}")
    md_o = [(x.key, x.value) for x in o.metadata_props]
    md_w = [(x.key, x.value) for x in w.metadata_props]
    if md_o != md_w:
        diffs.append(f"metadata_props: {md_o} != {md_w}")
    if list(o.functions) != list(w.functions):
        diffs.append(f"functions: {len(o.functions)} in original, {len(w.functions)} in written, or contents differ")
    if list(o.training_info) != list(w.training_info):
        diffs.append("training_info differs")

    go, gw = o.graph, w.graph
    for f in ("name", "doc_string"):
        if getattr(go, f) != getattr(gw, f):
            diffs.append(f"graph.{f}: {short(getattr(go, f))} != {short(getattr(gw, f))}")
    for f in ("input", "output"):
        if list(getattr(go, f)) != list(getattr(gw, f)):
            diffs.append(f"graph.{f}: {[v.name for v in getattr(go, f)]} / types or order differ in written "
                         f"{[v.name for v in getattr(gw, f)]}")

    sub_o = list(subgraphs(go, "graph"))
    sub_w = dict(subgraphs(gw, "graph"))
    if len(sub_o) != len(sub_w):
        diffs.append(f"subgraph count: {len(sub_o)} != {len(sub_w)}")
    for p, g in sub_o:
        h = sub_w.get(p)
        if h is None:
            diffs.append(f"{p}: subgraph missing in written")
            continue
        vo = {v.name: v for v in g.value_info}
        vw = {v.name: v for v in h.value_info}
        for name, v in vo.items():
            if name not in vw:
                diffs.append(f"{p}.value_info '{name}' ({v.type.WhichOneof('value')}): missing in written")
            elif v != vw[name]:
                diffs.append(f"{p}.value_info '{name}': differs ({onnx.helper.printable_type(v.type)} vs "
                             f"{onnx.helper.printable_type(vw[name].type)})")
        for name in vw.keys() - vo.keys():
            diffs.append(f"{p}.value_info '{name}': added in written")
        io = {t.name: t for t in g.initializer}
        iw = {t.name: t for t in h.initializer}
        for name, t in io.items():
            u = iw.get(name)
            if u is None:
                diffs.append(f"{p}.initializer '{name}': missing in written")
                continue
            bo, bw = tensor_bytes(t), tensor_bytes(u)
            if t.data_type != u.data_type or list(t.dims) != list(u.dims):
                diffs.append(f"{p}.initializer '{name}': type/dims {t.data_type}{list(t.dims)} != "
                             f"{u.data_type}{list(u.dims)}")
            elif bo is None or bw is None:
                if t != u:
                    diffs.append(f"{p}.initializer '{name}': tensor differs (values not comparable: "
                                 f"external or malformed data)")
            elif bo != bw:
                diffs.append(f"{p}.initializer '{name}': element bytes differ")
            elif t != u:
                where = lambda x: ("external" if x.data_location == onnx.TensorProto.EXTERNAL else  # noqa: E731
                                   "raw_data" if x.HasField("raw_data") else "typed *_data")
                diffs.append(f"{p}.initializer '{name}': same values but stored differently "
                             f"({where(t)} vs {where(u)})")
        for name in iw.keys() - io.keys():
            diffs.append(f"{p}.initializer '{name}': added in written")
        if len(g.node) != len(h.node):
            diffs.append(f"{p}: {len(g.node)} nodes in original, {len(h.node)} in written")
        elif [n.op_type for n in g.node] != [n.op_type for n in h.node]:
            diffs.append(f"{p}: node op_type sequence differs")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} ORIGINAL.onnx WRITTEN.onnx", file=sys.stderr)
        return 2
    orig_path, written_path = argv[1], argv[2]
    diffs: list[str] = []
    notes: list[str] = []

    o, o_ext, o_err = load(orig_path)
    w, w_ext, w_err = load(written_path)
    if o is None or (not o.HasField("graph") and o.ir_version == 0):
        print(f"original {orig_path} is not an ONNX model: {o_err or 'no graph, no ir_version'}", file=sys.stderr)
        return 1
    if w is None:
        print(f"FAIL: cannot read written {written_path}: {w_err}")
        return 1
    if o_ext and not w_ext:
        diffs.append(f"written: external data unreadable ({w_err}) but original's is")
    if o_ext != w_ext:
        # compare like with like
        o = onnx.load(orig_path, load_external_data=False)
        if w_ext:
            w = onnx.load(written_path, load_external_data=False)
        notes.append("compared as stored (external data not loaded)")
    elif not o_ext:
        notes.append(f"external data not loaded: {o_err}")

    run_checker(orig_path, written_path, diffs, notes)
    named_checks(o, w, diffs)

    equal = o == w or o.SerializeToString(deterministic=True) == w.SerializeToString(deterministic=True)
    if not equal:
        walk: list[str] = []
        diff_messages(o, w, "", walk)
        if not walk:
            walk.append("messages differ (unknown fields or field order only)")
        diffs.append("ModelProto not equal; differing fields:\n" + "\n".join("      " + d for d in walk))

    for n in notes:
        print(f"note: {n}")
    if diffs:
        print(f"FAIL: {written_path} does not round-trip {orig_path}:")
        for d in diffs:
            print(f"  - {d}")
        return 1
    print(f"OK: {written_path} round-trips {orig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
