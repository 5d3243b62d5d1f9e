#!/usr/bin/env python3
"""Reads a GGUF file with llama.cpp's gguf-py (gguf.GGUFReader) and prints what it sees as JSON.

Used by crates/gguf/tests/python_interop.rs to check files written by our Rust writer against an
independent reader.

Output: {"version", "alignment", "data_offset",
         "kv": [{"key", "type", "sub_type", "value"}...]   (file order; gguf-py type names),
         "tensors": [{"name", "type_id", "type", "shape", "n_elements", "n_bytes", "offset", "data_hex",
                      "dequant" (values as gguf.quants.dequantize gives them, or null)}...]}
`shape` is in ggml order (dims[0] = row length), `offset` is relative to the data section.
"""
import json
import sys

import gguf
import numpy as np


def main(path: str) -> None:
    r = gguf.GGUFReader(path)
    kv = []
    version = None
    for key, field in r.fields.items():
        if key == "GGUF.version":
            version = int(field.contents())
        if key.startswith("GGUF."):
            continue
        main_type = field.types[0]
        sub_type = field.types[-1] if main_type == gguf.GGUFValueType.ARRAY and len(field.types) > 1 else None
        value = field.contents()
        kv.append({
            "key": key,
            "type": main_type.name,
            "sub_type": sub_type.name if sub_type is not None else None,
            "value": value,
        })
    tensors = []
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data).tobytes()
        try:
            values = gguf.quants.dequantize(np.ascontiguousarray(t.data), t.tensor_type).reshape(-1)
            dequant = [float(x) for x in values]
        except NotImplementedError:
            dequant = None
        tensors.append({
            "name": t.name,
            "type_id": int(t.tensor_type),
            "type": t.tensor_type.name,
            "shape": [int(d) for d in t.shape],
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
            "offset": int(t.data_offset) - int(r.data_offset),
            "data_hex": raw.hex(),
            "dequant": dequant,
        })
    out = {
        "version": version,
        "alignment": int(r.alignment),
        "data_offset": int(r.data_offset),
        "kv": kv,
        "tensors": tensors,
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: gguf_read.py FILE.gguf")
    main(sys.argv[1])
