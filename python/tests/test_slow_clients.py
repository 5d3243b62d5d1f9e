"""Slow and idle clients (issue 13): connections that send nothing, trickle a header or a body,
or exceed the connection cap are closed or refused by the server within its limits, while a
normal client's requests still complete, and every connection and slot is released afterwards.

The figures in docs/reliability.md ("Slow and idle clients") come from `test_slow_and_idle_clients`
(run with `-s` to print them)."""

from __future__ import annotations

import json
import resource
import selectors
import socket
import threading
import time

import httpx
import pytest

from conftest import wait_for

CHAT = "/v1/chat/completions"
HEADER_S, BODY_S, IDLE_S, CAP = 2.0, 3.0, 3.0, 400
N_FRESH, N_USED, N_HEADER, N_BODY = 250, 50, 20, 20  # 300 idle: 250 never sent a byte, 50 after a request
EARLY = 0.25  # a close this much before its timeout is a failure (clock granularity)
LATE = 3.0  # ...and this much after it (a loaded 2-core test machine)
NORMAL = {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 8}
BODY = json.dumps({"messages": [{"role": "user", "content": "Hello there, slow body."}], "max_tokens": 2}).encode()


@pytest.fixture(scope="module")
def fd_room():
    """Room for ~400 client sockets in this process (the server raises its own limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2048
    if soft < need:
        new = need if hard == resource.RLIM_INFINITY else min(need, hard)
        if new < 600:
            pytest.fail(f"RLIMIT_NOFILE hard limit {hard} is too low for this test (needs 600)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture(scope="module")
def slow_server(start_server, fd_room):
    return start_server(
        "slow-clients", "--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S),
        "--idle-timeout", str(IDLE_S), "--max-connections", str(CAP),
    )


class Client:
    """One misbehaving connection, seen from the client side."""

    def __init__(self, kind: str, port: int):
        self.kind = kind
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.clock = time.monotonic()  # when the server's timeout for this client starts
        self.closed_at = None
        self.received = b""
        self.to_send = b""
        self.next_send = 0.0
        self.interval = 0.0

    def close_seen(self, now: float) -> None:
        if self.closed_at is None:
            self.closed_at = now

    @property
    def lived(self) -> float:
        return self.closed_at - self.clock


def http_response(raw: bytes):
    """(status, json body) of one raw HTTP/1.1 answer."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode("latin-1").lower(), json.loads(body)


def storm(port: int, until: float):
    """Opens the misbehaving clients and drives them until every one was closed or `until`."""
    sel = selectors.DefaultSelector()
    clients = []
    for _ in range(N_FRESH):
        clients.append(Client("idle", port))
    for _ in range(N_USED):  # one keep-alive request, then silence: the idle clock restarts
        c = Client("idle-after-request", port)
        c.sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        while b'"ok"' not in got:
            chunk = c.sock.recv(4096)
            assert chunk, "the server closed a connection that had just asked for /health"
            got += chunk
        c.clock = time.monotonic()
        clients.append(c)
    for _ in range(N_HEADER):  # one byte per second of a request head
        c = Client("header", port)
        c.to_send = (
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        c.interval = 1.0
        clients.append(c)
    for _ in range(N_BODY):  # a whole head at once, then the body one byte every half second
        c = Client("body", port)
        c.sock.sendall(
            f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n".encode()
        )
        c.clock = time.monotonic()
        c.to_send = BODY
        c.interval = 0.5
        c.next_send = c.clock + c.interval
        clients.append(c)
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    open_ = len(clients)
    while open_ and time.monotonic() < until:
        for key, _ in sel.select(timeout=0.05):
            c = key.data
            try:
                chunk = c.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            except BlockingIOError:
                continue
            if chunk:
                c.received += chunk
                continue
            c.close_seen(time.monotonic())
            sel.unregister(c.sock)
            c.sock.close()
            open_ -= 1
        now = time.monotonic()
        for c in clients:
            if c.closed_at is None and c.to_send and now >= c.next_send:
                try:
                    c.sock.send(c.to_send[:1])
                except (ConnectionResetError, BrokenPipeError):
                    continue  # the select loop sees the close
                except BlockingIOError:
                    continue
                if c.kind == "header" and c.next_send == 0.0:
                    c.clock = now  # the header clock starts at the first byte
                c.to_send = c.to_send[1:]
                c.next_send = now + c.interval
    for c in clients:
        if c.closed_at is None:
            sel.unregister(c.sock)
            c.sock.close()
    sel.close()
    return clients


def test_slow_and_idle_clients(slow_server, schemas, report_figures):
    url, port = slow_server.url, slow_server.port
    before = slow_server.metrics()
    assert before["dlm_connections_max"] == CAP

    # The normal client: chat completions back to back for as long as the storm lasts.
    done = threading.Event()
    answers, failures = [], []

    def normal():
        with httpx.Client(base_url=url, timeout=30) as c:
            while not done.is_set():
                t0 = time.monotonic()
                try:
                    r = c.post(CHAT, json=NORMAL)
                except httpx.HTTPError as e:  # would mean the server stopped serving
                    failures.append(repr(e))
                    continue
                answers.append((r, time.monotonic() - t0))

    worker = threading.Thread(target=normal, name="normal-client")
    t0 = time.monotonic()
    worker.start()
    try:
        clients = storm(port, until=t0 + max(HEADER_S, BODY_S, IDLE_S) + LATE + 4)
    finally:
        done.set()
        worker.join(60)
    storm_s = time.monotonic() - t0

    # Every misbehaving connection was closed by the server, by the timeout that applies to it.
    still_open = [c.kind for c in clients if c.closed_at is None]
    assert not still_open, f"{len(still_open)} connections never closed by the server: {still_open[:5]}"
    figures = {}
    for kind, timeout in (("idle", IDLE_S), ("idle-after-request", IDLE_S), ("header", HEADER_S), ("body", BODY_S)):
        lived = sorted(c.lived for c in clients if c.kind == kind)
        assert lived[0] >= timeout - EARLY, (kind, lived[:3])
        assert lived[-1] <= timeout + LATE, (kind, lived[-3:])
        figures[kind] = (len(lived), lived[0], lived[len(lived) // 2], lived[-1])
    # Header tricklers got nothing (their request never started); body tricklers got 408.
    for c in clients:
        if c.kind in ("idle", "header"):
            assert c.received == b"", (c.kind, c.received[:200])
    for c in (c for c in clients if c.kind == "body"):
        status, head, body = http_response(c.received)
        assert status == 408, c.received[:300]
        schemas.validate("ErrorResponse", body)
        assert body["error"]["code"] == "request_timeout", body
        assert "--body-timeout" in body["error"]["message"]
        assert len(c.to_send) > 0  # the body was really still incomplete

    # The normal client was served the whole time.
    assert not failures, failures[:3]
    assert len(answers) >= 3, f"only {len(answers)} normal requests completed in {storm_s:.1f} s"
    for r, _ in answers:
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert isinstance(choice["message"]["content"], str) and choice["finish_reason"] in ("stop", "length")
        assert r.json()["usage"]["completion_tokens"] >= 1
    slowest = max(s for _, s in answers)

    # Afterwards: every connection and slot released (the one open connection is this request's).
    wait_for(lambda: slow_server.metrics()["dlm_connections_open"] == 1, timeout=10, what="connections to close")
    m = slow_server.metrics()
    assert m["dlm_slots_busy"] == 0 and m["dlm_queue_depth"] == 0 and m["dlm_live_sequences"] == 0
    timed_out = {r: m[f'dlm_connections_timed_out_total{{reason="{r}"}}'] - before[f'dlm_connections_timed_out_total{{reason="{r}"}}'] for r in ("header", "body", "idle")}
    assert timed_out["header"] == N_HEADER, timed_out
    assert timed_out["body"] == N_BODY, timed_out
    # The normal client's keep-alive connection is closed by the client, not timed out.
    assert N_FRESH + N_USED <= timed_out["idle"] <= N_FRESH + N_USED + 1, timed_out
    assert m["dlm_connections_refused_total"] == 0
    assert m['dlm_requests_total{route="/v1/chat/completions",status="408"}'] == N_BODY
    summary = (
        f"storm {storm_s:.1f} s; closed (n, min, median, max s): {figures}; "
        f"normal requests {len(answers)} ok, slowest {slowest:.2f} s; timed out {timed_out}; "
        f"after: open {m['dlm_connections_open']:.0f}, slots busy {m['dlm_slots_busy']:.0f}, "
        f"accepted {m['dlm_connections_accepted_total'] - before['dlm_connections_accepted_total']:.0f}"
    )
    print("\n" + summary)
    report_figures("slow and idle clients", summary)


@pytest.fixture(scope="module")
def capped_server(start_server, fd_room):
    return start_server("capped", "--max-connections", "20", "--idle-timeout", "30")


def _hold(port: int) -> socket.socket:
    """A connection the server serves (its `/health` answered 200 on it), then kept silent."""
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
        if got.startswith(b"HTTP/1.1 200"):
            return s
        # Refused: a connection the client just closed was still counted. Try again.
        s.close()
        time.sleep(0.05)
    raise AssertionError("could not open a served connection")


def test_connection_cap_refuses_clearly(capped_server, schemas):
    url, port = capped_server.url, capped_server.port
    held = []
    try:
        held = [_hold(port) for _ in range(20)]  # at the cap
        for path in ("/health", "/v1/models"):
            r = httpx.get(url + path, timeout=10)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["connection"] == "close" and r.headers["retry-after"] == "1"
            schemas.validate("ErrorResponse", r.json())
            assert r.json()["error"]["code"] == "too_many_connections"
            assert "--max-connections" in r.json()["error"]["message"]
        # A POST with a body gets the same answer, not a reset.
        r = httpx.post(url + CHAT, json=NORMAL, timeout=10)
        assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_connections"
        # The held connections are still served.
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        # Free five: new connections are served again.
        for s in held[:5]:
            s.close()
        del held[:5]
        wait_for(lambda: _get_status(url + "/health") == 200, timeout=10, what="a free connection")
        m = wait_for(lambda: (lambda m: m if m["dlm_connections_open"] == 16 else None)(capped_server.metrics()),
                     timeout=10, what="15 held + this request open")
        assert m["dlm_connections_refused_total"] >= 3
        r = httpx.post(url + CHAT, json=NORMAL, timeout=60)
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        for s in held:
            s.close()
    wait_for(lambda: capped_server.metrics()["dlm_connections_open"] == 1, timeout=10, what="connections to close")


def _get_status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return -1
