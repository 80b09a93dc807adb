"""Independent reference for `edgefit fit`'s activation memory: the bytes alive while each node
runs, over the file's node order, from onnx's own shape inference.

Rules (the same ones the engine documents): an activation lives from the node that writes it
(graph inputs from the start) to the last node that reads it (graph outputs to the end); a
BatchNormalization whose input only it reads and a Conv writes is fused into that Conv (the
Conv's own output disappears, the normalised output is born at the Conv); Constant nodes write
weights, not activations. Prints JSON: {"lower_bound_bytes": N, "naive_bytes": N}.
"""

import json
import sys

import numpy as np
import onnx
from onnx import shape_inference


def main(path):
    model = shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    sizes = {}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        t = info.type.tensor_type
        dims = [d.dim_value for d in t.shape.dim]
        if any(d <= 0 for d in dims):
            continue
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).itemsize
        sizes[info.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    nodes = list(graph.node)
    outputs = {o.name for o in graph.output}
    born, last = {}, {}
    for i in graph.input:
        if i.name not in weights:
            born[i.name] = 0
            last[i.name] = 0
    readers = {}
    for n in nodes:
        for x in n.input:
            readers[x] = readers.get(x, 0) + 1
    producer_op = {}
    for p, n in enumerate(nodes):
        if n.op_type == "Constant":
            continue
        for x in n.input:
            if x in born:
                last[x] = max(last[x], p)
        for y in n.output:
            born[y] = p
            last[y] = p
            producer_op[y] = (p, n.op_type)
    gone = set()
    for p, n in enumerate(nodes):
        if n.op_type == "BatchNormalization":
            x = n.input[0]
            if x in producer_op and producer_op[x][1] == "Conv" and readers.get(x) == 1 and x not in outputs:
                gone.add(x)
                born[n.output[0]] = producer_op[x][0]
    end = len(nodes) - 1
    for y in outputs:
        if y in last:
            last[y] = end
    live = [0] * len(nodes)
    naive = 0
    for name, b in born.items():
        if name in gone or name not in sizes:
            continue
        naive += sizes[name]
        for step in range(b, max(last[name], b) + 1):
            live[step] += sizes[name]
    print(json.dumps({"lower_bound_bytes": max(live), "naive_bytes": naive}))


if __name__ == "__main__":
    main(sys.argv[1])
