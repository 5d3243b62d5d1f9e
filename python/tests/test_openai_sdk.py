"""The official `openai` Python SDK against a real dlm_server, AR and block diffusion, with every
response checked against OpenAI's own OpenAPI schemas."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

MESSAGES = [
    {"role": "system", "content": "You are a storyteller."},
    {"role": "user", "content": "Tell me about Lily and her dog."},
]
DLM_EXTRA = {"block_size": 32, "threshold": 0.9, "mode": "dlm"}


def sdk(server, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=kw.pop("api_key", "unused"), max_retries=0, timeout=120, **kw)


def model_id(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def check_chat(resp, max_tokens: int) -> str:
    assert re.fullmatch(r"chatcmpl-[0-9a-f]+", resp.id), resp.id
    assert resp.object == "chat.completion"
    assert isinstance(resp.created, int) and resp.created > 1_600_000_000
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    u = resp.usage
    assert u.prompt_tokens > 0
    assert 0 <= u.completion_tokens <= max_tokens
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    if choice.finish_reason == "length":
        assert u.completion_tokens == max_tokens
    return choice.message.content


@pytest.fixture(scope="module", params=["ar", "dlm"])
def server(request):
    return request.getfixturevalue(f"{request.param}_server")


def test_models_list_and_retrieve(server, schemas):
    client = sdk(server)
    models = client.models.list()
    assert [m.id for m in models.data] == [model_id(client)]
    m = models.data[0]
    assert m.object == "model" and m.owned_by == "dlm" and m.created > 0
    assert client.models.retrieve(m.id).id == m.id
    raw = httpx.get(server.base_url + "/models").json()
    schemas.validate("ListModelsResponse", raw)
    assert raw["data"][0]["dlm"]["mode"] == ("dlm" if server.name == "dlm" else "ar")
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found"


def test_chat_non_stream(server, schemas):
    client = sdk(server)
    resp = client.chat.completions.create(model=model_id(client), messages=MESSAGES, max_tokens=12)
    text = check_chat(resp, 12)
    assert text.strip(), "the model said nothing"
    schemas.validate("CreateChatCompletionResponse", resp.model_dump(exclude_unset=True))
    timings = resp.model_extra["timings"]
    assert timings["mode"] == server.name
    assert timings["forward_passes"] >= 1


def test_chat_stream_equals_non_stream(server, schemas):
    """Greedy decoding: the streamed pieces join to the non-streamed text, with usage at the end."""
    client = sdk(server)
    model = model_id(client)
    params = dict(model=model, messages=MESSAGES, max_tokens=16, temperature=0)
    full = client.chat.completions.create(**params)
    want = check_chat(full, 16)
    chunks = list(client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True}))
    for c in chunks:
        schemas.validate("CreateChatCompletionStreamResponse", c.model_dump(exclude_unset=True))
        assert c.id == chunks[0].id and c.object == "chat.completion.chunk" and c.model == model
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [full.choices[0].finish_reason]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_dump() == full.usage.model_dump()
    # Every chunk before the usage one says usage: null, as OpenAI's do.
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(ar_server):
    client = sdk(ar_server)
    chunks = list(client.chat.completions.create(model=model_id(client), messages=MESSAGES, max_tokens=4, stream=True))
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
    assert all(c.usage is None and c.choices for c in chunks)


def test_dlm_parameters_through_extra_body(dlm_server, schemas):
    client = sdk(dlm_server)
    resp = client.chat.completions.create(
        model=model_id(client), messages=MESSAGES, max_tokens=16, extra_body=DLM_EXTRA
    )
    check_chat(resp, 16)
    schemas.validate("CreateChatCompletionResponse", resp.model_dump(exclude_unset=True))
    t = resp.model_extra["timings"]
    assert t["mode"] == "dlm"
    assert t["tokens_per_forward"] > 0
    # The same request decoded autoregressively on the same server.
    ar = client.chat.completions.create(
        model=model_id(client), messages=MESSAGES, max_tokens=4, extra_body={"mode": "ar"}
    )
    assert ar.model_extra["timings"]["mode"] == "ar"
    assert ar.model_extra["timings"]["forward_passes"] >= ar.usage.completion_tokens
    # Extensions are validated like the standard fields.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id(client), messages=MESSAGES, extra_body={"threshold": 1.5})
    assert e.value.body["param"] == "threshold"


def test_dlm_mode_needs_a_mask_token(ar_server):
    client = sdk(ar_server)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model_id(client), messages=MESSAGES, extra_body=DLM_EXTRA)
    assert e.value.body["param"] == "mode"
    assert "mask" in e.value.body["message"]


@pytest.mark.parametrize("max_tokens", [1, 7])
def test_max_tokens_bounds_the_answer(ar_server, max_tokens):
    client = sdk(ar_server)
    resp = client.chat.completions.create(model=model_id(client), messages=MESSAGES, max_tokens=max_tokens)
    check_chat(resp, max_tokens)
    # max_completion_tokens is the newer spelling of the same limit.
    resp2 = client.chat.completions.create(
        model=model_id(client), messages=MESSAGES, max_completion_tokens=max_tokens
    )
    assert resp2.choices[0].message.content == resp.choices[0].message.content


def test_stop_strings(server):
    client = sdk(server)
    model = model_id(client)
    base = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16).choices[0].message.content
    # A stop string taken from the middle of the greedy answer cuts it right before its first
    # occurrence, with finish_reason "stop".
    stop = base[len(base) // 2 : len(base) // 2 + 3]
    assert len(stop) == 3, base
    want = base[: base.index(stop)]
    resp = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16, stop=[stop, "\u2603never"])
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == want
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=16, stop=stop, stream=True)
    )
    assert streamed == want


def test_seed_makes_sampling_repeatable(ar_server):
    client = sdk(ar_server)
    model = model_id(client)

    def run(seed):
        return client.chat.completions.create(
            model=model, messages=MESSAGES, max_tokens=24, temperature=1.0, seed=seed
        ).choices[0].message.content

    a, b = run(1234), run(1234)
    assert a == b
    others = {run(s) for s in (1, 2, 3)}
    assert len(others | {a}) > 1, "different seeds should not all give the same sample"


def test_completions_string_and_list(server, schemas):
    client = sdk(server)
    model = model_id(client)
    one = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8)
    schemas.validate("CreateCompletionResponse", one.model_dump(exclude_unset=True))
    assert re.fullmatch(r"cmpl-[0-9a-f]+", one.id)
    assert one.object == "text_completion"
    assert len(one.choices) == 1 and one.choices[0].finish_reason in {"stop", "length"}
    assert one.usage.completion_tokens <= 8
    assert one.usage.total_tokens == one.usage.prompt_tokens + one.usage.completion_tokens

    many = client.completions.create(model=model, prompt=["Once upon a time", "Lily had a"], max_tokens=8)
    schemas.validate("CreateCompletionResponse", many.model_dump(exclude_unset=True))
    assert [c.index for c in many.choices] == [0, 1]
    # Same prompt, same greedy text, whether alone or in a list.
    assert many.choices[0].text == one.choices[0].text
    assert many.usage.completion_tokens <= 16

    echo = client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, echo=True)
    assert echo.choices[0].text == "Once upon a time" + one.choices[0].text

    streamed = list(client.completions.create(model=model, prompt="Once upon a time", max_tokens=8, stream=True))
    # OpenAI's schema has no chunk type for streamed completions and its finish_reason is not
    # nullable, though OpenAI itself streams `finish_reason: null` before the last chunk; so only
    # the last chunk is held to it.
    schemas.validate("CreateCompletionResponse", streamed[-1].model_dump(exclude_unset=True))
    assert all(c.choices[0].finish_reason is None for c in streamed[:-1])
    assert "".join(c.choices[0].text for c in streamed) == one.choices[0].text
    assert streamed[-1].choices[0].finish_reason == one.choices[0].finish_reason


def test_sdk_errors(ar_server, schemas):
    client = sdk(ar_server)
    model = model_id(client)
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=100_000)
    assert e.value.status_code == 400
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2)
    assert e.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=[{"role": "wizard", "content": "hi"}])
    assert e.value.body["param"] == "messages[0].role"
    schemas.validate("ErrorResponse", e.value.response.json())


def test_api_key(auth_server):
    good = sdk(auth_server, api_key="sekrit-key")
    assert good.chat.completions.create(model=model_id(good), messages=MESSAGES, max_tokens=2).choices
    with pytest.raises(openai.AuthenticationError) as e:
        sdk(auth_server, api_key="wrong-key").models.list()
    assert e.value.status_code == 401
    assert e.value.body["code"] == "invalid_api_key"
    r = httpx.post(auth_server.base_url + "/chat/completions", json={"messages": MESSAGES})
    assert r.status_code == 401
    # Health and metrics stay open for load balancers and scrapers.
    assert httpx.get(auth_server.url + "/health").status_code == 200
    assert httpx.get(auth_server.url + "/metrics").status_code == 200


def test_the_default_server_serves_the_trained_demo_dlm(default_server, schemas):
    """A new user's first command (`dlm_server`, no flags) serves the bundled demo DLM by block
    diffusion; its stories come with more than one token per forward at threshold 0.5."""
    client = sdk(default_server)
    assert model_id(client) == "stories260K-dlm"
    raw = httpx.get(default_server.base_url + "/models").json()
    assert raw["data"][0]["dlm"]["mode"] == "dlm"
    assert raw["data"][0]["dlm"]["mask_token_id"] == 512
    resp = client.completions.create(
        model="stories260K-dlm", prompt="Once upon a time", max_tokens=48, extra_body={"threshold": 0.5}
    )
    schemas.validate("CreateCompletionResponse", resp.model_dump(exclude_unset=True))
    assert resp.choices[0].text.startswith(", there was")
    timings = resp.model_extra["timings"]
    assert timings["mode"] == "dlm" and timings["tokens_per_forward"] > 1.0
