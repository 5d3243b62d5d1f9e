"""Reads a GGUF with llama.cpp's `gguf` package and writes every tensor, dequantized by that
package, as raw little-endian float32 into OUT_DIR/<tensor name>.f32, plus OUT_DIR/index.json with
each tensor's type name and shape (numpy order). Used by the Rust tests as an independent reader.

usage: python3 gguf_dequant.py FILE.gguf OUT_DIR
"""
import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main() -> None:
    path, out_dir = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    index = {}
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1)
        values.astype("<f4").tofile(os.path.join(out_dir, t.name + ".f32"))
        index[t.name] = {"type": t.tensor_type.name, "shape": [int(d) for d in t.shape]}
    arch = reader.get_field("general.architecture")
    index["__architecture__"] = bytes(arch.parts[arch.data[0]]).decode("utf-8")
    with open(os.path.join(out_dir, "index.json"), "w") as f:
        json.dump(index, f)


if __name__ == "__main__":
    main()
