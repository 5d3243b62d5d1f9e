"""Requests no well-behaved client sends: each gets a 4xx in OpenAI's error shape (checked against
OpenAI's `ErrorResponse` schema), and the server keeps answering."""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest

from conftest import AR_MODEL, sse_events, wait_for

CHAT = "/v1/chat/completions"
OK_BODY = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
JSON = {"content-type": "application/json"}


def bad_chat(body, **fields):
    return json.dumps(dict(OK_BODY, **fields) if body is None else body).encode()


# (name, method, path, raw body, headers, status, param or None, code or None)
CASES = [
    ("malformed json", "POST", CHAT, b'{"messages": [', JSON, 400, None, None),
    ("trailing garbage", "POST", CHAT, b'{"messages": []} xyz', JSON, 400, None, None),
    ("empty body", "POST", CHAT, b"", JSON, 400, None, None),
    ("json array", "POST", CHAT, b"[1, 2]", JSON, 400, None, None),
    ("json null", "POST", CHAT, b"null", JSON, 400, None, None),
    ("deeply nested", "POST", CHAT, b"[" * 100_000 + b"]" * 100_000, JSON, 400, None, None),
    ("NaN", "POST", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', JSON, 400, None, None),
    ("non-utf8 body", "POST", CHAT, b'{"messages": [{"role": "user", "content": "\xff\xfe\xc3"}]}', JSON, 400, None, None),
    ("lone surrogate escape", "POST", CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', JSON, 400, None, None),
    ("messages missing", "POST", CHAT, bad_chat({"max_tokens": 3}), JSON, 400, "messages", None),
    ("messages empty", "POST", CHAT, bad_chat(None, messages=[]), JSON, 400, "messages", None),
    ("messages a string", "POST", CHAT, bad_chat(None, messages="hello"), JSON, 400, "messages", None),
    ("message not an object", "POST", CHAT, bad_chat(None, messages=["hello"]), JSON, 400, "messages[0]", None),
    ("unknown role", "POST", CHAT, bad_chat(None, messages=[{"role": "wizard", "content": "x"}]), JSON, 400, "messages[0].role", None),
    ("content a number", "POST", CHAT, bad_chat(None, messages=[{"role": "user", "content": 5}]), JSON, 400, "messages[0].content", None),
    ("image part", "POST", CHAT, bad_chat(None, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]), JSON, 400, "messages[0].content[0].type", None),
    ("temperature a string", "POST", CHAT, bad_chat(None, temperature="hot"), JSON, 400, "temperature", None),
    ("temperature out of range", "POST", CHAT, bad_chat(None, temperature=9), JSON, 400, "temperature", None),
    ("max_tokens negative", "POST", CHAT, bad_chat(None, max_tokens=-1), JSON, 400, "max_tokens", None),
    ("max_tokens a float", "POST", CHAT, bad_chat(None, max_tokens=2.5), JSON, 400, "max_tokens", None),
    ("max_tokens 1e30", "POST", CHAT, b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1e30}', JSON, 400, "max_tokens", None),
    ("huge max_tokens", "POST", CHAT, bad_chat(None, max_tokens=10**9), JSON, 400, "max_tokens", "context_length_exceeded"),
    ("huge completion max_tokens", "POST", "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 2**62}).encode(), JSON, 400, "max_tokens", "context_length_exceeded"),
    ("prompt longer than the context", "POST", CHAT, bad_chat(None, messages=[{"role": "user", "content": "dog " * 5000}]), JSON, 400, None, "context_length_exceeded"),
    ("stream a string", "POST", CHAT, bad_chat(None, stream="yes"), JSON, 400, "stream", None),
    ("stop a number", "POST", CHAT, bad_chat(None, stop=7), JSON, 400, "stop", None),
    ("stop list of numbers", "POST", CHAT, bad_chat(None, stop=[1, 2]), JSON, 400, "stop", None),
    ("n=3", "POST", CHAT, bad_chat(None, n=3), JSON, 400, "n", None),
    ("seed a string", "POST", CHAT, bad_chat(None, seed="abc"), JSON, 400, "seed", None),
    ("unknown field", "POST", CHAT, bad_chat(None, frobnicate=True), JSON, 400, "frobnicate", None),
    ("unknown message field", "POST", CHAT, bad_chat(None, messages=[{"role": "user", "content": "x", "mood": "happy"}]), JSON, 400, "messages[0].mood", None),
    ("tools", "POST", CHAT, bad_chat(None, tools=[{"type": "function", "function": {"name": "f"}}]), JSON, 400, "tools", None),
    ("bad mode", "POST", CHAT, bad_chat(None, mode="turbo"), JSON, 400, "mode", None),
    ("block_size 0", "POST", CHAT, bad_chat(None, block_size=0), JSON, 400, "block_size", None),
    ("threshold > 1", "POST", CHAT, bad_chat(None, threshold=3), JSON, 400, "threshold", None),
    ("stream_options a list", "POST", CHAT, bad_chat(None, stream=True, stream_options=[1]), JSON, 400, "stream_options", None),
    ("completion prompt missing", "POST", "/v1/completions", b'{"max_tokens": 2}', JSON, 400, "prompt", None),
    ("completion prompt of ints", "POST", "/v1/completions", b'{"prompt": [1, 2, 3]}', JSON, 400, "prompt", None),
    ("unknown model", "POST", CHAT, bad_chat(None, model="gpt-5"), JSON, 404, None, "model_not_found"),
    ("unknown model card", "GET", "/v1/models/gpt-5", None, {}, 404, None, "model_not_found"),
    ("unknown route", "GET", "/v2/everything", None, {}, 404, None, None),
    ("unknown route POST", "POST", "/v1/embeddings", b"{}", JSON, 404, None, None),
    ("wrong method", "GET", CHAT, None, {}, 405, None, None),
    ("wrong method on models", "DELETE", "/v1/models", None, {}, 405, None, None),
    ("10 MB body", "POST", CHAT, b'{"messages": [{"role": "user", "content": "' + b"a" * (10 << 20) + b'"}]}', JSON, 413, None, None),
]


@pytest.fixture(scope="module")
def http(ar_server):
    with httpx.Client(base_url=ar_server.url, timeout=60) as c:
        yield c


@pytest.mark.parametrize("name,method,path,body,headers,status,param,code", CASES, ids=[c[0] for c in CASES])
def test_hostile_request(http, ar_server, schemas, name, method, path, body, headers, status, param, code):
    r = http.request(method, path, content=body, headers=headers)
    assert r.status_code == status, r.text[:500]
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()
    schemas.validate("ErrorResponse", err)
    assert err["error"]["message"]
    if param is not None:
        assert err["error"]["param"] == param, err
    if code is not None:
        assert err["error"]["code"] == code, err
    assert http.get("/health").status_code == 200
    assert ar_server.alive()


def test_content_type_is_not_required(http):
    """curl -d sends form encoding; the body is read as JSON whatever the header says."""
    for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}):
        r = http.post(CHAT, content=json.dumps(OK_BODY).encode(), headers=headers)
        assert r.status_code == 200, (headers, r.text)
        assert r.json()["object"] == "chat.completion"


def test_garbage_on_the_socket(ar_server, http):
    """Bytes that are not HTTP, and a connection dropped halfway through a body."""
    for payload in (b"\x00\xff" * 1000 + b"\r\n\r\n", b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"messa"):
        with socket.create_connection(("127.0.0.1", ar_server.port), timeout=10) as s:
            try:  # the server may answer 400 and hang up before all of it is sent
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                s.recv(4096)
            except OSError:
                pass
    assert http.get("/health").status_code == 200
    assert http.post(CHAT, json=OK_BODY).status_code == 200


def test_keep_alive_survives_refused_bodies(ar_server, auth_server):
    """A refused request's body is read before the answer, so the connection stays usable: were
    it left unread, the server would close the connection after answering and the client's next
    request on it would fail with "server disconnected"."""
    for server, path in ((ar_server, "/v1/embeddings"), (ar_server, "/health"), (auth_server, CHAT)):
        with httpx.Client(base_url=server.url, timeout=30) as c:
            for _ in range(40):
                r = c.request("PUT" if path == "/health" else "POST", path, content=b'{"input": "' + b"x" * 50_000 + b'"}')
                assert r.status_code in (401, 404, 405), r.text
                assert c.get("/health").status_code == 200


def test_still_serving_after_all_that(http, ar_server):
    assert ar_server.alive()
    assert http.get("/health").json() == {"status": "ok"}
    r = http.post(CHAT, json=OK_BODY)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    with http.stream("POST", CHAT, json=dict(OK_BODY, stream=True)) as s:
        assert sse_events(s)[-1] == "[DONE]"
    m = ar_server.metrics()
    assert m['dlm_requests_total{route="/v1/chat/completions",status="400"}'] >= 20
    assert m["dlm_slots_busy"] == 0


def test_auth_errors(auth_server, schemas):
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "sekrit-key"}, {"authorization": "Basic c2Vrcml0LWtleQ=="}):
        r = httpx.post(auth_server.url + CHAT, json=OK_BODY, headers=headers)
        assert r.status_code == 401, headers
        schemas.validate("ErrorResponse", r.json())
        assert r.json()["error"]["code"] == "invalid_api_key"
    r = httpx.post(auth_server.url + CHAT, json=OK_BODY, headers={"authorization": "Bearer sekrit-key"})
    assert r.status_code == 200


@pytest.fixture(scope="module")
def one_slot_server(start_server):
    return start_server(
        "one-slot", "--model", str(AR_MODEL), "--max-concurrency", "1", "--queue-size", "0"
    )


def test_queue_full_is_429(one_slot_server, schemas):
    url = one_slot_server.url
    # The clients exist (and are connected) before the slot is held: creating an httpx client
    # takes tens of milliseconds, longer than the held stream may last.
    clients = [httpx.Client(base_url=url, timeout=30) for _ in range(6)]
    for cl in clients:
        assert cl.get("/health").status_code == 200
    # The threads that send the concurrent requests are started before the slot is held and
    # wait for `go`: the held stream of the tiny model lasts ~70 ms, less than starting six
    # threads and their requests one after the other may take.
    results = []
    go = threading.Event()

    def fire(cl):
        go.wait(30)
        results.append(cl.post(CHAT, json=OK_BODY))

    threads = [threading.Thread(target=fire, args=(cl,)) for cl in clients]
    for t in threads:
        t.start()
    with httpx.Client(base_url=url, timeout=60) as c:
        # Hold the only slot with a long stream (its role chunk says it was admitted).
        with c.stream("POST", CHAT, json={"messages": OK_BODY["messages"], "max_tokens": 400, "stream": True}) as held:
            assert held.status_code == 200
            lines = held.iter_lines()
            assert next(lines).startswith("data:")
            # Concurrent requests: every one is refused at once while the slot is held.
            go.set()
            for t in threads:
                t.join()
            assert [r.status_code for r in results] == [429] * 6
            for r in results:
                schemas.validate("ErrorResponse", r.json())
                assert r.json()["error"]["type"] == "rate_limit_error"
                assert r.json()["error"]["code"] == "queue_full"
            assert c.get("/health").status_code == 200
        for cl in clients:
            cl.close()
        # The client went away: the slot frees at the next step, and a request goes through.
        wait_for(lambda: one_slot_server.metrics()["dlm_slots_busy"] == 0, what="the held slot to free")
        r = c.post(CHAT, json=OK_BODY)
        assert r.status_code == 200
        m = one_slot_server.metrics()
        assert m["dlm_rejected_total"] == 6
        assert m['dlm_requests_total{route="/v1/chat/completions",status="429"}'] == 6
        assert m["dlm_cancelled_total"] >= 1
