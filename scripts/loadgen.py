#!/usr/bin/env python3
"""Load generator for dlm_server (or any OpenAI-compatible server): streaming chat requests at
several concurrencies, reported as a Markdown table.

    python3 scripts/loadgen.py --url http://127.0.0.1:30000 --concurrency 1,4,16 \
        --requests 32 --max-tokens 64 --mode dlm --threshold 0.9

For each concurrency C it keeps C requests in flight (threads over httpx) until --requests have
finished, after one untimed warm-up request. It reports, per concurrency: aggregate generated
tokens per second (completion tokens of all requests / wall time of the run), requests per second,
p50/p95 end-to-end latency and time to first token (the first streamed text), and the server's
tokens per forward (from the `timings` of the usage chunk), and -- from dlm_server's /metrics --
the mean number of sequences each batched forward served ("seqs/step"). Completion tokens come
from the usage chunk (`stream_options.include_usage`), so they are the server's own count.

Only httpx is needed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

import httpx

PROMPT_SETS = {
    # Short prompts the stories models can continue.
    "stories": [
        "Tell me a story about a little dog.",
        "Once upon a time, there was a girl named Lily. What did she find?",
        "Write a story about a big red ball.",
        "Tom and his mom went to the park. What happened next?",
        "Tell me about a cat who wanted to fly.",
        "Why was the little bird sad?",
        "Write a happy story about a tree.",
        "What did Ben see in the sky?",
    ],
    # General assistant questions (for chat models).
    "chat": [
        "What is 2+2?",
        "Give me three tips for writing clean code.",
        "Explain what a hash map is in two sentences.",
        "Summarize the plot of Romeo and Juliet.",
        "What is the capital of France, and why is it famous?",
        "Write a haiku about the sea.",
        "How does a bicycle stay upright?",
        "List four prime numbers greater than 50.",
    ],
}


@dataclass
class Result:
    ok: bool
    latency: float = 0.0
    ttft: Optional[float] = None
    completion_tokens: int = 0
    forward_passes: int = 0
    error: str = ""


@dataclass
class Run:
    concurrency: int
    wall: float = 0.0
    results: List[Result] = field(default_factory=list)
    # Server-side, from /metrics deltas (None when the server has no dlm_* metrics).
    mean_batch: Optional[float] = None


def scrape(url: str, headers: dict) -> dict:
    """The dlm_server counters this report uses, or {} when /metrics is not there."""
    try:
        r = httpx.get(url + "/metrics", headers=headers, timeout=10)
    except httpx.HTTPError:
        return {}
    if r.status_code != 200:
        return {}
    out = {}
    for line in r.text.splitlines():
        if line.startswith(("dlm_forward_passes_total ", "dlm_sequence_forwards_total ")):
            name, value = line.split()
            out[name] = float(value)
    return out


def load_prompts(name: str) -> List[str]:
    if name in PROMPT_SETS:
        return PROMPT_SETS[name]
    prompts = []
    with open(name, encoding="utf-8") as f:  # a .jsonl of {"prompt": ...} or plain lines
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                obj = json.loads(line)
                prompts.append(obj.get("prompt") or obj.get("text") or obj["messages"][-1]["content"])
            else:
                prompts.append(line)
    if not prompts:
        sys.exit(f"no prompts in {name}")
    return prompts


def one_request(client: httpx.Client, body: dict) -> Result:
    t0 = time.perf_counter()
    ttft = None
    usage, timings = None, None
    try:
        with client.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                r.read()
                return Result(False, error=f"HTTP {r.status_code}: {r.text[:200]}")
            done = False
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    return Result(False, error=str(chunk["error"].get("message")))
                for choice in chunk.get("choices") or ():
                    if ttft is None and (choice.get("delta") or {}).get("content"):
                        ttft = time.perf_counter() - t0
                if chunk.get("usage"):
                    usage, timings = chunk["usage"], chunk.get("timings") or {}
            if not done:
                return Result(False, error="stream ended before [DONE]")
    except httpx.HTTPError as e:
        return Result(False, error=repr(e))
    latency = time.perf_counter() - t0
    return Result(
        True,
        latency=latency,
        ttft=ttft,
        completion_tokens=(usage or {}).get("completion_tokens", 0),
        forward_passes=(timings or {}).get("forward_passes", 0),
    )


def run_level(args, prompts: List[str], concurrency: int) -> Run:
    run = Run(concurrency)
    lock = threading.Lock()
    next_index = [0]

    def body(i: int) -> dict:
        b = {
            "messages": [{"role": "user", "content": prompts[i % len(prompts)]}],
            "max_tokens": args.max_tokens,
            "temperature": args.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if args.model:
            b["model"] = args.model
        if args.mode:
            b["mode"] = args.mode
        if args.mode == "dlm":
            b["threshold"] = args.threshold
            if args.block_size:
                b["block_size"] = args.block_size
        return b

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    with httpx.Client(base_url=args.url, timeout=args.timeout, headers=headers, limits=limits) as client:

        def worker():
            while True:
                with lock:
                    i = next_index[0]
                    if i >= args.requests:
                        return
                    next_index[0] += 1
                res = one_request(client, body(i))
                with lock:
                    run.results.append(res)

        before = scrape(args.url, headers)
        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        run.wall = time.perf_counter() - t0
        after = scrape(args.url, headers)
    steps = after.get("dlm_forward_passes_total", 0) - before.get("dlm_forward_passes_total", 0)
    if before and after and steps > 0:
        seqs = after["dlm_sequence_forwards_total"] - before["dlm_sequence_forwards_total"]
        run.mean_batch = seqs / steps
    return run


def pct(values: List[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def table(runs: List[Run], mode: str) -> str:
    rows = [
        "| mode | concurrency | requests | failed | gen tok/s | req/s | p50 latency s | p95 latency s | p50 TTFT s | p95 TTFT s | tok/forward | seqs/step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        ok = [r for r in run.results if r.ok]
        tokens = sum(r.completion_tokens for r in ok)
        forwards = sum(r.forward_passes for r in ok)
        lat = [r.latency for r in ok]
        ttft = [r.ttft for r in ok if r.ttft is not None]
        rows.append(
            f"| {mode or 'server default'} | {run.concurrency} | {len(run.results)} | {len(run.results) - len(ok)} "
            f"| {tokens / run.wall:.1f} | {len(ok) / run.wall:.2f} "
            f"| {pct(lat, 0.5):.3f} | {pct(lat, 0.95):.3f} | {pct(ttft, 0.5):.3f} | {pct(ttft, 0.95):.3f} "
            f"| {tokens / forwards if forwards else float('nan'):.2f} "
            f"| {'-' if run.mean_batch is None else f'{run.mean_batch:.1f}'} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:30000", help="server root (default %(default)s)")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default %(default)s)")
    p.add_argument("--requests", type=int, default=32, help="requests per level (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=64, help="max_tokens of each request (default %(default)s)")
    p.add_argument("--mode", choices=["ar", "dlm"], default=None, help="decoding mode sent with each request (default: the server's)")
    p.add_argument("--threshold", type=float, default=0.9, help="diffusion threshold with --mode dlm (default %(default)s)")
    p.add_argument("--block-size", type=int, default=None, help="diffusion block size with --mode dlm (default: the server's)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default %(default)s, greedy)")
    p.add_argument("--prompt-set", default="stories", help=f"{', '.join(PROMPT_SETS)} or a file (.jsonl with a prompt field, or one prompt per line)")
    p.add_argument("--model", default=None, help="model id to send (default: none, the server's)")
    p.add_argument("--api-key", default=None, help="bearer token, if the server wants one")
    p.add_argument("--timeout", type=float, default=600.0, help="per-request timeout in seconds")
    p.add_argument("--json", action="store_true", help="also print the raw numbers as JSON")
    args = p.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    prompts = load_prompts(args.prompt_set)
    args.url = args.url.rstrip("/").removesuffix("/v1")

    try:
        httpx.get(args.url + "/health", timeout=10).raise_for_status()
    except httpx.HTTPError as e:
        sys.exit(f"{args.url}/health is not OK: {e}")
    # Warm-up (untimed): first-touch page faults, allocator growth.
    warm = run_level(argparse.Namespace(**{**vars(args), "requests": 1}), prompts, 1)
    if not warm.results[0].ok:
        sys.exit(f"warm-up request failed: {warm.results[0].error}")

    runs = []
    for c in levels:
        run = run_level(args, prompts, c)
        runs.append(run)
        failed = [r.error for r in run.results if not r.ok]
        print(f"concurrency {c}: {len(run.results)} requests in {run.wall:.2f} s"
              + (f", {len(failed)} failed (first: {failed[0]})" if failed else ""), file=sys.stderr)
    print(table(runs, args.mode))
    if args.json:
        print(json.dumps([{"concurrency": r.concurrency, "wall": r.wall, "results": [vars(x) for x in r.results]} for r in runs]))
    return 1 if any(not x.ok for r in runs for x in r.results) else 0


if __name__ == "__main__":
    sys.exit(main())
