"""The `wrinklefree_inference` client: the seed's usage verbatim, its API, and its errors (against a
real server, and against scripted answers for what a healthy server never sends)."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import httpx
import pytest

from wrinklefree_inference import (
    BitNetClient,
    DlmClientError,
    DlmConnectionError,
    DlmProtocolError,
    DlmServerError,
    DlmTimeoutError,
)

# The "Using the Python Client" section of the seed, verbatim (only `messages`, which the seed
# leaves to the reader, is defined first, and the URL points at the test's server).
SEED_SNIPPET = textwrap.dedent(
    '''
    from wrinklefree_inference.client import BitNetClient

    client = BitNetClient.from_url("http://localhost:30000")

    # Non-streaming
    response = client.chat_openai([
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hello!"}
    ])
    print(response)

    # Streaming
    for token in client.chat_openai_stream(messages):
        print(token, end="", flush=True)
    '''
)


@pytest.fixture(scope="module")
def seed_server(start_server):
    """The bundled model with a short context: the seed's requests send no max_tokens, so each
    answer runs to the end of the context (the tiny story model rarely says EOS to a chat)."""
    return start_server("seed", "--ctx-size", "96")


def test_seed_usage_verbatim(seed_server):
    messages = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Hello!"}]
    script = f"messages = {messages!r}\n" + SEED_SNIPPET.replace("http://localhost:30000", seed_server.url)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    response, newline, streamed = out.stdout.partition("\n")
    assert newline and response.strip()
    # Greedy decoding (the server's default): the streamed pieces join to the same answer.
    assert streamed == response


def test_chat_and_stream_agree_in_diffusion_mode(dlm_server):
    client = BitNetClient.from_url(dlm_server.url + "/v1/")
    messages = [{"role": "user", "content": "Tell me a story about a cat."}]
    params = dict(max_tokens=20, mode="dlm", block_size=8, threshold=0.9)
    text = client.chat_openai(messages, **params)
    pieces = list(client.chat_openai_stream(messages, **params))
    assert len(pieces) >= 2 and all(pieces)
    assert "".join(pieces) == text
    full = client.create_chat_completion(messages, **params)
    assert full["usage"]["completion_tokens"] <= 20
    assert full["timings"]["mode"] == "dlm"
    chunks = list(client.chat_openai_stream_chunks(messages, **params, stream_options={"include_usage": True}))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["usage"] == full["usage"]


def test_complete_models_health(ar_server):
    client = BitNetClient.from_url(ar_server.url, timeout=60)
    assert client.health() == {"status": "ok"}
    models = client.models()
    assert len(models) == 1 and models[0]["id"] == "stories260K"
    one = client.complete("Once upon a time", max_tokens=8)
    assert isinstance(one, str) and one
    both = client.complete(["Once upon a time", "The dog"], max_tokens=8)
    assert isinstance(both, list) and len(both) == 2 and both[0] == one
    assert "".join(client.complete_stream("Once upon a time", max_tokens=8)) == one
    # A model id sent with every request is checked by the server.
    named = BitNetClient.from_url(ar_server.url, model="stories260K")
    assert named.complete("Once upon a time", max_tokens=8) == one


def test_server_errors_carry_the_servers_fields(ar_server):
    client = BitNetClient.from_url(ar_server.url)
    with pytest.raises(DlmServerError) as e:
        client.chat_openai([{"role": "user", "content": "hi"}], temperature=7)
    err = e.value
    assert (err.status, err.type, err.param) == (400, "invalid_request_error", "temperature")
    assert "temperature" in err.message and "HTTP 400" in str(err) and err.message in str(err)
    assert isinstance(err, DlmClientError)
    with pytest.raises(DlmServerError) as e:
        client.chat_openai([{"role": "user", "content": "hi"}], max_tokens=10**6)
    assert e.value.code == "context_length_exceeded"
    # Errors found before a stream starts are raised when iteration starts.
    with pytest.raises(DlmServerError) as e:
        list(BitNetClient.from_url(ar_server.url, model="nope").chat_openai_stream([{"role": "user", "content": "x"}]))
    assert (e.value.status, e.value.code) == (404, "model_not_found")
    with pytest.raises(DlmServerError) as e:
        client.complete([])
    assert e.value.param == "prompt"


def test_api_key(auth_server, monkeypatch):
    monkeypatch.delenv("DLM_API_KEY", raising=False)
    with pytest.raises(DlmServerError) as e:
        BitNetClient.from_url(auth_server.url).models()
    assert (e.value.status, e.value.code) == (401, "invalid_api_key")
    with pytest.raises(DlmServerError):
        list(BitNetClient.from_url(auth_server.url, api_key="wrong").chat_openai_stream([{"role": "user", "content": "x"}]))
    assert BitNetClient.from_url(auth_server.url, api_key="sekrit-key").models()
    # Like the server, the client reads DLM_API_KEY.
    monkeypatch.setenv("DLM_API_KEY", "sekrit-key")
    assert BitNetClient.from_url(auth_server.url).chat_openai([{"role": "user", "content": "x"}], max_tokens=2) is not None
    # Health needs no key.
    assert BitNetClient.from_url(auth_server.url, api_key="wrong").health()["status"] == "ok"


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        client = BitNetClient.from_url(f"http://127.0.0.1:{port}", timeout=5)
        with pytest.raises(DlmConnectionError, match=f"127.0.0.1:{port}"):
            client.health()
        with pytest.raises(DlmConnectionError):
            list(client.chat_openai_stream([{"role": "user", "content": "x"}]))


# -- scripted answers: what the client does with replies a healthy dlm_server never sends ----------


def scripted(handler) -> BitNetClient:
    return BitNetClient("http://dlm.test", transport=httpx.MockTransport(handler))


def sse(*events: bytes, status: int = 200) -> httpx.Response:
    return httpx.Response(status, headers={"content-type": "text/event-stream"}, content=b"".join(events))


CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "%s"}, "finish_reason": null}]}\n\n'


def test_sse_parsing_follows_the_spec():
    body = (
        b": keep-alive comment\n\n",
        b'data: {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}\n\n',
        CHUNK % b"Hel",
        b"event: message\ndata:{\"choices\": [{\"index\": 0, \"delta\": {\"content\": \"lo\"}}]}\r\n\r\n",
        b'data: {"choices": [{"index": 0,\ndata:  "delta": {"content": "!"}}]}\n\n',  # two data lines
        b'data: {"choices": [], "usage": {"total_tokens": 3}}\n\n',
        b"data: [DONE]\n\n",
        CHUNK % b"after done is ignored",
    )
    client = scripted(lambda req: sse(*body))
    assert list(client.chat_openai_stream([{"role": "user", "content": "x"}])) == ["Hel", "lo", "!"]


def test_error_event_in_a_stream_raises():
    err = b'data: {"error": {"message": "the forward pass failed", "type": "server_error", "param": null, "code": "generation_failed"}}\n\n'
    client = scripted(lambda req: sse(CHUNK % b"Hi", err, b"data: [DONE]\n\n"))
    got = []
    with pytest.raises(DlmServerError) as e:
        for piece in client.chat_openai_stream([{"role": "user", "content": "x"}]):
            got.append(piece)
    assert got == ["Hi"]
    assert e.value.status is None and e.value.code == "generation_failed"
    assert "the forward pass failed" in str(e.value)


def test_stream_cut_short_raises():
    client = scripted(lambda req: sse(CHUNK % b"Hi"))
    with pytest.raises(DlmProtocolError, match=r"\[DONE\]"):
        list(client.chat_openai_stream([{"role": "user", "content": "x"}]))


def test_non_sse_and_non_json_answers():
    client = scripted(lambda req: httpx.Response(200, json={"choices": []}))
    with pytest.raises(DlmProtocolError, match="text/event-stream"):
        list(client.chat_openai_stream([{"role": "user", "content": "x"}]))
    proxy = scripted(lambda req: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(DlmServerError) as e:
        proxy.chat_openai([{"role": "user", "content": "x"}])
    assert e.value.status == 502 and "Bad Gateway" in e.value.message
    garbage = scripted(lambda req: httpx.Response(200, text="not json"))
    with pytest.raises(DlmProtocolError):
        garbage.models()


def test_timeouts_are_connection_errors():
    def slow(req):
        raise httpx.ReadTimeout("timed out", request=req)

    with pytest.raises(DlmTimeoutError):
        scripted(slow).chat_openai([{"role": "user", "content": "x"}])


def test_requests_carry_params_model_and_key(monkeypatch):
    monkeypatch.delenv("DLM_API_KEY", raising=False)
    seen = []

    def handler(req):
        seen.append(req)
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]})

    client = BitNetClient("localhost:1234/v1/", api_key="k", model="m", transport=httpx.MockTransport(handler))
    assert client.base_url == "http://localhost:1234"
    assert client.chat_openai([{"role": "user", "content": "x"}], max_tokens=3, threshold=0.9, stream=True) == "ok"
    req = seen[0]
    assert req.url.path == "/v1/chat/completions"
    assert req.headers["authorization"] == "Bearer k"
    import json

    assert json.loads(req.content) == {
        "model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 3, "threshold": 0.9,
    }


def test_health_while_loading():
    client = scripted(lambda req: httpx.Response(503, json={"status": "loading"}))
    with pytest.raises(DlmServerError) as e:
        client.health()
    assert e.value.status == 503 and "loading" in e.value.message
    assert e.value.body == {"status": "loading"}


def test_startup_log_tells_kernels_and_block_step_cost(dlm_server):
    """The server says which kernels it runs and what a block step costs in decode steps."""
    import re

    log = dlm_server.log()
    assert re.search(r"kernels: (scalar|avx2|avx512vnni|amx|neon) \(", log), log
    m = re.search(r"speed: a 32-row block step costs ([0-9.]+) decode steps", log)
    assert m and float(m.group(1)) > 0, log
