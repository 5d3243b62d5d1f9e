"""Independent implementation of the Fast-dLLM v2 `generate` loop (HF modeling.py, as described in
shared/reference/fast-dllm-v2.md §1.3), with the bug fixes documented in docs/fast-dllm-v2.md, over the
NumPy reference forward of reference_forward.py. Greedy (temperature 0) only.

usage: python3 reference_dlm.py CKPT_DIR TOKENS MASK_ID EOG_IDS BLOCK SMALL THRESHOLD MAX_TOKENS
  TOKENS and EOG_IDS are comma-separated. Prints JSON {"tokens": [...], "forward_passes": n}.

The prefix cache of the reference equals a block-causal forward over everything before the
current block, so each step here recomputes the whole sequence up to the end of the current block
with the block-causal mask (same logits, simpler code).
"""
import json
import sys

import numpy as np

from reference_forward import Model


def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def main():
    d = sys.argv[1]
    prompt = [int(t) for t in sys.argv[2].split(",")]
    mask = int(sys.argv[3])
    eog = {int(t) for t in sys.argv[4].split(",") if t}
    B, S, T, max_tokens = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
    model = Model(d)
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

    if L0 >= B:  # fix: the reference uses `>` and never sees a prompt of exactly one block
        P = L0 // B * B
        lg = logits_of(seq[:P])
        if L0 % B == 0 and max_tokens > 0:
            seq.append(best(lg[P - 1]))  # AR step on a block boundary
    while not finished():
        Lp = len(seq)
        seq += [mask] * (B - Lp % B)
        start = len(seq) - B
        done = False
        while True:
            if finished():
                done = True
                break
            if mask not in seq[start:]:
                lg = logits_of(seq)  # finalize pass: the block enters the cache
                seq.append(best(lg[-1]))
                break
            for sb in range(B // S):
                lo, hi = sb * S, sb * S + S
                while True:
                    m = [j for j in range(lo, hi) if seq[start + j] == mask]
                    if not m or finished():
                        break
                    lg = logits_of(seq)[start:]
                    shifted = [lg[0]] + [lg[j - 1] for j in range(1, B)]  # token shift
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
