"""Independent reference for the `quant` crate's codecs: quantizes and dequantizes with llama.cpp's
gguf-py (`gguf.quants`), so the Rust test can compare bytes and values.

usage: python3 quant_ref.py DIR

DIR/manifest.json (written by crates/quant/tests/python_reference.rs):
  {"quantize":   [{"name": N, "rows": R, "row_len": K, "types": ["F16", "Q8_0", ...]}, ...],
   "dequantize": [{"name": N, "rows": R, "row_len": K, "type": "Q6_K"}, ...]}

For each quantize case it reads DIR/N.f32 (R*K little-endian float32) and, per type T, DIR/N.T.ours
(the Rust encoder's bytes), and writes
  DIR/N.T.ref  the bytes gguf.quants.quantize produces from N.f32
  DIR/N.T.deq  gguf.quants.dequantize of N.T.ours, as little-endian float32
For each dequantize case it reads DIR/N.bin (raw bytes of type T) and writes DIR/N.deq.

I2_S is not in gguf-py. For it this script uses its own numpy transcription of microsoft/BitNet's
quantize_i2_s (src/ggml-bitnet-mad.cpp, x86 128/32 layout: scale = max|x|, code 1 where |x| < 1e-6,
else 2 for x > 0 and 0 for x < 0; MSB-first interleave; f32 scale then 28 zero bytes). It agrees
with the Rust encoder only on ternary input, which is all the test gives it.
"""
import json
import os
import sys
import warnings

import numpy as np
from gguf.constants import GGMLQuantizationType
from gguf.quants import dequantize, quantize


def i2s_quantize(x: np.ndarray) -> bytes:
    x = x.reshape(-1).astype(np.float32)
    scale = np.float32(np.max(np.abs(x))) if x.size else np.float32(0)
    x64 = x.astype(np.float64)
    codes = np.where(np.abs(x64) < 1e-6, 1, np.where(x64 * float(scale) > 0, 2, 0)).astype(np.uint8)
    codes = codes.reshape(-1, 4, 32)  # (block of 128, group j, lane g): element 32*j + g
    packed = (codes[:, 0, :] << 6) | (codes[:, 1, :] << 4) | (codes[:, 2, :] << 2) | codes[:, 3, :]
    tail = np.zeros(32, dtype=np.uint8)
    tail[:4] = np.frombuffer(np.float32(scale).astype("<f4").tobytes(), dtype=np.uint8)
    return packed.astype(np.uint8).tobytes() + tail.tobytes()


def i2s_dequantize(data: bytes, n: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    packed, tail = raw[: n // 4], raw[n // 4 :]
    scale = tail[:4].view("<f4")[0]
    codes = (packed.reshape(-1, 1, 32) >> np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)) & 3
    levels = np.array([-1, 0, 1, 0], dtype=np.float32)
    return levels[codes.reshape(-1)] * scale


def qtype(name: str) -> GGMLQuantizationType:
    return GGMLQuantizationType[name]


def main() -> None:
    out_dir = sys.argv[1]
    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)

    for case in manifest["quantize"]:
        name, rows, row_len = case["name"], case["rows"], case["row_len"]
        data = np.fromfile(os.path.join(out_dir, name + ".f32"), dtype="<f4").reshape(rows, row_len)
        for t in case["types"]:
            with open(os.path.join(out_dir, f"{name}.{t}.ours"), "rb") as f:
                ours = f.read()
            if t == "I2_S":
                ref = i2s_quantize(data)
                deq = i2s_dequantize(ours, rows * row_len)
            else:
                ref = np.ascontiguousarray(quantize(data, qtype(t))).tobytes()
                ours_arr = np.frombuffer(ours, dtype=np.uint8).reshape(rows, -1)
                deq = dequantize(ours_arr, qtype(t))
            with open(os.path.join(out_dir, f"{name}.{t}.ref"), "wb") as f:
                f.write(ref)
            np.asarray(deq, dtype=np.float32).astype("<f4").tofile(os.path.join(out_dir, f"{name}.{t}.deq"))

    for case in manifest["dequantize"]:
        name, rows = case["name"], case["rows"]
        raw = np.fromfile(os.path.join(out_dir, name + ".bin"), dtype=np.uint8).reshape(rows, -1)
        deq = dequantize(raw, qtype(case["type"]))
        np.asarray(deq, dtype=np.float32).astype("<f4").tofile(os.path.join(out_dir, name + ".deq"))


if __name__ == "__main__":
    # Casting inf/NaN edge values warns; the values themselves are what is being compared.
    warnings.simplefilter("ignore", RuntimeWarning)
    with np.errstate(all="ignore"):
        main()
