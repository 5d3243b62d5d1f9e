"""Independent implementation of the Fast-dLLM v2 `generate` loop (HF modeling.py, as described in
shared/reference/fast-dllm-v2.md §1.3), with the bug fixes documented in docs/fast-dllm-v2.md, over the
NumPy reference forward of reference_forward.py. Greedy (temperature 0) only.

usage: python3 reference_dlm.py CKPT_DIR TOKENS MASK_ID EOG_IDS BLOCK SMALL THRESHOLD MAX_TOKENS [block-cache]
  TOKENS and EOG_IDS are comma-separated. Prints JSON {"tokens": [...], "forward_passes": n}.

Without the sub-block cache, the prefix cache of the reference equals a block-causal forward over
everything before the current block, so each step recomputes the whole sequence up to the end of
the current block with the block-causal mask (same logits, simpler code). With `block-cache`
(the reference's use_block_cache, "DualCache"), an explicit K/V cache is kept, because the 8-row
steps attend to stale K/V of the other sub-blocks, which no full recomputation reproduces.
"""
import json
import sys

import numpy as np

from reference_forward import Model


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


class KV:
    """Per-layer rotated keys and values of positions 0..len."""

    def __init__(self, model):
        self.k = [np.zeros((0, model.nkv, model.hd)) for _ in range(model.layers)]
        self.v = [np.zeros((0, model.nkv, model.hd)) for _ in range(model.layers)]

    def __len__(self):
        return self.k[0].shape[0]

    def truncate(self, n):
        self.k = [k[:n] for k in self.k]
        self.v = [v[:n] for v in self.v]


def forward_cached(m, tokens, start, kv, B, write):
    """tokens at positions start..start+T; keys are the cache's, with positions start..start+T
    replaced by this call's; prefix positions (< start) always visible, others block-causal.
    With `write`, this call's K/V are stored (appended or overwritten)."""
    total = max(len(kv), start + len(tokens))
    allowed = np.array([[p < start or p // B <= q // B for p in range(total)] for q in range(start, start + len(tokens))])
    logits, keys, values = m.run(tokens, start, kv.k, kv.v, allowed)
    if write:
        kv.k, kv.v = keys, values
    return logits


def main():
    d = sys.argv[1]
    prompt = [int(t) for t in sys.argv[2].split(",")]
    mask = int(sys.argv[3])
    eog = {int(t) for t in sys.argv[4].split(",") if t}
    B, S, T, max_tokens = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
    model = Model(d)
    block_cache = "block-cache" in sys.argv[9:]
    kv = KV(model)
    passes = 0

    def logits_of(seq):
        nonlocal passes
        passes += 1
        return model.forward(seq, B)

    def best(row):
        row = row.copy()
        row[mask] = -np.inf  # fix: never predict the mask token
        return int(np.argmax(row))

    L0 = len(prompt)
    cap = L0 + max_tokens
    seq = list(prompt)

    def finished():
        gen = seq[L0:cap]
        final = gen.index(mask) if mask in gen else len(gen)
        if any(t in eog for t in gen[:final]):
            return True  # a stop token with no mask before it
        return final == len(gen) and len(seq) >= cap

    def cached(tokens, start, write):
        nonlocal passes
        passes += 1
        return forward_cached(model, tokens, start, kv, B, write)

    if L0 >= B:  # fix: the reference uses `>` and never sees a prompt of exactly one block
        P = L0 // B * B
        lg = cached(seq[:P], 0, True) if block_cache else logits_of(seq[:P])
        if L0 % B == 0 and max_tokens > 0:
            seq.append(best(lg[P - 1]))  # AR step on a block boundary
    while not finished():
        Lp = len(seq)
        seq += [mask] * (B - Lp % B)
        start = len(seq) - B
        populated = False  # the block's K/V are in the cache (sub-block cache mode)
        done = False
        while True:
            if finished():
                done = True
                break
            if mask not in seq[start:]:
                # finalize pass: the block enters the cache
                if block_cache:
                    kv.truncate(start)
                    lg = cached(seq[start:], start, True)
                else:
                    lg = logits_of(seq)
                seq.append(best(lg[-1]))
                break
            for sb in range(B // S):
                lo, hi = sb * S, sb * S + S
                while True:
                    m = [j for j in range(lo, hi) if seq[start + j] == mask]
                    if not m or finished():
                        break
                    if block_cache and populated and seq[start + lo] != mask:
                        # 8-row step against the stored block K/V, shift inside the rows
                        lg = cached(seq[start + lo : start + hi], start + lo, True)
                        shifted = {j: lg[j - 1 - lo] for j in m}
                    else:
                        if block_cache:
                            kv.truncate(start)
                            lg = cached(seq[start:], start, True)
                            populated = True
                        else:
                            lg = logits_of(seq)[start:]
                        shifted = {j: lg[j - 1] if j > 0 else lg[0] for j in m}  # token shift
                    cand = []
                    for j in m:
                        x = best(shifted[j])
                        conf = float(softmax(shifted[j].astype(np.float64))[x])
                        cand.append((j, x, conf))
                    top = max(range(len(cand)), key=lambda i: (cand[i][2], -i))  # first max wins
                    for i, (j, x, conf) in enumerate(cand):
                        if conf > T or i == top:
                            seq[start + j] = x
        if done:
            break
    out = seq[L0:cap]
    for i, t in enumerate(out):
        if t in eog:
            out = out[:i]
            break
    print(json.dumps({"tokens": out, "forward_passes": passes}))


if __name__ == "__main__":
    main()
