#!/usr/bin/env python3
"""Checks the architecture name, every metadata key and every tensor name of GGUF files against
llama.cpp's own tables in gguf-py (gguf.constants: MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES,
Keys), reading the files with gguf.GGUFReader.

usage: python3 gguf_names.py FILE.gguf...
  -> JSON {FILE: {"arch", "table_arch", "unknown_keys": [...], "unknown_tensors": [...],
                  "own_keys": [...]}}

Allowed beyond gguf-py's tables, and nothing else:
- our own keys, under the `dlm.` namespace (docs/convert.md lists them);
- keys llama.cpp defines that are newer than the gguf release on PyPI (NEWER_UPSTREAM_KEYS);
- `bitnet-b1.58`, bitnet.cpp's name for BitNet b1.58 (LLM_ARCH_BITNET_B158 in its llama.cpp fork's
  src/llama.cpp; gguf-py has no entry for it). Its tensors and keys are checked against gguf-py's
  `bitnet` tables, which list the same tensor names as the fork's LLM_ARCH_BITNET_B158 table.
"""
import inspect
import json
import re
import sys

import gguf
from gguf.constants import MODEL_ARCH_NAMES, MODEL_TENSORS, TENSOR_NAMES, Keys

OWN_PREFIX = "dlm."
# Keys llama.cpp defines (src/llama-arch.cpp, and gguf-py's constants.py in its tree) that are newer
# than the gguf release on PyPI: used only when the installed package lacks them.
# `{arch}.hidden_activation` is LLM_KV_HIDDEN_ACT / Keys.LLM.HIDDEN_ACT (checked at llama.cpp 0c1e57098).
NEWER_UPSTREAM_KEYS = ["{arch}.hidden_activation"]
ALIASES = {"bitnet-b1.58": "bitnet"}


def key_templates():
    """Every key string defined in gguf.constants.Keys (nested classes), `{arch}` unformatted."""
    out = set()

    def walk(cls):
        for name, value in vars(cls).items():
            if name.startswith("_"):
                continue
            if inspect.isclass(value):
                walk(value)
            elif isinstance(value, str):
                out.add(value)

    walk(Keys)
    out.update(NEWER_UPSTREAM_KEYS)
    return out


def check(path, templates):
    reader = gguf.GGUFReader(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    arch = fields["general.architecture"].contents()
    table_arch = ALIASES.get(arch, arch)
    by_name = {v: k for k, v in MODEL_ARCH_NAMES.items()}
    result = {"arch": arch, "table_arch": table_arch, "unknown_keys": [], "unknown_tensors": [], "own_keys": []}
    if table_arch not in by_name:
        result["unknown_arch"] = True
        return result
    # `{arch}` is the architecture; any other placeholder (an adapter or a token name) is one
    # dot-free component.
    known = [t.replace("{arch}", table_arch) for t in templates]
    known_keys = {t for t in known if "{" not in t}
    patterns = [re.compile(re.sub(r"\\\{\w+\\\}", r"[^.]+", re.escape(t)) + "$") for t in known if "{" in t]
    for key in fields:
        # keys are checked under the table's name: `bitnet-b1.58.x` must be a valid `bitnet.x`
        as_table = table_arch + key[len(arch):] if key.startswith(arch + ".") else key
        if key.startswith(OWN_PREFIX):
            result["own_keys"].append(key)
        elif as_table not in known_keys and not any(p.match(as_table) for p in patterns):
            result["unknown_keys"].append(key)
    n_blocks = int(fields[f"{arch}.block_count"].contents())
    names = set()
    for t in MODEL_TENSORS[by_name[table_arch]]:
        template = TENSOR_NAMES[t]
        if "{bid}" in template:
            names.update(template.format(bid=i) for i in range(n_blocks))
        else:
            names.add(template)
    for t in reader.tensors:
        base, _, suffix = t.name.rpartition(".")
        if base not in names or suffix not in ("weight", "bias"):
            result["unknown_tensors"].append(t.name)
    return result


def main():
    templates = key_templates()
    print(json.dumps({path: check(path, templates) for path in sys.argv[1:]}))


if __name__ == "__main__":
    main()
