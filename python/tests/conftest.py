"""Fixtures: real `dlm_server` processes on free ports, the OpenAI schema, small helpers.

The servers run the debug binary that `cargo test --workspace --all-targets` builds
(target/debug/dlm_server), or the one `DLM_SERVER_BIN` names; only when neither exists is it
built here. Each server listens on port 0 (the kernel picks a free port, which the server logs),
so two test runs never collide.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
# The original autoregressive stories260K (the bundled default is the demo DLM).
AR_MODEL = REPO / "models" / "stories260K.gguf"
STARTUP_TIMEOUT = 120.0
# The load tests' prompts (test_load.py, test_replicas.py): short, and different answers.
LOAD_PROMPTS = [
    "Tell me a story about a dog.",
    "What did Lily find in the garden?",
    "Once upon a time there was a big tree.",
    "Why is the sky blue?",
]


def shared_fixtures() -> Path:
    """`../shared/fixtures` beside the checkout, else `/work/shared/fixtures`."""
    beside = REPO.parent / "shared" / "fixtures"
    return beside if beside.exists() else Path("/work/shared/fixtures")


def _cargo_binary(env_var: str, name: str, package: str) -> Path:
    given = os.environ.get(env_var)
    if given:
        path = Path(given)
        if not path.is_file():
            pytest.exit(f"{env_var}={given} is not a file", returncode=2)
        return path
    path = REPO / "target" / "debug" / name
    if not path.is_file():
        subprocess.run(
            ["cargo", "build", "-p", package, "--bin", name], cwd=REPO, check=True
        )
    return path


def _die_with_parent() -> None:
    """In the child: SIGKILL when pytest dies, so no server outlives a killed test run."""
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


_LIVE: List["ServerProcess"] = []


@atexit.register
def _kill_leftovers() -> None:
    for s in list(_LIVE):
        s.stop()


class ServerProcess:
    """One `dlm_server` child process."""

    def __init__(
        self, name: str, binary: Path, args: List[str], env: Optional[Dict[str, str]] = None,
        listen_port: int = 0,
    ):
        self.name = name
        self.binary = binary
        self.args = args
        self.env = env
        self.listen_port = listen_port  # 0: the kernel picks (a restart passes the old port)
        self.lines: List[str] = []
        self.port: Optional[int] = None
        self._port_found = threading.Event()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        """`http://127.0.0.1:PORT` (what `BitNetClient.from_url` takes)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """`…/v1` (what the openai SDK takes)."""
        return self.url + "/v1"

    def log(self) -> str:
        return "".join(self.lines[-200:])

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if self.port is None:
                m = re.search(r"listening on http://[^\s:]+:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    self._port_found.set()
        self._port_found.set()  # exited: wake the waiter

    def start(self) -> "ServerProcess":
        env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")
        env.pop("DLM_API_KEY", None)
        env.update(self.env or {})
        cmd = [str(self.binary), *self.args, "--host", "127.0.0.1", "--port", str(self.listen_port)]
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        _LIVE.append(self)
        threading.Thread(target=self._drain, daemon=True, name=f"log-{self.name}").start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        if not self._port_found.wait(STARTUP_TIMEOUT) or self.port is None:
            raise RuntimeError(f"{self.name}: the server never said where it listens:\n{self.log()}")
        with httpx.Client(timeout=5.0) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name}: the server exited with {self.proc.returncode}:\n{self.log()}"
                    )
                try:
                    if c.get(self.url + "/health").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{self.name}: /health never answered 200:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self in _LIVE:
            _LIVE.remove(self)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> Dict[str, float]:
        """`/metrics` as {series: value} (labels kept in the key)."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


# Figures that reliability tests measure (requests lost, connections closed, ...), printed in a
# "figures" section at the end of every run, also when the tests pass and their output is captured.
# Rust integration tests that run before this suite (`crates/cli/tests/train_kill.rs`) leave
# theirs as text files under target/tmp/figures/, printed in the same section.
_FIGURES: List[str] = []
RUST_FIGURES = REPO / "target" / "tmp" / "figures"


@pytest.fixture
def report_figures():
    """`report_figures(title, text)`: a line for the run's closing "figures" section."""

    def report(title: str, text: str) -> None:
        _FIGURES.append(f"{title}: {text}")

    return report


def pytest_terminal_summary(terminalreporter):
    lines = list(_FIGURES)
    if RUST_FIGURES.is_dir():
        for f in sorted(RUST_FIGURES.glob("*.txt")):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.stat().st_mtime))
            lines.append(f"{f.stem} (Rust test, written {stamp}):")
            lines.extend("  " + l for l in f.read_text().splitlines())
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def server_bin() -> Path:
    return _cargo_binary("DLM_SERVER_BIN", "dlm_server", "server")


@pytest.fixture(scope="session")
def mask_model(tmp_path_factory) -> Path:
    """stories260K with an added (untrained) mask token: exercises the block-diffusion path."""
    dlm = _cargo_binary("DLM_BIN", "dlm", "cli")
    out = tmp_path_factory.mktemp("models") / "stories260K-mask.gguf"
    subprocess.run(
        [
            str(dlm), "convert", str(shared_fixtures() / "stories260K"),
            "--outfile", str(out), "--outtype", "f32", "--add-mask-token", "-q",
        ],
        check=True,
    )
    return out


@pytest.fixture(scope="session")
def start_server(server_bin):
    """Starts a server with extra flags; every one started is stopped at the end of the session."""
    started: List[ServerProcess] = []

    def start(name: str, *args: str, env: Optional[Dict[str, str]] = None) -> ServerProcess:
        s = ServerProcess(name, server_bin, list(args), env)
        started.append(s)
        return s.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def ar_server(start_server) -> ServerProcess:
    """The original stories260K (no mask token: autoregressive)."""
    return start_server("ar", "--model", str(AR_MODEL))


@pytest.fixture(scope="session")
def default_server(start_server) -> ServerProcess:
    """Started with no flags at all: the bundled demo DLM, as a new user's first command."""
    return start_server("default")


@pytest.fixture(scope="session")
def dlm_server(start_server, mask_model) -> ServerProcess:
    """stories260K + mask token in diffusion mode, the seed's flags."""
    return start_server(
        "dlm", "--model", str(mask_model), "--block-size", "32", "--threshold", "0.95",
        "--model-alias", "stories-dlm",
    )


@pytest.fixture(scope="session")
def auth_server(start_server) -> ServerProcess:
    """The AR model behind an API key (given through the environment, as DLM_API_KEY)."""
    return start_server("auth", "--model", str(AR_MODEL), env={"DLM_API_KEY": "sekrit-key"})


API_KEY = "sekrit-key"


# -- OpenAI's OpenAPI schemas --------------------------------------------------------------------


def _nullable_to_json_schema(node):
    """The spec says OpenAPI 3.1 but still marks many fields with 3.0's `nullable: true`, which
    JSON Schema ignores; rewrite each such schema to also accept null, as OpenAPI means."""
    if isinstance(node, list):
        return [_nullable_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_to_json_schema(v) for k, v in node.items()}
    if node.pop("nullable", False) is True:
        return {"anyOf": [node, {"type": "null"}]}
    return node


class OpenAISchemas:
    """Validates JSON against `#/components/schemas/<Name>` of OpenAI's OpenAPI 3.1 spec."""

    URI = "urn:openai-openapi"

    def __init__(self, path: Path):
        import yaml
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(path, "rb") as f:
            self.doc = _nullable_to_json_schema(yaml.load(f, Loader=loader))
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(self.URI, resource)
        self._validators = {}
        self._cls = Draft202012Validator

    def validate(self, name: str, instance) -> None:
        """Raises `AssertionError` listing every violation."""
        assert name in self.doc["components"]["schemas"], name
        v = self._validators.get(name)
        if v is None:
            v = self._cls({"$ref": f"{self.URI}#/components/schemas/{name}"}, registry=self._registry)
            self._validators[name] = v
        errors = sorted(v.iter_errors(instance), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]]
            raise AssertionError(
                f"not a valid {name}:\n  " + "\n  ".join(lines) + f"\n{json.dumps(instance)[:1500]}"
            )


@pytest.fixture(scope="session")
def schemas() -> OpenAISchemas:
    return OpenAISchemas(shared_fixtures() / "third-party" / "openai-openapi.yaml")


# -- helpers -------------------------------------------------------------------------------------


def sse_events(resp: httpx.Response) -> List[str]:
    """The `data:` payloads of an SSE response, in order (including `[DONE]`)."""
    out, data = [], []
    for line in resp.iter_lines():
        if line == "":
            if data:
                out.append("\n".join(data))
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        out.append("\n".join(data))
    return out


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    """Polls `predicate` until it returns a truthy value; returns it, or fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
