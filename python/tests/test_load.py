"""Load: 32 concurrent streaming requests (AR and block diffusion sharing the scheduler's batched
forwards) plus 8 clients that hang up mid-stream. Every completed stream is well-formed,
/health stays 200 throughout, and afterwards every slot, queue place and live sequence is free."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from conftest import LOAD_PROMPTS as PROMPTS, sse_events, wait_for

CHAT = "/v1/chat/completions"
MAX_TOKENS = 10


@pytest.fixture(scope="module")
def load_server(start_server, mask_model):
    return start_server("load", "--model", str(mask_model), "--max-concurrency", "16", "--queue-size", "64")


def request_body(i: int, max_tokens: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": max_tokens,
        "stream": True,
    }
    if i % 2:
        body.update(mode="dlm", block_size=8, threshold=0.9)
    else:
        body.update(mode="ar")
    if i % 4 < 2:
        body["stream_options"] = {"include_usage": True}
    return body


def check_stream(i: int, events: list) -> dict:
    """Asserts one completed stream is well-formed; returns its usage (or {})."""
    assert events and events[-1] == "[DONE]", f"request {i}: no [DONE]: {events[-3:]}"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all("error" not in c for c in chunks), f"request {i}: {chunks}"
    first = chunks[0]
    assert first["choices"][0]["delta"].get("role") == "assistant", f"request {i}: {first}"
    assert {c["id"] for c in chunks} == {first["id"]}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    finishes = [(n, ch["finish_reason"]) for n, c in enumerate(chunks) for ch in c["choices"] if ch["finish_reason"]]
    assert len(finishes) == 1 and finishes[0][1] in {"stop", "length"}, f"request {i}: {finishes}"
    body = request_body(i, MAX_TOKENS)
    usage = {}
    if "stream_options" in body:
        assert finishes[0][0] == len(chunks) - 2, f"request {i}: the usage chunk must follow the finish"
        usage = chunks[-1]["usage"]
        assert chunks[-1]["choices"] == []
        assert 0 < usage["completion_tokens"] <= MAX_TOKENS
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        if finishes[0][1] == "length":
            assert usage["completion_tokens"] == MAX_TOKENS
    else:
        assert finishes[0][0] == len(chunks) - 1
    return usage


def test_concurrent_streams_and_disconnects(load_server):
    url = load_server.url
    before = load_server.metrics()
    results, errors, hangups, health = {}, [], [], []
    stop_health = threading.Event()
    start = threading.Barrier(32 + 8 + 1)

    def stream(i):
        try:
            start.wait()
            with httpx.Client(base_url=url, timeout=120) as c:
                with c.stream("POST", CHAT, json=request_body(i, MAX_TOKENS)) as r:
                    assert r.status_code == 200, r.read()
                    results[i] = sse_events(r)
        except BaseException as e:  # noqa: BLE001 -- reported by the main thread
            errors.append((i, repr(e)))

    def hang_up(i):
        try:
            start.wait()
            with httpx.Client(base_url=url, timeout=120) as c:
                with c.stream("POST", CHAT, json=request_body(i, 300)) as r:
                    assert r.status_code == 200
                    for line in r.iter_lines():
                        if line.startswith("data:") and '"content":"' in line and '"role"' not in line:
                            hangups.append(i)
                            break  # leaving the block closes the connection mid-stream
        except BaseException as e:  # noqa: BLE001
            errors.append((i, repr(e)))

    def watch_health():
        with httpx.Client(base_url=url, timeout=10) as c:
            start.wait()
            while not stop_health.is_set():
                try:
                    health.append(c.get("/health").status_code)
                except httpx.HTTPError as e:
                    health.append(repr(e))
                time.sleep(0.05)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(32)]
    threads += [threading.Thread(target=hang_up, args=(100 + i,)) for i in range(8)]
    watcher = threading.Thread(target=watch_health)
    for t in threads + [watcher]:
        t.start()
    for t in threads:
        t.join(300)
    stop_health.set()
    watcher.join(30)

    assert not errors, errors
    assert sorted(results) == list(range(32))
    assert sorted(hangups) == list(range(100, 108))
    usages = [check_stream(i, results[i]) for i in range(32)]
    assert len(health) >= 3 and set(health) == {200}, health

    def settled():
        m = load_server.metrics()
        busy = (m["dlm_slots_busy"], m["dlm_queue_depth"], m["dlm_live_sequences"])
        return m if busy == (0, 0, 0) else None

    after = wait_for(settled, timeout=30, what="every slot, queue place and sequence to be free")
    print({k: after[k] - before.get(k, 0) for k in ("dlm_cancelled_total", "dlm_forward_passes_total", "dlm_sequence_forwards_total", "dlm_generated_tokens_total")})
    assert after["dlm_slots_total"] == 16
    assert after["dlm_cancelled_total"] - before["dlm_cancelled_total"] >= 1
    assert after['dlm_requests_total{route="/v1/chat/completions",status="200"}'] >= 40
    generated = after["dlm_generated_tokens_total"] - before["dlm_generated_tokens_total"]
    assert generated >= sum(u.get("completion_tokens", 0) for u in usages)
    # Batching: fewer scheduler steps than sequence forwards.
    steps = after["dlm_forward_passes_total"] - before["dlm_forward_passes_total"]
    seq_forwards = after["dlm_sequence_forwards_total"] - before["dlm_sequence_forwards_total"]
    assert 0 < steps < seq_forwards

    # And the server still answers normally.
    r = httpx.post(url + CHAT, json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in {"stop", "length"}
