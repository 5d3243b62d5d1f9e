"""A small synchronous client for ``dlm_server``, the OpenAI-compatible block-diffusion server.

Usage (the same lines as the DLM inference guide)::

    from wrinklefree_inference.client import BitNetClient

    client = BitNetClient.from_url("http://localhost:30000")

    # Non-streaming
    response = client.chat_openai([
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hello!"},
    ])
    print(response)

    # Streaming
    for token in client.chat_openai_stream(messages):
        print(token, end="", flush=True)

Every keyword parameter of the ``chat_openai*`` and ``complete`` methods is sent in the JSON body
as is: OpenAI's (``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ...) and the
server's extensions (``mode``, ``block_size``, ``small_block_size``, ``threshold``, ``top_k``,
``min_p``, ``repetition_penalty``). The server refuses parameters it does not know with a 400,
which this client raises as :class:`DlmServerError`.

Errors:

* :class:`DlmServerError` -- the server answered with an error (``status``, ``message``,
  ``type``, ``param`` and ``code`` come from its ``{"error": {...}}`` body), or reported an error
  in the middle of a stream.
* :class:`DlmConnectionError` -- the server could not be reached, or the connection broke
  (:class:`DlmTimeoutError` when it timed out).
* :class:`DlmProtocolError` -- the server answered something that is not the OpenAI shape (for
  example a stream that ended without ``data: [DONE]``).

All three derive from :class:`DlmClientError`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import httpx

__all__ = [
    "BitNetClient",
    "DlmClientError",
    "DlmServerError",
    "DlmConnectionError",
    "DlmTimeoutError",
    "DlmProtocolError",
]

Message = Mapping[str, Any]


class DlmClientError(Exception):
    """Base class of every error this client raises."""


class DlmServerError(DlmClientError):
    """The server answered with an OpenAI-shaped error.

    Attributes:
        status: the HTTP status (``None`` for an error reported inside a stream, which started
            with 200).
        message: the server's explanation.
        type: OpenAI's error type (``invalid_request_error``, ``rate_limit_error``, ...).
        param: the request parameter at fault, when the server named one.
        code: a machine-readable code (``context_length_exceeded``, ``queue_full``,
            ``invalid_api_key``, ``model_not_found``, ...), when the server gave one.
        body: the whole decoded error body (or the raw text when it was not JSON).
    """

    def __init__(
        self,
        status: Optional[int],
        message: str,
        type: Optional[str] = None,
        param: Optional[str] = None,
        code: Optional[str] = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.body = body
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "error in stream"
        details = ", ".join(
            f"{k}={v}" for k, v in (("type", self.type), ("param", self.param), ("code", self.code)) if v
        )
        return f"dlm server error ({where}{'; ' + details if details else ''}): {self.message}"

    @classmethod
    def from_body(cls, status: Optional[int], body: Any, fallback: str = "") -> "DlmServerError":
        """Builds the error from a decoded ``{"error": {...}}`` body (or anything else)."""
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return cls(
                status,
                str(err.get("message") or fallback or "unknown error"),
                err.get("type"),
                err.get("param"),
                err.get("code"),
                body,
            )
        if isinstance(err, str):  # some servers send {"error": "text"}
            return cls(status, err, body=body)
        text = fallback or (json.dumps(body) if body is not None else "")
        return cls(status, text[:500] or "empty error body", body=body)


class DlmConnectionError(DlmClientError):
    """The server could not be reached or the connection broke."""


class DlmTimeoutError(DlmConnectionError):
    """The server did not answer (or stream) within the client's timeout."""


class DlmProtocolError(DlmClientError):
    """The server's answer is not what an OpenAI-compatible server sends."""


def _root_url(url: str) -> str:
    """``http://host:port`` from a URL that may end in ``/`` or ``/v1``."""
    url = url.strip().rstrip("/")
    if not url:
        raise ValueError("the server URL is empty")
    if "://" not in url:
        url = "http://" + url
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


class BitNetClient:
    """A client for one ``dlm_server`` (or any OpenAI-compatible server).

    Build it with :meth:`from_url`. It keeps one HTTP connection pool; use it as a context
    manager or call :meth:`close` to release it. It is safe to share between threads.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Optional[str] = None,
        timeout: Union[float, httpx.Timeout, None] = 600.0,
        model: Optional[str] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        """See :meth:`from_url`."""
        self.base_url = _root_url(base_url)
        if api_key is None:
            api_key = os.environ.get("DLM_API_KEY") or None
        self.api_key = api_key
        self.model = model
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0) if timeout else None)
        headers = {"Accept": "application/json", "User-Agent": "wrinklefree-inference/0.1"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    @classmethod
    def from_url(
        cls,
        url: str,
        api_key: Optional[str] = None,
        timeout: Union[float, httpx.Timeout, None] = 600.0,
        model: Optional[str] = None,
    ) -> "BitNetClient":
        """A client for the server at ``url`` (``http://host:port``, with or without ``/v1``).

        Args:
            url: the server's address.
            api_key: sent as ``Authorization: Bearer <key>``; defaults to the ``DLM_API_KEY``
                environment variable (the same one ``dlm_server`` reads).
            timeout: seconds to wait for an answer (and between streamed events); connecting
                waits at most 10 s. ``None`` waits forever.
            model: the model id to send with each request; by default none is sent and the
                server uses the one it serves.
        """
        return cls(url, api_key=api_key, timeout=timeout, model=model)

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> "BitNetClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"BitNetClient({self.base_url!r})"

    def _connection_error(self, e: Exception) -> DlmClientError:
        if isinstance(e, httpx.TimeoutException):
            return DlmTimeoutError(f"dlm server at {self.base_url} did not answer in time: {e!r}")
        return DlmConnectionError(f"cannot talk to the dlm server at {self.base_url}: {e}")

    @staticmethod
    def _raise_for_status(resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        text = resp.text
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        raise DlmServerError.from_body(resp.status_code, body, fallback=text.strip())

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
        try:
            resp = self._http.request(method, path, json=body)
        except httpx.HTTPError as e:
            raise self._connection_error(e) from e
        self._raise_for_status(resp)
        try:
            return resp.json()
        except ValueError as e:
            raise DlmProtocolError(
                f"{method} {path} answered {resp.status_code} with a body that is not JSON: "
                f"{resp.text[:200]!r}"
            ) from e

    def _body(self, params: Dict[str, Any], **fields: Any) -> Dict[str, Any]:
        body: Dict[str, Any] = {}
        if self.model is not None:
            body["model"] = self.model
        body.update(fields)
        body.update(params)
        return body

    def _events(self, path: str, body: Dict[str, Any]) -> Iterator[Dict[str, Any]]:
        """POSTs ``body`` with ``stream: true`` and yields each decoded SSE ``data:`` payload
        until ``data: [DONE]``; raises on an error event or a stream cut short."""
        body = dict(body, stream=True)
        try:
            with self._http.stream(
                "POST", path, json=body, headers={"Accept": "text/event-stream"}
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_for_status(resp)
                ctype = resp.headers.get("content-type", "")
                if not ctype.startswith("text/event-stream"):
                    resp.read()
                    raise DlmProtocolError(
                        f"POST {path} with stream=true answered {ctype or 'no content type'}, "
                        f"not text/event-stream: {resp.text[:200]!r}"
                    )
                data: List[str] = []
                for line in resp.iter_lines():
                    if line == "":
                        if not data:
                            continue
                        payload, data = "\n".join(data), []
                        if payload == "[DONE]":
                            return
                        try:
                            event = json.loads(payload)
                        except ValueError as e:
                            raise DlmProtocolError(
                                f"a streamed event is not JSON: {payload[:200]!r}"
                            ) from e
                        if isinstance(event, dict) and "error" in event:
                            raise DlmServerError.from_body(None, event)
                        yield event
                    elif line.startswith(":"):
                        continue  # comment / keep-alive
                    else:
                        field, _, value = line.partition(":")
                        if value.startswith(" "):
                            value = value[1:]
                        if field == "data":
                            data.append(value)
                        # `event:`, `id:` and `retry:` carry nothing this client needs.
                if data and "\n".join(data) == "[DONE]":
                    return
        except httpx.HTTPError as e:
            raise self._connection_error(e) from e
        raise DlmProtocolError(f"the stream from POST {path} ended before `data: [DONE]`")

    # -- API ------------------------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """``GET /health``: ``{"status": "ok"}`` when the server is ready.

        Raises :class:`DlmServerError` (status 503, ``{"status": "loading"}`` in ``body``) while
        the model is loading.
        """
        try:
            resp = self._http.get("/health")
        except httpx.HTTPError as e:
            raise self._connection_error(e) from e
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "status" in body and "error" not in body:
                raise DlmServerError(
                    resp.status_code, f"server is not ready: status {body['status']}", body=body
                )
            self._raise_for_status(resp)
        return resp.json()

    def models(self) -> List[Dict[str, Any]]:
        """``GET /v1/models``: the model cards (``id``, ``object``, ``created``, ``owned_by``,
        and the server's ``dlm`` details)."""
        return list(self._request("GET", "/v1/models")["data"])

    def create_chat_completion(self, messages: Sequence[Message], **params: Any) -> Dict[str, Any]:
        """``POST /v1/chat/completions`` without streaming; returns the whole response
        (``choices``, ``usage``, and the server's ``timings``)."""
        params.pop("stream", None)
        return self._request(
            "POST", "/v1/chat/completions", self._body(params, messages=list(messages))
        )

    def chat_openai(self, messages: Sequence[Message], **params: Any) -> str:
        """The assistant's reply to ``messages`` (a list of ``{"role", "content"}`` dicts).

        ``params`` go into the request body (``max_tokens=50``, ``temperature=0``,
        ``stop=["\\n"]``, ``mode="dlm"``, ``threshold=0.9``, ...).
        """
        response = self.create_chat_completion(messages, **params)
        try:
            return response["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise DlmProtocolError(f"unexpected chat completion: {response!r:.300}") from e

    def chat_openai_stream_chunks(
        self, messages: Sequence[Message], **params: Any
    ) -> Iterator[Dict[str, Any]]:
        """Streams a chat completion and yields each decoded chunk (role chunk, text chunks,
        the finish chunk and, with ``stream_options={"include_usage": True}``, the usage
        chunk)."""
        params.pop("stream", None)
        return self._events("/v1/chat/completions", self._body(params, messages=list(messages)))

    def chat_openai_stream(self, messages: Sequence[Message], **params: Any) -> Iterator[str]:
        """Streams the assistant's reply, yielding text pieces as the server commits them (in
        diffusion mode, a piece is sent once no masked position precedes it, so it never
        changes). Joined, the pieces equal :meth:`chat_openai`'s answer for the same greedy
        request."""
        for chunk in self.chat_openai_stream_chunks(messages, **params):
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece

    def create_completion(self, prompt: Union[str, Sequence[str]], **params: Any) -> Dict[str, Any]:
        """``POST /v1/completions`` without streaming; returns the whole response."""
        params.pop("stream", None)
        if not isinstance(prompt, str):
            prompt = list(prompt)
        return self._request("POST", "/v1/completions", self._body(params, prompt=prompt))

    def complete(
        self, prompt: Union[str, Sequence[str]], **params: Any
    ) -> Union[str, List[str]]:
        """The continuation of a plain-text ``prompt`` (no chat template).

        A list of prompts returns a list of continuations, in order.
        """
        response = self.create_completion(prompt, **params)
        try:
            choices = sorted(response["choices"], key=lambda c: c["index"])
            texts = [c["text"] for c in choices]
        except (KeyError, TypeError) as e:
            raise DlmProtocolError(f"unexpected completion: {response!r:.300}") from e
        return texts[0] if isinstance(prompt, str) else texts

    def complete_stream(self, prompt: str, **params: Any) -> Iterator[str]:
        """Streams the continuation of one plain-text ``prompt``, yielding text pieces."""
        params.pop("stream", None)
        for chunk in self._events("/v1/completions", self._body(params, prompt=prompt)):
            for choice in chunk.get("choices") or ():
                if choice.get("text"):
                    yield choice["text"]
