"""The opt-in step trace (`stream_options.include_steps`, docs/api.md) against the bundled demo DLM:
untraced streams keep their exact bytes, traced streams add only `: dlm.step {json}` comment lines
that the official SDK ignores, and the steps replay each request's own generation, also when the
scheduler batches concurrent requests. Greedy decoding throughout, so two runs agree."""

from __future__ import annotations

import json
import re
import threading
from typing import Dict, List, Tuple

import httpx
import openai
import pytest

from conftest import REPO, wait_for

DEMO_DLM = REPO / "models" / "stories260K-dlm.gguf"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
STEP = ": dlm.step "
PROMPTS = [
    "Tell me a story about a dog.",
    "What did Lily find in the garden?",
    "Once upon a time there was a big tree.",
    "Why is the sky blue?",
    "Tom had a red ball.",
    "The cat sat on the mat and",
    "Where do birds sleep at night?",
    "Sue and Ben went to the park.",
]


@pytest.fixture(scope="module")
def server(start_server):
    return start_server("trace", "--model", str(DEMO_DLM), "--max-concurrency", "8")


@pytest.fixture(scope="module")
def vocab() -> List[str]:
    """The demo model's vocabulary, read with llama.cpp's `gguf` package (an independent decoder)."""
    import gguf

    field = gguf.GGUFReader(str(DEMO_DLM)).fields["tokenizer.ggml.tokens"]
    return [bytes(field.parts[i]).decode("utf-8") for i in field.data]


@pytest.fixture(scope="module")
def mask_id(server) -> int:
    return httpx.get(server.base_url + "/models").json()["data"][0]["dlm"]["mask_token_id"]


def sp_decode(vocab: List[str], ids: List[int]) -> str:
    """SentencePiece decoding as a continuation (`▁` is a space, `<0xNN>` a byte)."""
    out = bytearray()
    for i in ids:
        t = vocab[i]
        m = re.fullmatch(r"<0x([0-9A-F]{2})>", t)
        out += bytes([int(m.group(1), 16)]) if m else t.replace("▁", " ").encode()
    return out.decode("utf-8", "replace")


def chat_body(prompt: str, max_tokens: int = 48, **extra) -> dict:
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    body.update(extra)
    return body


def raw_stream(server, path: str, body: dict) -> str:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        with c.stream("POST", path, json=body) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            return r.read().decode("utf-8")


def normalize(raw: str) -> str:
    """Replaces what differs between two runs of a request: the stream's id and timestamp."""
    raw = re.sub(r'"id":"(chatcmpl|cmpl)-[0-9a-f]+"', r'"id":"\1-ID"', raw)
    return re.sub(r'"created":\d+', '"created":0', raw)


def normalize_timings(raw: str) -> str:
    """The usage chunk's `timings` are wall-clock measurements: their milliseconds differ too."""
    return re.sub(r'"(prompt_ms|predicted_ms)":[0-9.e+-]+', r'"\1":0', raw)


def split_trace(raw: str) -> Tuple[str, List[dict]]:
    """The stream without its step lines (each is one comment line and a blank line), and the
    step records in order."""
    kept, steps = [], []
    for event in raw.split("\n\n"):
        if event.startswith(STEP):
            assert "\n" not in event, f"a step line spans lines: {event[:200]!r}"
            steps.append(json.loads(event[len(STEP):]))
        else:
            kept.append(event)
    return "\n\n".join(kept), steps


def events(raw: str) -> List[Tuple[str, object]]:
    """("step", record) and ("data", chunk or "[DONE]") in stream order."""
    out = []
    for event in raw.split("\n\n"):
        if not event:
            continue
        if event.startswith(STEP):
            out.append(("step", json.loads(event[len(STEP):])))
        else:
            assert event.startswith("data: ") and "\n" not in event, repr(event[:200])
            payload = event[len("data: "):]
            out.append(("data", payload if payload == "[DONE]" else json.loads(payload)))
    return out


def content_of(chunks: List[dict]) -> str:
    text = ""
    for c in chunks:
        for ch in c["choices"]:
            text += ch.get("delta", {}).get("content") or ch.get("text") or ""
    return text


def check_steps(steps: List[dict], stream_id: str, mask: int, vocab: List[str]) -> List[int]:
    """Checks every record and the replay of its block; returns the generated positions of the
    final records in order (prompt positions left out)."""
    assert steps, "no step lines"
    generated: List[int] = []
    block_tokens: Dict[int, List[int]] = {}
    passes = 0
    for n, s in enumerate(steps, 1):
        what = f"step {n}: {json.dumps(s)[:300]}"
        assert s["object"] == "dlm.step" and s["id"] == stream_id and s["index"] == 0, what
        assert s["step"] == n, what
        assert s["forward_passes"] >= passes, what
        passes = s["forward_passes"]
        b = s["block_size"]
        assert s["block_start"] == s["block"] * b, what
        assert len(s["tokens"]) == len(s["pieces"]) == len(s["masked"]) == b, what
        assert s["masked"] == [t == mask for t in s["tokens"]], what
        lo, hi = s["sub_block"]
        assert 0 <= lo < hi <= b and 0 <= s["prompt_len_in_block"] <= b, what
        assert s["elapsed_ms"] >= 0, what
        for t, p, m in zip(s["tokens"], s["pieces"], s["masked"]):
            # The pieces are each token's text (independently: the vocabulary entry, decoded).
            assert p == ("" if m else sp_decode(vocab, [t])), what
        before = list(block_tokens.get(s["block"], []))
        previous_masks = sum(t == mask for t in before)
        if not before:
            before = list(s["tokens"])
            for c in s["committed"]:
                before[c["pos"]] = mask
        for c in s["committed"]:
            assert before[c["pos"]] == mask, f"{what}: position {c['pos']} committed twice"
            before[c["pos"]] = c["token"]
            assert c["piece"] == s["pieces"][c["pos"]], what
            if c["confidence"] is None:
                assert c["pos"] == 0, f"{what}: only a block's first token is decided without a confidence"
            else:
                assert 0.0 <= c["confidence"] <= 1.0, what
                assert lo <= c["pos"] < hi, f"{what}: committed outside the sub-block"
        assert before == s["tokens"], f"{what}: the tokens are the previous state plus this step's commits"
        if s["final"]:
            generated.extend(s["tokens"][s["prompt_len_in_block"]:])
            block_tokens.pop(s["block"], None)
            assert all(t["block"] != s["block"] for t in steps[n:]), f"{what}: records after the final one"
        else:
            assert s["committed"], f"{what}: a step commits at least one position"
            if s["block"] in block_tokens:
                assert sum(s["masked"]) < previous_masks, f"{what}: the masks must decrease"
            block_tokens[s["block"]] = before
    assert steps[-1]["final"], "the last record is final"
    assert not block_tokens, f"blocks without a final record: {sorted(block_tokens)}"
    blocks = [s["block"] for s in steps if s["final"]]
    assert blocks == list(range(blocks[0], blocks[0] + len(blocks))), blocks
    return generated


def check_replay(raw: str, mask: int, vocab: List[str]) -> Tuple[str, List[dict], List[dict]]:
    """The steps of a traced stream reproduce its text and usage; text chunks never run ahead of
    the steps. Returns (content, chunks, steps)."""
    evs = events(raw)
    chunks = [e for k, e in evs if k == "data" and e != "[DONE]"]
    steps = [e for k, e in evs if k == "step"]
    generated = check_steps(steps, chunks[0]["id"], mask, vocab)
    content = content_of(chunks)
    usage = chunks[-1]["usage"]
    n = usage["completion_tokens"]
    assert len(generated) >= n
    assert sp_decode(vocab, generated[:n]) == content
    assert "".join(sp_decode(vocab, [t]) for t in generated[:n]) == content
    finish = [ch["finish_reason"] for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    rest = generated[n:]
    if finish == ["stop"]:
        assert rest and (rest[0] == 2 or rest[0] == mask), f"after the output: {rest[:3]}"
    # Order: every text chunk is covered by the steps before it.
    known: Dict[int, List[int]] = {}
    streamed = ""
    for kind, e in evs:
        if kind == "step":
            known[e["block"]] = e["tokens"][e["prompt_len_in_block"]:]
        elif e != "[DONE]":
            streamed += content_of([e])
            final_prefix: List[int] = []
            for block in sorted(known):
                toks = known[block]
                cut = next((i for i, t in enumerate(toks) if t == mask or t == 2), len(toks))
                final_prefix += toks[:cut]
                if cut < len(toks):
                    break
            assert sp_decode(vocab, final_prefix).startswith(streamed), (
                f"text {streamed!r} was streamed before the steps made it final ({sp_decode(vocab, final_prefix)!r})"
            )
    return content, chunks, steps


def expected_chat_stream(chunks: List[dict], include_usage: bool) -> str:
    """The untraced chat framing, byte for byte: the role chunk, one chunk per text piece, the
    finish chunk, the usage chunk when asked, `[DONE]`; compact JSON in this key order."""
    c0 = chunks[0]

    def chunk(delta, finish) -> dict:
        out = {
            "id": c0["id"], "object": "chat.completion.chunk", "created": c0["created"],
            "model": c0["model"],
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if include_usage:
            out["usage"] = None
        return out

    texts = [c["choices"][0]["delta"]["content"] for c in chunks[1:-2 if include_usage else -1]]
    want = [chunk({"role": "assistant", "content": ""}, None)]
    want += [chunk({"content": t}, None) for t in texts]
    want.append(chunk({}, chunks[-2 if include_usage else -1]["choices"][0]["finish_reason"]))
    if include_usage:
        last = chunks[-1]
        want.append({
            "id": c0["id"], "object": "chat.completion.chunk", "created": c0["created"],
            "model": c0["model"], "choices": [], "usage": last["usage"], "timings": last["timings"],
        })
    return "".join(f"data: {json.dumps(w, separators=(',', ':'), ensure_ascii=False)}\n\n" for w in want) + "data: [DONE]\n\n"


@pytest.mark.parametrize("include_usage", [False, True])
def test_untraced_stream_is_unchanged_by_the_trace_and_keeps_its_framing(server, include_usage):
    body = chat_body(PROMPTS[0])
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    plain = raw_stream(server, CHAT, body)
    assert not any(line.startswith(":") for line in plain.split("\n")), "comment lines without the option"
    chunks = [json.loads(e[len("data: "):]) for e in plain.split("\n\n") if e and e != "data: [DONE]"]
    assert len(chunks) >= 4 and content_of(chunks).strip(), plain[:500]
    # Pinned framing: any change to the untraced stream's bytes shows here.
    assert plain == expected_chat_stream(chunks, include_usage)

    traced_body = dict(body, stream_options={**body.get("stream_options", {}), "include_steps": True})
    traced = raw_stream(server, CHAT, traced_body)
    without, steps = split_trace(traced)
    assert len(steps) >= 2
    a, b = normalize(plain), normalize(without)
    if include_usage:
        a, b = normalize_timings(a), normalize_timings(b)
    assert a == b, "the traced stream minus its step lines differs from the untraced stream"


def test_the_openai_sdk_reads_a_traced_stream_as_the_untraced_one(server, vocab, mask_id):
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0, timeout=120)
    params = dict(model="stories260K-dlm", messages=[{"role": "user", "content": PROMPTS[1]}],
                  max_tokens=48, temperature=0, stream=True)

    def read(stream_options) -> Tuple[List[tuple], str]:
        chunks = list(client.chat.completions.create(**params, stream_options=stream_options))
        assert all(c.object == "chat.completion.chunk" for c in chunks)
        assert len({c.id for c in chunks}) == 1
        shape = [
            (tuple((ch.delta.role, ch.delta.content, ch.finish_reason) for ch in c.choices),
             c.usage.model_dump() if c.usage else None)
            for c in chunks
        ]
        return shape, "".join(ch.delta.content or "" for c in chunks for ch in c.choices)

    plain, text = read({"include_usage": True})
    traced, traced_text = read({"include_usage": True, "include_steps": True})
    assert traced == plain and traced_text == text and text.strip()
    usage = plain[-1][1]
    assert usage["completion_tokens"] > 0

    # The same request's raw bytes: the steps reproduce that text and token count.
    raw = raw_stream(server, CHAT, chat_body(PROMPTS[1], stream_options={"include_usage": True, "include_steps": True}))
    content, chunks, steps = check_replay(raw, mask_id, vocab)
    assert content == text
    assert chunks[-1]["usage"]["completion_tokens"] == usage["completion_tokens"]
    assert steps[-1]["forward_passes"] <= chunks[-1]["timings"]["forward_passes"]
    assert any(c["confidence"] is not None for s in steps for c in s["committed"])


def test_completions_are_traced_too(server, vocab, mask_id):
    body = {"prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True, "include_steps": True}}
    raw = raw_stream(server, COMPLETIONS, body)
    content, chunks, steps = check_replay(raw, mask_id, vocab)
    assert re.fullmatch(r"cmpl-[0-9a-f]+", chunks[0]["id"])
    assert all(c["object"] == "text_completion" for c in chunks)
    assert content.strip()
    # The short prompt shares the first block with the generation.
    assert steps[0]["block"] == 0 and steps[0]["prompt_len_in_block"] > 0
    untraced = raw_stream(server, COMPLETIONS, dict(body, stream_options={"include_usage": True}))
    assert normalize_timings(normalize(untraced)) == normalize_timings(normalize(split_trace(raw)[0]))


def test_ar_mode_accepts_the_option_and_sends_no_steps(server):
    body = chat_body(PROMPTS[2], max_tokens=12, mode="ar")
    plain = raw_stream(server, CHAT, body)
    traced = raw_stream(server, CHAT, dict(body, stream_options={"include_steps": True}))
    assert STEP not in traced
    assert normalize(traced) == normalize(plain)


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize(
    "stream, value", [(True, "yes"), (True, 1), (True, [True]), (True, {"on": True}), (False, True), (None, True)]
)
def test_bad_include_steps_is_a_400_naming_it(server, path, stream, value):
    body = {"max_tokens": 4, "stream_options": {"include_steps": value}}
    if stream is not None:
        body["stream"] = stream
    body.update({"messages": [{"role": "user", "content": "Hi"}]} if path == CHAT else {"prompt": "Hi"})
    r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "stream_options.include_steps" and "include_steps" in err["message"], err
    assert err["type"] == "invalid_request_error"


def test_concurrent_traced_streams_get_their_own_steps_while_batched(server, vocab, mask_id):
    solo = {}
    for i, p in enumerate(PROMPTS):
        raw = raw_stream(server, CHAT, chat_body(p, max_tokens=40))
        solo[i] = content_of([json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")])
    assert len(set(solo.values())) >= 4, f"the prompts should give different answers: {solo}"

    before = server.metrics()
    results: Dict[int, str] = {}
    errors = []
    start = threading.Barrier(len(PROMPTS))

    def run(i: int) -> None:
        try:
            start.wait()
            body = chat_body(PROMPTS[i], max_tokens=40, stream_options={"include_usage": True, "include_steps": True})
            results[i] = raw_stream(server, CHAT, body)
        except BaseException as e:  # noqa: BLE001 -- reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    after = wait_for(lambda: (m := server.metrics())["dlm_live_sequences"] == 0 and m, what="idle")

    ids = set()
    for i in range(len(PROMPTS)):
        content, chunks, steps = check_replay(results[i], mask_id, vocab)
        ids.add(chunks[0]["id"])
        # Greedy decoding gives each request its own answer, batched or not.
        assert content == solo[i], f"request {i}: {content!r} != {solo[i]!r}"
    assert len(ids) == len(PROMPTS)
    steps = after["dlm_forward_passes_total"] - before["dlm_forward_passes_total"]
    seq_forwards = after["dlm_sequence_forwards_total"] - before["dlm_sequence_forwards_total"]
    assert 0 < steps < seq_forwards, f"not batched: {steps} scheduler steps for {seq_forwards} sequence forwards"
