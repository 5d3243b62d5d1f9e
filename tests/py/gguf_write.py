#!/usr/bin/env python3
"""Writes a GGUF file with llama.cpp's gguf-py (gguf.GGUFWriter) and prints a JSON manifest of
what it wrote, for crates/gguf/tests/python_interop.rs to check our reader against.

The file has every scalar value type, string/int/float/bool arrays, alignment 64 and tensors of
types F32, F16, I32, Q8_0 (raw bytes) and TQ2_0 (raw bytes).

Manifest: {"alignment", "kv": [[key, type, sub_type, value]...] (in file order),
           "tensors": [[name, ggml type id, dims in ggml order, data hex]...]}
"""
import json
import sys

import gguf
import numpy as np
from gguf import GGUFValueType as T


def main(path: str) -> None:
    w = gguf.GGUFWriter(path, arch="llama")
    kv = [["general.architecture", "STRING", None, "llama"]]

    def add(key, vtype, value, sub_type=None):
        w.add_key_value(key, value, vtype, sub_type=sub_type)
        kv.append([key, vtype.name, sub_type.name if sub_type is not None else None, value])

    w.add_custom_alignment(64)
    kv.append(["general.alignment", "UINT32", None, 64])
    add("py.u8", T.UINT8, 250)
    add("py.i8", T.INT8, -120)
    add("py.u16", T.UINT16, 65000)
    add("py.i16", T.INT16, -32000)
    add("py.u32", T.UINT32, 4_000_000_000)
    add("py.i32", T.INT32, -2_000_000_000)
    add("py.f32", T.FLOAT32, 0.1)  # stored as the f32 nearest 0.1
    add("py.u64", T.UINT64, 2**64 - 1)
    add("py.i64", T.INT64, -(2**63))
    add("py.f64", T.FLOAT64, 2.718281828459045)
    add("py.bool", T.BOOL, True)
    add("py.string", T.STRING, "grüße ✓ \u0000 nul inside")
    add("py.tokens", T.ARRAY, ["<unk>", "<s>", "</s>", "▁the", "|<MASK>|"], T.STRING)
    add("py.scores", T.ARRAY, [0.0, -1.5, 3.25], T.FLOAT32)
    add("py.token_type", T.ARRAY, [2, 3, 3, 1, 4], T.INT32)
    add("py.ids", T.ARRAY, [151645, 151643], T.UINT32)
    add("py.flags", T.ARRAY, [True, False, True], T.BOOL)
    add("py.big", T.ARRAY, [1, 2**40], T.UINT64)
    add("py.doubles", T.ARRAY, [1e-300, -2.5], T.FLOAT64)

    tensors = []

    def tensor(name, array, raw_dtype=None, ggml_id=None, dims=None):
        if raw_dtype is None:
            w.add_tensor(name, array)
            ggml_id = {np.float32: 0, np.float16: 1, np.int32: 26}[array.dtype.type]
            dims = list(reversed(array.shape))
        else:
            w.add_tensor(name, array, raw_dtype=raw_dtype)
        tensors.append([name, ggml_id, dims, array.tobytes().hex()])

    tensor("f32.weight", np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5)
    tensor("f16.weight", (np.arange(32, dtype=np.float32).reshape(4, 8) / 8 - 2).astype(np.float16))
    tensor("i32.weight", np.array([-1, 2, 3], dtype=np.int32))
    # Q8_0: 2 rows of 64 elements = 2 blocks of 34 bytes per row.
    q8 = (np.arange(2 * 68) % 251).astype(np.uint8).reshape(2, 68)
    tensor("q8.weight", q8, gguf.GGMLQuantizationType.Q8_0, 8, [64, 2])
    # TQ2_0: 1 row of 256 elements = 1 block of 66 bytes.
    tq2 = (np.arange(66) * 7 % 256).astype(np.uint8).reshape(1, 66)
    tensor("tq2.weight", tq2, gguf.GGMLQuantizationType.TQ2_0, 35, [256, 1])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    json.dump({"alignment": 64, "kv": kv, "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gguf_write.py OUT.gguf")
    main(sys.argv[1])
