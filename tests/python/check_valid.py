#!/usr/bin/env python3
"""Each file given passes onnx.checker.check_model(full_check=True) and, when onnxruntime is
installed, loads in an onnxruntime CPU session. Prints `ok FILE` per file; exits 1 on the
first failure with the reason.

    python3 tests/python/check_valid.py OUT1.onnx [OUT2.onnx ...]
"""

import sys

import onnx


def main() -> int:
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    for path in sys.argv[1:]:
        try:
            onnx.checker.check_model(path, full_check=True)
        except Exception as e:  # noqa: BLE001 - the checker's message is the finding
            print(f"checker rejects {path}: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        if ort is not None:
            try:
                ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            except Exception as e:  # noqa: BLE001
                print(f"onnxruntime rejects {path}: {e}", file=sys.stderr)
                return 1
        print(f"ok {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
