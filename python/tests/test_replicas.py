"""Two replicas behind nginx (deploy/nginx.conf, as shipped), one of them killed with SIGKILL in
the middle of a streaming load, then restarted.

What a client behind the load balancer must see (issue 13):
  * every request ends either *completed* (a full, correct answer ending with a finish_reason
    and `data: [DONE]`) or *failed visibly* (an HTTP error status, or a transport error: the
    stream's connection closed before the end of the chunked body), never *lost silently* (a
    response that ends cleanly at the HTTP level but is not the full answer: no `[DONE]`, a
    `[DONE]` without finish_reason, fewer tokens or other text than the reference answer) and
    never *hung* (no byte for CLIENT_READ_TIMEOUT);
  * only streams that were running on the killed replica fail; every request sent after the
    kill completes: nginx retries it on the survivor (proxy_next_upstream, connection failures
    only; a response that had started is never retried);
  * `/health` through nginx answers 200 throughout;
  * once the killed replica is restarted on its port, nginx sends it traffic again.

nginx is Debian's package, installed here when missing (the test fails, not skips, when it
cannot be); it runs in the foreground with its own prefix, pid and logs in a temp dir, never
touching a system nginx.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import pytest

from conftest import LOAD_PROMPTS as PROMPTS, REPO, ServerProcess, _die_with_parent, wait_for

NGINX_CONF = REPO / "deploy" / "nginx.conf"
CHAT = "/v1/chat/completions"
REQUESTS = 48
CONCURRENCY = 8
# Greedy autoregressive decoding of the demo model gives 200-400 tokens for these prompts
# (checked on the reference answers): every stream lasts a while, and a complete answer is known
# exactly in advance.
MAX_TOKENS = 400
CLIENT_READ_TIMEOUT = 20.0  # seconds without a byte: a hang
REQUESTS_OK = 'dlm_requests_total{route="/v1/chat/completions",status="200"}'


# -- nginx ---------------------------------------------------------------------------------------


def _nginx_binary() -> Optional[str]:
    found = shutil.which("nginx")
    if found:
        return found
    for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(path, os.X_OK):
            return path
    return None


def ensure_nginx() -> str:
    """nginx's path, installing Debian's package when it is missing (fails, never skips)."""
    found = _nginx_binary()
    if found:
        return found
    if os.geteuid() != 0:
        pytest.fail("nginx is not installed, and this test is not root so it cannot install it: "
                    "`apt-get install -y nginx` (Debian's package) and run the test again")
    if shutil.which("apt-get") is None:
        pytest.fail("nginx is not installed and there is no apt-get to install it with: install nginx")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", "nginx"]
    tried = []
    r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    tried.append(r)
    if r.returncode != 0:  # package lists missing or stale: refresh them once
        tried.append(subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600))
        r = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        tried.append(r)
    found = _nginx_binary()
    if r.returncode != 0 or found is None:
        out = "\n".join(f"$ {' '.join(t.args)} -> {t.returncode}\n{t.stdout[-1500:]}{t.stderr[-1500:]}" for t in tried)
        pytest.fail(f"could not install nginx with apt-get:\n{out}")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_conf(template: str, replicas: List[int], listen: int, log_dir: Path) -> str:
    """deploy/nginx.conf with the test's replica ports, listen address and log directory."""
    server_line = re.compile(r"^(\s*)server\s+[\w.\-]+:\d+(\s[^;]*)?;[^\n]*$", re.M)
    lines = server_line.findall(template)
    assert len(lines) >= 1, f"{NGINX_CONF}: no `server HOST:PORT ...;` line in its upstream"
    indent, params = lines[0]
    first = server_line.search(template)
    ours = "\n".join(f"{indent}server 127.0.0.1:{p}{params or ''};" for p in replicas)
    text = template[: first.start()] + ours + server_line.sub("", template[first.end():])

    text, n = re.subn(r"^(\s*)listen\s+\d+;", rf"\g<1>listen 127.0.0.1:{listen};", text, flags=re.M)
    assert n == 1, f"{NGINX_CONF}: expected one `listen PORT;` line, found {n}"
    text, n = re.subn(r"/var/log/nginx/", f"{log_dir}/", text)
    assert n >= 1, f"{NGINX_CONF}: expected an access_log under /var/log/nginx/"
    return text


class Nginx:
    """A foreground nginx (master + one worker) with its prefix, pid, temp files and logs in `root`."""

    def __init__(self, binary: str, root: Path, site: str, port: int):
        self.binary, self.root, self.port = binary, root, port
        self.error_log = root / "error.log"
        self.access_log = root / "dlm.access.log"
        (root / "dlm.conf").write_text(site)
        user = "user root;" if os.geteuid() == 0 else ""  # workers may then read the temp dirs
        temp = "\n".join(
            f"    {kind}_temp_path {root}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (root / "nginx.conf").write_text(
            f"{user}\nworker_processes 1;\npid {root}/nginx.pid;\nerror_log {self.error_log} info;\n"
            f"events {{ worker_connections 512; }}\n"
            f"http {{\n{temp}\n    include {root}/dlm.conf;\n}}\n"
        )
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        base = [self.binary, "-p", f"{self.root}/", "-e", str(self.error_log), "-c", str(self.root / "nginx.conf")]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t refused the rendered {NGINX_CONF}:\n{check.stderr}"
        self.proc = subprocess.Popen(
            [*base, "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.root / "stderr.log", "wb"),
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.errors()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"nginx never answered /health with 200:\n{self.errors()}")

    def errors(self) -> str:
        text = ""
        for name in ("stderr.log", "error.log"):
            p = self.root / name
            if p.exists():
                text += p.read_text(errors="replace")[-4000:]
        return text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # master and worker (own process group)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


# -- the load ------------------------------------------------------------------------------------


def request_body(i: int, max_tokens: int = MAX_TOKENS) -> dict:
    return {
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": max_tokens,
        "mode": "ar",
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@dataclass
class Outcome:
    i: int
    sent: float = 0.0  # time.monotonic() when the request was sent
    ended: float = 0.0
    status: Optional[int] = None
    events: List[str] = field(default_factory=list)
    error: Optional[str] = None  # the transport exception, if any
    hung: bool = False
    kind: str = ""  # completed / failed / lost / hung
    why: str = ""

    def content_chunks(self) -> int:
        return sum('"content":"' in e and '"role"' not in e for e in self.events)


def stream_once(client: httpx.Client, i: int, max_tokens: int = MAX_TOKENS) -> Outcome:
    """One streaming request; every `data:` payload received is kept even when the stream breaks."""
    o = Outcome(i, sent=time.monotonic())
    try:
        with client.stream("POST", CHAT, json=request_body(i, max_tokens)) as r:
            o.status = r.status_code
            if r.status_code != 200:
                o.why = r.read().decode("utf-8", "replace")[:300]
                return o
            data: List[str] = []
            for line in r.iter_lines():
                if line == "":
                    if data:
                        o.events.append("\n".join(data))
                        data = []
                elif line.startswith("data:"):
                    value = line[5:]
                    data.append(value[1:] if value.startswith(" ") else value)
            if data:
                o.events.append("\n".join(data))
    except httpx.TimeoutException as e:
        o.hung, o.error = True, repr(e)
    except httpx.HTTPError as e:
        o.error = repr(e)
    finally:
        o.ended = time.monotonic()
    return o


def answer(events: List[str]) -> Dict:
    """A stream's text, finish reasons, usage and error events (raises on a payload that is not JSON)."""
    text, finishes, usage, errors = [], [], None, []
    for e in events:
        if e == "[DONE]":
            continue
        c = json.loads(e)
        if "error" in c:
            errors.append(c["error"])
            continue
        for ch in c.get("choices", []):
            text.append(ch.get("delta", {}).get("content") or "")
            if ch.get("finish_reason"):
                finishes.append(ch["finish_reason"])
        if c.get("usage"):
            usage = c["usage"]
    return {"text": "".join(text), "finishes": finishes, "usage": usage, "errors": errors}


def classify(o: Outcome, refs: Dict[int, Dict]) -> None:
    """completed / failed (visibly) / lost (silently) / hung; see the module docstring."""
    if o.hung:
        o.kind = "hung"
    elif o.error is not None:
        o.kind, o.why = "failed", o.error  # the client library raised: visible
    elif o.status != 200:
        o.kind, o.why = "failed", f"HTTP {o.status}: {o.why}"
    else:
        # The HTTP response ended cleanly: the client library raised nothing. It must be the
        # whole answer, or an error event (which the OpenAI SDK raises as an APIError).
        try:
            got = answer(o.events)
        except ValueError as e:
            o.kind, o.why = "lost", f"a payload is not JSON: {e}"
            return
        ref = refs[o.i % len(PROMPTS)]
        if got["errors"]:
            o.kind, o.why = "failed", f"error event: {got['errors']}"
        elif not o.events or o.events[-1] != "[DONE]":
            o.kind, o.why = "lost", f"ended without [DONE] after {len(o.events)} events"
        elif got["finishes"] != ref["finishes"]:
            o.kind, o.why = "lost", f"finish reasons {got['finishes']}, expected {ref['finishes']}"
        elif got["usage"] != ref["usage"]:
            o.kind, o.why = "lost", f"usage {got['usage']}, expected {ref['usage']}"
        elif got["text"] != ref["text"]:
            o.kind, o.why = "lost", f"text differs from the reference after {len(got['text'])} chars"
        else:
            o.kind = "completed"


# -- the test ------------------------------------------------------------------------------------


def test_replica_killed_behind_nginx(server_bin, tmp_path, report_figures):
    t_start = time.monotonic()
    nginx_bin = ensure_nginx()
    replica_args = ["--threads", "1", "--max-concurrency", "8", "--queue-size", "32"]
    replicas: List[ServerProcess] = []
    nginx: Optional[Nginx] = None
    try:
        for name in ("replica-a", "replica-b"):
            replicas.append(ServerProcess(name, server_bin, replica_args).start())
        a, b = replicas

        # Reference answers, from each replica directly: both give the same, full-length text.
        refs: Dict[int, Dict] = {}
        with httpx.Client(timeout=60) as c:
            for p in range(len(PROMPTS)):
                both = []
                for s in (a, b):
                    c.base_url = s.url
                    o = stream_once(c, p)
                    assert o.status == 200 and o.error is None and o.events[-1:] == ["[DONE]"], (o, s.log())
                    both.append(answer(o.events))
                assert both[0] == both[1], f"prompt {p}: the replicas disagree: {both}"
                ref = both[0]
                assert len(ref["finishes"]) == 1 and ref["usage"]["completion_tokens"] >= 200, (
                    f"prompt {p}: a long greedy answer was expected (the streams must last): {ref}"
                )
                refs[p] = ref

        template = NGINX_CONF.read_text()
        port = free_port()
        nginx = Nginx(nginx_bin, tmp_path, render_conf(template, [a.port, b.port], port, tmp_path), port).start()

        victim, survivor = b, a
        outcomes: Dict[int, Outcome] = {}
        next_i = iter(range(REQUESTS))
        lock = threading.Lock()
        done = threading.Event()
        health: List[tuple] = []
        killed: Dict[str, float] = {}
        worker_errors: List[str] = []

        def worker():
            timeout = httpx.Timeout(CLIENT_READ_TIMEOUT, connect=5.0)
            with httpx.Client(base_url=nginx.url, timeout=timeout) as c:
                while True:
                    with lock:
                        i = next(next_i, None)
                    if i is None:
                        return
                    try:
                        outcomes[i] = stream_once(c, i)
                    except BaseException as e:  # noqa: BLE001 -- reported by the main thread
                        worker_errors.append(f"{i}: {e!r}")

        def watch_health():
            with httpx.Client(base_url=nginx.url, timeout=5) as c:
                while not done.is_set():
                    try:
                        health.append((time.monotonic(), c.get("/health").status_code))
                    except httpx.HTTPError as e:
                        health.append((time.monotonic(), repr(e)))
                    time.sleep(0.05)

        def killer():
            # Mid-load: after the first round of streams, once at least 2 streams are decoding
            # on the victim (their 200 and first events went out through nginx).
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not done.is_set():
                if len(outcomes) >= CONCURRENCY:
                    try:
                        busy = victim.metrics()["dlm_slots_busy"]
                    except httpx.HTTPError:
                        busy = 0
                    if busy >= 2:
                        killed["busy"] = busy
                        killed["signal"] = time.monotonic()
                        victim.proc.kill()  # SIGKILL
                        victim.proc.wait(10)
                        killed["at"] = time.monotonic()  # dead and reaped: its port refuses
                        return
                time.sleep(0.02)

        workers = [threading.Thread(target=worker, name=f"load-{k}") for k in range(CONCURRENCY)]
        side = [threading.Thread(target=watch_health, name="health"), threading.Thread(target=killer, name="killer")]
        for t in side + workers:
            t.start()
        for t in workers:
            t.join(240)
        side[1].join(10)
        assert not any(t.is_alive() for t in workers), "the load did not finish in 240 s"
        assert not worker_errors, worker_errors
        assert "at" in killed, "the victim never had 2 streams decoding: nothing was killed"
        load_s = time.monotonic() - min(o.sent for o in outcomes.values())

        for o in outcomes.values():
            classify(o, refs)
        by_kind = {k: sorted(i for i, o in outcomes.items() if o.kind == k) for k in ("completed", "failed", "lost", "hung")}
        after_kill = sorted(i for i, o in outcomes.items() if o.sent > killed["at"])

        # nginx's own record: which replica(s) each chat request went to.
        access = [l for l in nginx.access_log.read_text().splitlines() if f"POST {CHAT}" in l]
        retried = [l for l in access if re.search(r"upstream=\S+, ", l)]
        health_log = [l for l in nginx.access_log.read_text().splitlines() if "GET /health" in l]
        health_retried = [l for l in health_log if re.search(r"upstream=\S+, ", l)]
        errors_log = nginx.error_log.read_text(errors="replace")
        refused = errors_log.count("(111: Connection refused)")
        cut = errors_log.count("upstream prematurely closed")

        # Restart the victim on its port; nginx must send it traffic again (after fail_timeout).
        restarted = ServerProcess("replica-b-restarted", server_bin, replica_args, listen_port=victim.port).start()
        replicas.append(restarted)
        assert restarted.port == victim.port
        t_restart = time.monotonic()
        after_restart: List[Outcome] = []
        with httpx.Client(base_url=nginx.url, timeout=httpx.Timeout(CLIENT_READ_TIMEOUT, connect=5.0)) as c:

            def restarted_served():
                o = stream_once(c, len(after_restart), max_tokens=20)
                after_restart.append(o)
                assert o.status == 200 and o.error is None and o.events[-1:] == ["[DONE]"], o
                return restarted.metrics().get(REQUESTS_OK, 0) >= 2

            wait_for(restarted_served, timeout=30, interval=0.2, what="the restarted replica to serve 2 requests via nginx")
        back_after_s = time.monotonic() - t_restart
        done.set()
        side[0].join(10)

        figures = {
            "sent": len(outcomes),
            "completed": len(by_kind["completed"]),
            "failed_visibly": len(by_kind["failed"]),
            "lost_silently": len(by_kind["lost"]),
            "hung": len(by_kind["hung"]),
            "sent_after_kill": len(after_kill),
            "victim_streams_decoding_at_kill": killed["busy"],
            "retried_by_nginx": len(retried),
            "nginx_connection_refused": refused,
            "nginx_upstream_cut": cut,
            "health_checks": len(health),
            "health_checks_retried_by_nginx": len(health_retried),
            "restarted_replica_back_after_s": round(back_after_s, 2),
            "restarted_replica_requests": int(restarted.metrics().get(REQUESTS_OK, 0)),
            "survivor_requests": int(survivor.metrics().get(REQUESTS_OK, 0)),
            "load_s": round(load_s, 1),
        }
        print("\nreplicas behind nginx, one killed:", json.dumps(figures))
        report_figures("replicas behind nginx, one killed -9", json.dumps(figures))
        for i in by_kind["failed"]:
            o = outcomes[i]
            print(f"  failed visibly: request {i} after {o.content_chunks()} content events, "
                  f"{o.ended - o.sent:.2f} s: {o.why[:160]}")
        for l in retried + health_retried:
            print("  retried:", l)

        lost = {i: outcomes[i].why for i in by_kind["lost"]}
        assert not lost, f"streams lost silently (ended cleanly but incomplete): {lost}"
        assert not by_kind["hung"], f"streams hung: {[outcomes[i].error for i in by_kind['hung']]}"
        assert sorted(outcomes) == list(range(REQUESTS))
        assert len(by_kind["completed"]) + len(by_kind["failed"]) == REQUESTS
        # Everything sent after the kill completed: retried on the survivor when nginx tried the
        # dead replica first.
        assert after_kill, "no request was sent after the kill: kill earlier"
        assert all(outcomes[i].kind == "completed" for i in after_kill), "requests sent after the kill that did not complete (not retried on the survivor?): " + "; ".join(
            f"{i}: {outcomes[i].kind}: {outcomes[i].why[:120]}" for i in after_kill if outcomes[i].kind != "completed"
        )
        # Only the streams running on the victim may fail; they failed with a transport error,
        # after some tokens (the response had started, so nginx could not retry them).
        assert by_kind["failed"], f"the kill cut no stream: nothing tested the cut ({figures})"
        for i in by_kind["failed"]:
            o = outcomes[i]
            assert o.error is not None and o.status == 200, (i, o)
            assert o.sent < killed["at"] and o.ended > killed["signal"], f"request {i} failed but was not in flight at the kill: {o}"
        # nginx found the dead replica on some request (a chat request or a /health check,
        # whichever came first) and resent that request to the survivor, which answered 200.
        assert retried or health_retried, "nginx's access log shows no request retried on the survivor"
        assert all(re.search(r" 200 \d+ .*upstream_status=\S+, 200 ", l) for l in retried + health_retried), retried + health_retried
        assert refused + cut >= 1, f"nginx's error.log shows no upstream failure:\n{errors_log[-3000:]}"
        # /health through nginx: 200 before, during and after the kill.
        bad = [(round(t - killed["at"], 2), s) for t, s in health if s != 200]
        assert not bad, f"/health through nginx was not 200 (seconds after the kill, answer): {bad}"
        assert sum(t > killed["at"] for t, _ in health) >= 5, health
        assert all(o.status == 200 for o in after_restart)
        print(f"  test time {time.monotonic() - t_start:.1f} s")
    finally:
        if nginx is not None:
            nginx.stop()
        for s in replicas:
            s.stop()
