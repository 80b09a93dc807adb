"""Writes assets/mnist-digit-images/: an image folder (one sub-folder per class) of the first
5 test digits of each class of sample-models/mnist-cnn, as 8-bit gray PNGs, with the
preprocess.json that turns them back into exactly the model's inputs.

Needs numpy only (PNGs are written with zlib). Run from the repository root:
    python3 assets/make_digit_images.py
"""

import json
import pathlib
import struct
import zlib

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample-models" / "mnist-cnn"
OUT = ROOT / "assets" / "mnist-digit-images"
PER_CLASS = 5
MEAN, STD = 0.1307, 0.3081


def png_gray(pixels: np.ndarray) -> bytes:
    height, width = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].astype(np.uint8).tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def main() -> None:
    inputs = np.load(SAMPLE / "test_inputs.npy")
    labels = np.load(SAMPLE / "test_labels.npy")
    # The inputs are (x/255 - mean)/std of 8-bit pixels: undone exactly (rounding).
    pixels = np.rint((inputs[:, 0] * STD + MEAN) * 255.0).clip(0, 255).astype(np.uint8)
    for digit in range(10):
        folder = OUT / str(digit)
        folder.mkdir(parents=True, exist_ok=True)
        for n, index in enumerate(np.flatnonzero(labels == digit)[:PER_CLASS]):
            (folder / f"test{index:04d}.png").write_bytes(png_gray(pixels[index]))
    (OUT / "preprocess.json").write_text(
        json.dumps(
            {"scale": 1 / 255, "mean": [MEAN], "std": [STD], "channels": "gray", "layout": "nchw"},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
