#!/usr/bin/env python3
"""Writes engine/data/onnx_op_schemas.json: every ONNX operator schema, with its history.

    python3 -m pip install onnx==1.23.2
    python3 tests/python/gen_op_schemas.py

The table comes from the `onnx` package (Apache-2.0), `onnx.defs.get_all_schemas_with_history()`.
The engine checks every model it writes against it (engine/src/schema.rs): each op exists in
the imported opset of its domain, the number of inputs and outputs, required attributes,
attributes the version does not know, and the element types of inputs whose type is known.

Format (compact, one op per line):
  {"onnx": VERSION, "ops": {"DOMAIN|OP": [VERSION_ENTRY, ...]}}
  VERSION_ENTRY = [since_version, deprecated (0/1), min_inputs, max_inputs, min_outputs,
                   max_outputs, inputs, outputs, constraints, attributes]
  inputs/outputs = [[name, option (0 single, 1 optional, 2 variadic), type], ...]
                   type: a constraint name ("T"), or a list of allowed element types
  constraints    = {"T": [element types]}; element types are TensorProto.DataType numbers,
                   -1 for non-tensor types (sequence, optional, map)
  attributes     = {"name": required (0/1)}
"""

import json
from pathlib import Path

import onnx
from onnx import TensorProto, defs

OUT = Path(__file__).resolve().parents[2] / "engine" / "data" / "onnx_op_schemas.json"
INT_MAX = 2**31 - 1


def elem(type_str: str) -> int:
    if type_str.startswith("tensor(") and type_str.endswith(")"):
        name = type_str[len("tensor("):-1].upper()
        name = {"DOUBLE": "DOUBLE", "FLOAT": "FLOAT"}.get(name, name)
        return TensorProto.DataType.Value(name)
    return -1


def formal(params, constraints):
    out = []
    for p in params:
        t = p.type_str
        out.append([p.name, int(p.option.value), t if t in constraints else [elem(t)]])
    return out


def main() -> None:
    ops: dict[str, list] = {}
    for s in defs.get_all_schemas_with_history():
        constraints = {c.type_param_str: sorted({elem(t) for t in c.allowed_type_strs})
                       for c in s.type_constraints}
        entry = [
            s.since_version,
            int(s.deprecated),
            s.min_input,
            min(s.max_input, INT_MAX),
            s.min_output,
            min(s.max_output, INT_MAX),
            formal(s.inputs, constraints),
            formal(s.outputs, constraints),
            constraints,
            {k: int(a.required) for k, a in sorted(s.attributes.items())},
        ]
        ops.setdefault(f"{s.domain}|{s.name}", []).append(entry)
    for entries in ops.values():
        entries.sort(key=lambda e: e[0])
    lines = [f'{{"onnx": "{onnx.__version__}", "ops": {{']
    items = sorted(ops.items())
    for i, (k, v) in enumerate(items):
        lines.append(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" + ("," if i + 1 < len(items) else ""))
    lines.append("}}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(ops)} ops)")


if __name__ == "__main__":
    main()
