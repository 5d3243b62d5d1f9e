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

Q6_K: gguf-py only decodes it (its `Q6_K` class has no `quantize_blocks`), so encoding uses this
script's numpy transcription of llama.cpp's `quantize_row_q6_K_ref` and `make_qx_quants`
(ggml/src/ggml-quants.c, rmse_type 1, no importance weights), written from the C source: every
operation in float32, in the C order, vectorised over the 16-element groups only.
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


F32 = np.float32


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: (bits(v + 12582912.f) & 0x7fffff) - 0x400000."""
    m = (v.astype(F32) + F32(12582912.0)).astype(F32)
    return (m.view(np.int32) & 0x007FFFFF) - 0x00400000


def make_qx_quants(x: np.ndarray, nmax: int):
    """make_qx_quants(16, nmax, x, L, rmse_type=1, NULL) for each row of x (groups x 16).

    Returns (scales float32 [groups], L int32 [groups, 16]).
    """
    g, n = x.shape
    ax = np.abs(x)
    # First element of largest magnitude (strict > scan); NaN never wins.
    amax = np.zeros(g, F32)
    mx = np.zeros(g, F32)
    for i in range(n):
        take = ax[:, i] > amax
        amax = np.where(take, ax[:, i], amax)
        mx = np.where(take, x[:, i], mx)
    zero = amax < F32(1e-15)
    safe_max = np.where(zero, F32(1), mx).astype(F32)

    def levels(iscale):
        return np.clip(nearest_int((iscale[:, None] * x).astype(F32)), -nmax, nmax - 1)

    def sums(lv):
        sumlx = np.zeros(g, F32)
        suml2 = np.zeros(g, F32)
        for i in range(n):
            xi = x[:, i]
            li = lv[:, i].astype(F32)
            w = (xi * xi).astype(F32)
            sumlx = (sumlx + ((w * xi).astype(F32) * li).astype(F32)).astype(F32)
            suml2 = (suml2 + ((w * li).astype(F32) * li).astype(F32)).astype(F32)
        return sumlx, suml2

    iscale = (F32(-nmax) / safe_max).astype(F32)
    lv = levels(iscale)
    L = lv + nmax
    sumlx, suml2 = sums(lv)
    scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, F32(1)), F32(0)).astype(F32)
    best = (scale * sumlx).astype(F32)
    for k in range(-9, 10):
        if k == 0:
            continue
        cand = (-(F32(nmax) + (F32(0.1) * F32(k)).astype(F32)).astype(F32) / safe_max).astype(F32)
        lv = levels(cand)
        slx, sl2 = sums(lv)
        better = (sl2 > 0) & ((slx * slx).astype(F32) > (best * sl2).astype(F32))
        L = np.where(better[:, None], lv + nmax, L)
        new_scale = (slx / np.where(sl2 > 0, sl2, F32(1))).astype(F32)
        scale = np.where(better, new_scale, scale).astype(F32)
        best = np.where(better, (scale * slx).astype(F32), best).astype(F32)
    scale = np.where(zero, F32(0), scale).astype(F32)
    L = np.where(zero[:, None], 0, L)
    return scale, L


def q6k_quantize(x: np.ndarray) -> bytes:
    """quantize_row_q6_K_ref over the flattened tensor (super-blocks of 256 -> 210 bytes)."""
    blocks = x.reshape(-1, 256).astype(F32)
    nb = blocks.shape[0]
    scales, L = make_qx_quants(blocks.reshape(-1, 16), 32)
    scales = scales.reshape(nb, 16)
    L = L.reshape(nb, 256)
    out = np.zeros((nb, 210), dtype=np.uint8)
    for b in range(nb):
        max_scale = F32(0)
        max_abs = F32(0)
        for s in scales[b]:
            if abs(s) > max_abs:
                max_abs = F32(abs(s))
                max_scale = s
        if max_abs < F32(1e-15):
            continue  # all zero, d = 0
        iscale = F32(F32(-128.0) / max_scale)
        d16 = np.array([F32(1) / iscale], dtype=F32).astype(np.float16)
        out[b, 208:210] = np.frombuffer(d16.astype("<f2").tobytes(), dtype=np.uint8)
        d = F32(d16[0])
        sc = np.minimum(127, nearest_int((iscale * scales[b]).astype(F32))).astype(np.int8)
        out[b, 192:208] = sc.view(np.uint8)
        for j in range(16):
            dj = F32(d * F32(sc[j]))
            if dj == 0:
                continue
            xs = blocks[b, 16 * j : 16 * j + 16]
            lj = np.clip(nearest_int((xs / dj).astype(F32)), -32, 31)
            L[b, 16 * j : 16 * j + 16] = lj + 32
        q = L[b].astype(np.uint8)
        for h in range(2):
            c = q[128 * h : 128 * h + 128]
            lo = slice(64 * h, 64 * h + 32)
            out[b, lo] = (c[0:32] & 15) | ((c[64:96] & 15) << 4)
            out[b, 64 * h + 32 : 64 * h + 64] = (c[32:64] & 15) | ((c[96:128] & 15) << 4)
            out[b, 128 + 32 * h : 160 + 32 * h] = (
                (c[0:32] >> 4) | ((c[32:64] >> 4) << 2) | ((c[64:96] >> 4) << 4) | ((c[96:128] >> 4) << 6)
            )
    return out.tobytes()


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
            elif t == "Q6_K":
                ref = q6k_quantize(data)
                deq = dequantize(np.frombuffer(ours, dtype=np.uint8).reshape(rows, -1), qtype(t))
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
