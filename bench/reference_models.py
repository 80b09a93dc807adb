#!/usr/bin/env python3
"""Reference architectures of the models in bench/published-latency.csv, as ONNX files.

    python3 bench/reference_models.py OUT_DIR [--only NAME ...] [--json]

Every model is built layer by layer from its published definition (sources below), opset 13,
batch 1, NCHW, at the published input resolution, with ALL-ZERO float32 weights: a latency
estimate depends only on the architecture (shapes, MACs, bytes), and zeros keep nothing big in
git (the files themselves are written to OUT_DIR and never committed). BatchNormalization is
folded into the preceding Conv (a Conv bias), as TFLite, X-CUBE-AI, ncnn and onnxruntime all do
at load time; ReLU6 is `Clip(0, 6)`; depthwise convolutions are `Conv` with `group = channels`.

For each model the script prints the parameter count and MACs it computed while building the
graph, next to the figure published for that architecture, and, when the edgefit binary exists
(`EDGEFIT_BIN`, default target/debug/edgefit), what `edgefit inspect FILE --json` reports
(`parameters`, `macs`) for the written file.

Needs only `pip install onnx numpy`.

Sources of the architectures:
- resnet8_cifar10, mobilenet_v1_025_vww96, dscnn_kws: the MLPerf Tiny reference models,
  github.com/mlcommons/tiny benchmark/training/{image_classification/keras_model.py
  (resnet_v1_eembc, num_filters=16 as of the v1.x releases, commit bceb91c),
  visual_wake_words/vww_model.py (mobilenet_v1, alpha 0.25, 96x96, 2 classes, ReLU),
  keyword_spotting/keras_model.py (ds_cnn; input 49x10x1 from kws_util.py defaults: 16 kHz,
  1000 ms clip, 30 ms window, 20 ms stride, 10 MFCC; 12 labels)}. Keras `padding='same'` is
  TensorFlow SAME padding (the extra row/column goes bottom/right), reproduced here.
- mobilenet_v1_224, mobilenet_v2_224: the TensorFlow MobileNets (1.0 width, 224x224, ReLU6,
  1001-way classifier as a 1x1 conv), as in google/XNNPACK bench/subgraph/fp32-mobilenet-v2.cc
  (v64_dims = {1, 1, 1, 1001}) which the XNNPACK README table was measured with. ncnn's
  Caffe MobileNets (benchmark/models/mobilenet*.param) have the same layer shapes with ReLU and
  1000 classes (0.03% fewer MACs).
- resnet50_v1_caffe: ResNet-50 as in ncnn benchmark/models/resnet50.param (the original
  MSRA/Caffe ResNet-50: the stride-2 of each downsampling block sits on the first 1x1 conv,
  `res3a_branch2a ... 3=2`, not on the 3x3 as in torchvision's "v1.5"; max pool with Caffe's
  ceil rounding, 112 -> 56). Same 25.6M parameters as v1.5, 3.87 GMACs instead of 4.09.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


class Builder:
    """Builds an NCHW graph of zero-weight layers, tracking shapes, parameters and MACs."""

    def __init__(self, name: str, input_shape: tuple[int, ...]):
        self.name = name
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.params = 0
        self.macs = 0
        self.counter = 0
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))
        self.shapes: dict[str, tuple[int, ...]] = {"input": tuple(input_shape)}

    def _name(self, kind: str) -> str:
        self.counter += 1
        return f"{kind.lower()}_{self.counter}"

    def _weight(self, name: str, shape: tuple[int, ...]) -> str:
        self.inits.append(numpy_helper.from_array(np.zeros(shape, dtype=np.float32), name))
        self.params += int(np.prod(shape))
        return name

    def conv(self, x: str, cout: int, k, stride=1, group=1, pad="tf", act=None) -> str:
        """Conv (+ folded BN bias) (+ activation). `pad`: "tf" = TensorFlow SAME,
        "sym" = symmetric k//2 (Caffe / PyTorch), "valid" = none."""
        n, cin, h, w = self.shapes[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        if pad == "tf":
            oh, ow = math.ceil(h / sh), math.ceil(w / sw)
            ph = max((oh - 1) * sh + kh - h, 0)
            pw = max((ow - 1) * sw + kw - w, 0)
            pads = [ph // 2, pw // 2, ph - ph // 2, pw - pw // 2]
        elif pad == "sym":
            pads = [kh // 2, kw // 2, kh // 2, kw // 2]
            oh = (h + 2 * (kh // 2) - kh) // sh + 1
            ow = (w + 2 * (kw // 2) - kw) // sw + 1
        else:
            pads = [0, 0, 0, 0]
            oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
        name = self._name("conv")
        wname = self._weight(f"{name}.weight", (cout, cin // group, kh, kw))
        bname = self._weight(f"{name}.bias", (cout,))
        out = f"{name}.out"
        self.nodes.append(
            helper.make_node(
                "Conv", [x, wname, bname], [out], name=name, kernel_shape=[kh, kw],
                strides=[sh, sw], pads=pads, group=group, dilations=[1, 1],
            )
        )
        self.macs += cout * oh * ow * (cin // group) * kh * kw
        self.shapes[out] = (n, cout, oh, ow)
        return self.act(out, act)

    def act(self, x: str, act) -> str:
        if act is None:
            return x
        name = self._name(act)
        out = f"{name}.out"
        if act == "relu":
            self.nodes.append(helper.make_node("Relu", [x], [out], name=name))
        elif act == "relu6":
            lo, hi = f"{name}.min", f"{name}.max"
            # Clip bounds are tiny scalar constants, not weights: not counted as parameters.
            self.inits.append(numpy_helper.from_array(np.array(0.0, dtype=np.float32), lo))
            self.inits.append(numpy_helper.from_array(np.array(6.0, dtype=np.float32), hi))
            self.nodes.append(helper.make_node("Clip", [x, lo, hi], [out], name=name))
        else:
            raise ValueError(act)
        self.shapes[out] = self.shapes[x]
        return out

    def add(self, a: str, b: str, act=None) -> str:
        assert self.shapes[a] == self.shapes[b], (self.shapes[a], self.shapes[b])
        name = self._name("add")
        out = f"{name}.out"
        self.nodes.append(helper.make_node("Add", [a, b], [out], name=name))
        self.shapes[out] = self.shapes[a]
        return self.act(out, act)

    def pool(self, x: str, kind: str, k, stride, ceil=False) -> str:
        n, c, h, w = self.shapes[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        sh, sw = (stride, stride) if isinstance(stride, int) else stride
        rnd = math.ceil if ceil else math.floor
        oh, ow = rnd((h - kh) / sh) + 1, rnd((w - kw) / sw) + 1
        name = self._name(kind)
        out = f"{name}.out"
        self.nodes.append(
            helper.make_node(
                kind, [x], [out], name=name, kernel_shape=[kh, kw], strides=[sh, sw],
                pads=[0, 0, 0, 0], ceil_mode=int(ceil),
            )
        )
        self.shapes[out] = (n, c, oh, ow)
        return out

    def global_avg_pool(self, x: str) -> str:
        n, c, _, _ = self.shapes[x]
        name = self._name("gap")
        out = f"{name}.out"
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], [out], name=name))
        self.shapes[out] = (n, c, 1, 1)
        return out

    def flatten(self, x: str) -> str:
        shape = self.shapes[x]
        name = self._name("flatten")
        out = f"{name}.out"
        self.nodes.append(helper.make_node("Flatten", [x], [out], name=name, axis=1))
        self.shapes[out] = (shape[0], int(np.prod(shape[1:])))
        return out

    def dense(self, x: str, cout: int) -> str:
        n, cin = self.shapes[x]
        name = self._name("gemm")
        wname = self._weight(f"{name}.weight", (cout, cin))
        bname = self._weight(f"{name}.bias", (cout,))
        out = f"{name}.out"
        self.nodes.append(helper.make_node("Gemm", [x, wname, bname], [out], name=name, transB=1))
        self.macs += cin * cout
        self.shapes[out] = (n, cout)
        return out

    def softmax(self, x: str) -> str:
        name = self._name("softmax")
        self.nodes.append(helper.make_node("Softmax", [x], ["output"], name=name, axis=1))
        self.shapes["output"] = self.shapes[x]
        return "output"

    def model(self) -> onnx.ModelProto:
        out = helper.make_tensor_value_info("output", TensorProto.FLOAT, list(self.shapes["output"]))
        graph = helper.make_graph(self.nodes, self.name, [self.input], [out], self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="edgefit bench/reference_models.py",
        )
        model.ir_version = 8
        return model


# --- MLPerf Tiny reference models -----------------------------------------------------------


def resnet8_cifar10() -> Builder:
    """mlcommons/tiny image_classification resnet_v1_eembc (16/32/64 filters, 3 stacks)."""
    b = Builder("resnet8_cifar10", (1, 3, 32, 32))
    x = b.conv("input", 16, 3, act="relu")
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = b.conv(x, filters, 3, stride, act="relu")
        y = b.conv(y, filters, 3, 1)
        if stride != 1:
            x = b.conv(x, filters, 1, stride)  # 1x1 projection shortcut, no BN in the reference
        x = b.add(x, y, act="relu")
    x = b.pool(x, "AveragePool", 8, 8)  # pool_size = 8 (the 8x8 map)
    x = b.flatten(x)
    return finish(b, b.dense(x, 10))


def mobilenet_v1(name: str, size: int, alpha: float, classes: int, act: str, head: str) -> Builder:
    """MobileNet v1: 3x3/2 conv, then 13 depthwise-separable blocks."""
    b = Builder(name, (1, 3, size, size))
    ch = lambda c: int(c * alpha)  # noqa: E731
    x = b.conv("input", ch(32), 3, 2, act=act)
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
        (1024, 2), (1024, 1)]
    for cout, stride in blocks:
        cin = b.shapes[x][1]
        x = b.conv(x, cin, 3, stride, group=cin, act=act)  # depthwise
        x = b.conv(x, ch(cout), 1, act=act)  # pointwise
    if head == "keras":  # AveragePooling2D(3) on the 3x3 map, Flatten, Dense
        x = b.pool(x, "AveragePool", b.shapes[x][2], b.shapes[x][2])
        x = b.flatten(x)
        return finish(b, b.dense(x, classes))
    x = b.global_avg_pool(x)  # TF-slim: avg pool, 1x1 conv logits, squeeze
    x = b.conv(x, classes, 1)
    return finish(b, b.flatten(x))


def mobilenet_v1_025_vww96() -> Builder:
    """mlcommons/tiny visual_wake_words vww_model.py: alpha 0.25, 96x96x3, ReLU, 2 classes."""
    return mobilenet_v1("mobilenet_v1_025_vww96", 96, 0.25, 2, "relu", "keras")


def dscnn_kws() -> Builder:
    """mlcommons/tiny keyword_spotting ds_cnn: 49x10x1 MFCC, 64 filters, 4 DS blocks, 12 labels."""
    b = Builder("dscnn_kws", (1, 1, 49, 10))
    x = b.conv("input", 64, (10, 4), (2, 2), act="relu")  # -> 25x5
    for _ in range(4):
        x = b.conv(x, 64, 3, 1, group=64, act="relu")
        x = b.conv(x, 64, 1, act="relu")
    x = b.pool(x, "AveragePool", (24, 5), (24, 5))  # final_pool_size = (int(49/2), int(10/2))
    x = b.flatten(x)
    return finish(b, b.dense(x, 12))


# --- ImageNet models --------------------------------------------------------------------------


def mobilenet_v1_224() -> Builder:
    return mobilenet_v1("mobilenet_v1_224", 224, 1.0, 1001, "relu6", "slim")


def mobilenet_v2_224() -> Builder:
    """TF MobileNet v2 1.0 224 (t, c, n, s table of the paper), ReLU6, 1001 classes."""
    b = Builder("mobilenet_v2_224", (1, 3, 224, 224))
    x = b.conv("input", 32, 3, 2, act="relu6")
    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]
    for t, c, n, s in table:
        for i in range(n):
            stride = s if i == 0 else 1
            cin = b.shapes[x][1]
            y = x
            if t != 1:
                y = b.conv(y, cin * t, 1, act="relu6")
            hidden = b.shapes[y][1]
            y = b.conv(y, hidden, 3, stride, group=hidden, act="relu6")
            y = b.conv(y, c, 1)  # linear bottleneck
            x = b.add(x, y) if stride == 1 and cin == c else y
    x = b.conv(x, 1280, 1, act="relu6")
    x = b.global_avg_pool(x)
    x = b.conv(x, 1001, 1)
    return finish(b, b.flatten(x))


def resnet50_v1_caffe() -> Builder:
    """ResNet-50 v1 (MSRA/Caffe, as ncnn benchmark/models/resnet50.param): stride on the 1x1."""
    b = Builder("resnet50_v1_caffe", (1, 3, 224, 224))
    x = b.conv("input", 64, 7, 2, pad="sym", act="relu")  # 112x112
    x = b.pool(x, "MaxPool", 3, 2, ceil=True)  # Caffe rounds up: 56x56
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            y = b.conv(x, width, 1, s, pad="sym", act="relu")
            y = b.conv(y, width, 3, 1, pad="sym", act="relu")
            y = b.conv(y, width * 4, 1, pad="sym")
            if i == 0:
                x = b.conv(x, width * 4, 1, s, pad="sym")  # res*a_branch1 projection
            x = b.add(x, y, act="relu")
    x = b.pool(x, "AveragePool", 7, 1)  # pool5: 7x7 average
    x = b.flatten(x)
    return finish(b, b.dense(x, 1000))


def finish(b: Builder, logits: str) -> Builder:
    b.softmax(logits)
    return b


# name -> (builder, published params, published MACs, where the published figures come from).
# Our counts fold BatchNorm into the conv bias; Keras counts 4 more per BN channel (gamma, beta,
# moving mean/variance), which is what the MLPerf Tiny "~78k" / "~221k" figures include.
MODELS = {
    "resnet8_cifar10": (
        resnet8_cifar10, 78_000, 12_500_000,
        "MLPerf Tiny ResNet-8: ~78k parameters, 12.5M MACs (figures quoted in the brief for the "
        "MLPerf Tiny reference; Keras count with its 240 BN channels unfolded = 77,706 + 960 = "
        "78,666)"),
    "mobilenet_v1_025_vww96": (
        mobilenet_v1_025_vww96, 221_000, 7_500_000,
        "MLPerf Tiny VWW MobileNetV1 0.25x 96x96: ~0.2M parameters, ~7.5M MACs (brief); Keras "
        "count with its 2,736 BN channels unfolded = 210,850 + 10,944 = 221,794"),
    "dscnn_kws": (
        dscnn_kws, 23_000, 2_700_000,
        "MLPerf Tiny DS-CNN (KWS): ~23-38k parameters (brief): 22,604 folded, 24,908 with the "
        "576 BN channels unfolded; ~2.7M MACs"),
    "mobilenet_v1_224": (
        mobilenet_v1_224, 4_200_000, 569_000_000,
        "MobileNet v1 1.0 224: 4.2M parameters, 569M mult-adds (Howard et al. 2017, table 8)"),
    "mobilenet_v2_224": (
        mobilenet_v2_224, 3_400_000, 300_000_000,
        "MobileNetV2 1.0 224: 3.4M parameters, 300M MACs (Sandler et al. 2018, table 4; brief)"),
    "resnet50_v1_caffe": (
        resnet50_v1_caffe, 25_600_000, 3_860_000_000,
        "ResNet-50: 25.6M parameters (brief); 3.8 G multiply-adds for this v1 layout (He et al. "
        "2016, table 1); torchvision's stride-on-3x3 'v1.5' has 4.1G (brief)"),
}


def build(name: str) -> tuple[onnx.ModelProto, Builder]:
    b = MODELS[name][0]()
    model = b.model()
    onnx.checker.check_model(model)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out_shape = [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim]
    assert tuple(out_shape) == b.shapes["output"], (name, out_shape, b.shapes["output"])
    return model, b


def edgefit_inspect(path: Path) -> dict | None:
    binary = os.environ.get("EDGEFIT_BIN", "target/debug/edgefit")
    if not Path(binary).is_file():
        return None
    proc = subprocess.run([binary, "inspect", str(path), "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"error": "output is not JSON"}
    # The totals are top-level keys (each entry of `layers` has its own, too).
    return {k: data.get(k) for k in ("parameters", "macs")}


def write_all(out_dir: Path, names=None, quiet=False) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    rows = []
    for name in names or MODELS:
        model, b = build(name)
        path = out_dir / f"{name}.onnx"
        onnx.save(model, str(path))
        paths[name] = path
        _, pub_params, pub_macs, note = MODELS[name]
        rows.append((name, b.params, pub_params, b.macs, pub_macs, note, path))
    if not quiet:
        print(f"{'model':24} {'params':>11} {'published':>10} {'MACs':>14} {'published':>14}  edgefit inspect")
        for name, params, pub_params, macs, pub_macs, note, path in rows:
            ef = edgefit_inspect(path)
            if ef is None:
                ef_text = "(no binary)"
            elif "error" in ef:
                ef_text = f"failed: {ef['error']}"
            else:
                ef_text = f"params {ef.get('parameters', '?'):,} MACs {ef.get('macs', '?'):,}" if all(
                    isinstance(ef.get(k), (int, float)) for k in ("parameters", "macs")) else str(ef)
            print(f"{name:24} {params:>11,} {pub_params/1e6:>9.3f}M {macs:>14,} {pub_macs/1e6:>13.1f}M  {ef_text}")
        print()
        for name, *_, note, path in rows:
            print(f"  {name}: {note}")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--only", nargs="*", choices=sorted(MODELS), help="build only these")
    ap.add_argument("--quiet", action="store_true", help="write the files, print nothing")
    args = ap.parse_args()
    write_all(args.out_dir, args.only, args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
