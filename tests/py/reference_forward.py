"""Independent NumPy forward of a Hugging Face checkpoint (llama, qwen2, qwen3, BitNet b1.58),
written from the transformers modeling files, for checking the Rust engine's logits.

usage:
  python3 reference_forward.py CKPT_DIR logits TOKENS [causal|block:N] [f16-embeddings]
      -> JSON {"logits": [[...] per position]}
  python3 reference_forward.py CKPT_DIR greedy TOKENS N
      -> JSON {"tokens": [N new ids]}
`f16-embeddings` rounds the embedding table (and a tied LM head) to float16 first, as a GGUF whose
token_embd is F16 stores it (every ternary GGUF keeps F16 embeddings).
TOKENS is a comma-separated list of ids. Computation is float64, except BitNet's BitLinear
quantization steps, which follow PyTorch's float32 arithmetic (absmean weights, per-token int8
activations), so the reference is what the trained model computes.
"""
import json
import os
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start : base + end]
        dtype = info["dtype"]
        if dtype == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif dtype == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif dtype == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"unsupported dtype {dtype} for {name}")
        out[name] = arr.reshape(info["shape"])
    return out


def load_checkpoint(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    weights = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors"):
            weights.update(load_safetensors(os.path.join(d, f)))
    return cfg, weights


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def weight_quant(w):
    """HF transformers WeightQuant: s = 1/max(mean|W|, 1e-5); round(W*s).clamp(-1,1)/s (float32)."""
    w = w.astype(np.float32)
    s = np.float32(1.0) / np.maximum(np.float32(np.abs(w.astype(np.float64)).mean()), np.float32(1e-5))
    return (np.clip(np.round(w * s), -1, 1) / s).astype(np.float32)


def act_quant(x):
    """HF ActQuant: per-token s = 127/max(|x|, 1e-5); round(x*s).clamp(-128,127)/s (float32)."""
    x = x.astype(np.float32)
    s = np.float32(127.0) / np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))
    return (np.clip(np.round(x * s), -128, 127) / s).astype(np.float32)


class Model:
    def __init__(self, d, f16_embeddings=False):
        self.cfg, self.w = load_checkpoint(d)
        if f16_embeddings:
            for k in ("model.embed_tokens.weight", "lm_head.weight"):
                if k in self.w:
                    self.w[k] = self.w[k].astype(np.float16).astype(np.float32)
        c = self.cfg
        arch = c["architectures"][0]
        self.bitnet = arch in ("BitNetForCausalLM", "BitnetForCausalLM")
        self.h = c["hidden_size"]
        self.nh = c["num_attention_heads"]
        self.nkv = c.get("num_key_value_heads", self.nh)
        self.hd = c.get("head_dim") or self.h // self.nh
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.layers = c["num_hidden_layers"]
        self.relu2 = c.get("hidden_act") == "relu2"
        if self.bitnet:
            for k in list(self.w):
                if any(k.endswith(p + ".weight") for p in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")):
                    self.w[k] = weight_quant(self.w[k])
        self.lm_head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])

    def linear(self, name, x):
        w = self.w[name + ".weight"]
        if self.bitnet:
            y = act_quant(x).astype(np.float64) @ w.astype(np.float64).T
        else:
            y = x @ w.astype(np.float64).T
        b = self.w.get(name + ".bias")
        return y if b is None else y + b

    def rope(self, x, pos):
        # HF rotate_half: pairs (i, i + d/2), inv_freq = theta^(-2i/d)
        d = self.hd
        inv = 1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        ang = np.outer(pos, inv)  # [T, d/2]
        cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
        rot = np.concatenate([-x[..., d // 2 :], x[..., : d // 2]], axis=-1)
        return x * cos + rot * sin

    def forward(self, tokens, mask):
        """Logits of every position; `mask` None = causal, else the block size (block-causal)."""
        T = len(tokens)
        allowed = np.array([[j <= i if mask is None else j // mask <= i // mask for j in range(T)] for i in range(T)])
        empty = [np.zeros((0, self.nkv, self.hd)) for _ in range(self.layers)]
        logits, _, _ = self.run(tokens, 0, empty, empty, allowed)
        return logits

    def run(self, tokens, start, past_k, past_v, allowed):
        """The decoder over `tokens` at positions start..start+T, attending to per-layer rotated
        keys/values `past_k`/`past_v` (P positions) in which positions start..start+T are replaced
        by this call's (appended when P <= start). `allowed[i, p]` says whether query i may see key
        position p. Returns (logits, keys, values) with the updated per-layer arrays."""
        T = len(tokens)
        x = self.w["model.embed_tokens.weight"][tokens].astype(np.float64)
        pos = start + np.arange(T)
        total = max(past_k[0].shape[0], start + T)
        keys, values = [], []
        for l in range(self.layers):
            p = f"model.layers.{l}"
            a = rms_norm(x, self.w[f"{p}.input_layernorm.weight"], self.eps)
            q = self.linear(f"{p}.self_attn.q_proj", a).reshape(T, self.nh, self.hd)
            k = self.linear(f"{p}.self_attn.k_proj", a).reshape(T, self.nkv, self.hd)
            v = self.linear(f"{p}.self_attn.v_proj", a).reshape(T, self.nkv, self.hd)
            if f"{p}.self_attn.q_norm.weight" in self.w:
                q = rms_norm(q, self.w[f"{p}.self_attn.q_norm.weight"], self.eps)
                k = rms_norm(k, self.w[f"{p}.self_attn.k_norm.weight"], self.eps)
            q, k = self.rope(q, pos), self.rope(k, pos)
            K = np.zeros((total, self.nkv, self.hd))
            V = np.zeros((total, self.nkv, self.hd))
            K[: past_k[l].shape[0]] = past_k[l]
            V[: past_v[l].shape[0]] = past_v[l]
            K[start : start + T] = k
            V[start : start + T] = v
            keys.append(K)
            values.append(V)
            g = self.nh // self.nkv
            scores = np.einsum("thd,shd->hts", q, np.repeat(K, g, axis=1)) / np.sqrt(self.hd)
            scores = np.where(allowed[None], scores, -np.inf)
            scores = scores - scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", probs, np.repeat(V, g, axis=1)).reshape(T, self.nh * self.hd)
            if f"{p}.self_attn.attn_sub_norm.weight" in self.w:
                o = rms_norm(o, self.w[f"{p}.self_attn.attn_sub_norm.weight"], self.eps)
            x = x + self.linear(f"{p}.self_attn.o_proj", o)
            f = rms_norm(x, self.w[f"{p}.post_attention_layernorm.weight"], self.eps)
            gate = self.linear(f"{p}.mlp.gate_proj", f)
            up = self.linear(f"{p}.mlp.up_proj", f)
            act = np.maximum(gate, 0) ** 2 if self.relu2 else gate / (1 + np.exp(-gate))
            m = act * up
            if f"{p}.mlp.ffn_sub_norm.weight" in self.w:
                m = rms_norm(m, self.w[f"{p}.mlp.ffn_sub_norm.weight"], self.eps)
            x = x + self.linear(f"{p}.mlp.down_proj", m)
        x = rms_norm(x, self.w["model.norm.weight"], self.eps)
        return x @ self.lm_head.astype(np.float64).T, keys, values


def main():
    d, mode, tokens = sys.argv[1], sys.argv[2], [int(t) for t in sys.argv[3].split(",")]
    model = Model(d, f16_embeddings="f16-embeddings" in sys.argv[4:])
    if mode == "logits":
        spec = sys.argv[4] if len(sys.argv) > 4 else "causal"
        mask = None if spec == "causal" else int(spec.split(":")[1])
        print(json.dumps({"logits": model.forward(tokens, mask).tolist()}))
    elif mode == "greedy":
        out = []
        for _ in range(int(sys.argv[4])):
            nxt = int(np.argmax(model.forward(tokens + out, None)[-1]))
            out.append(nxt)
        print(json.dumps({"tokens": out}))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
