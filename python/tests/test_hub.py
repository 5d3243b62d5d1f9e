"""`hf://` sources share Python's Hugging Face cache, in both directions.

A stand-in for the Hub (tests/py/hub_standin.py) serves a copy of stories260K as `org/stories`.
`dlm` downloads it and `huggingface_hub`, offline, finds the same files at the same paths; then
`huggingface_hub` downloads it into a fresh cache and `dlm`, offline, converts from that cache to
the same bytes as the local directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, _cargo_binary, shared_fixtures

sys.path.insert(0, str(REPO / "tests" / "py"))
from hub_standin import Standin  # noqa: E402

pytest.importorskip("huggingface_hub")

FILES = ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json", "tok512.model"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    repo = root / "models" / "org" / "stories"
    shutil.copytree(shared_fixtures() / "stories260K", repo)
    s = Standin(root).start()
    yield s, repo
    s.stop()


def hub_env(home: Path, endpoint: str, offline: bool, cache: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(home), HF_ENDPOINT=endpoint)
    if cache is not None:
        env["HF_HUB_CACHE"] = str(cache)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


def py_hub(env: dict, code: str):
    """Runs `code` with huggingface_hub in a fresh interpreter (it reads HF_* at import)."""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def dlm(env: dict, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(_cargo_binary("DLM_BIN", "dlm", "cli")), *args], env=env,
                          cwd=cwd, capture_output=True, text=True)


def test_huggingface_hub_finds_what_dlm_downloaded(hub, tmp_path):
    standin, repo = hub
    home = tmp_path / "hf"
    r = dlm(hub_env(home, standin.url, False), "convert", "hf://org/stories", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    snap_dir = home / "hub" / "models--org--stories" / "snapshots"
    (commit,) = [p.name for p in snap_dir.iterdir()]
    assert (home / "hub" / "models--org--stories" / "refs" / "main").read_text() == commit
    found = py_hub(hub_env(home, "http://127.0.0.1:9", True), f"""
import json
from huggingface_hub import hf_hub_download, snapshot_download
print(json.dumps({{
    "files": {{f: hf_hub_download("org/stories", f) for f in {FILES!r}}},
    "snapshot": snapshot_download("org/stories"),
}}))
""")
    assert found["snapshot"] == str(snap_dir / commit)
    for f in FILES:
        assert found["files"][f] == str(snap_dir / commit / f)
        assert Path(found["files"][f]).read_bytes() == (repo / f).read_bytes()
    # README.md is not something a conversion needs: dlm did not fetch it.
    assert not (snap_dir / commit / "README.md").exists()


def test_dlm_uses_what_huggingface_hub_downloaded(hub, tmp_path):
    """Here the cache is moved with HF_HUB_CACHE, away from HF_HOME, for both tools."""
    standin, repo = hub
    home, cache = tmp_path / "hf", tmp_path / "elsewhere"
    snap = py_hub(hub_env(home, standin.url, False, cache), """
import json
from huggingface_hub import snapshot_download
print(json.dumps(snapshot_download("org/stories")))
""")
    assert Path(snap, "model.safetensors").is_symlink()
    assert Path(snap).is_relative_to(cache) and not (home / "hub").exists()
    standin_requests = len(standin.log)
    env = hub_env(home, "http://127.0.0.1:9", True, cache)
    r = dlm(env, "convert", "hf://org/stories", "--outfile", "hub.gguf", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = dlm(env, "convert", str(repo), "--outfile", str(tmp_path / "local.gguf"),
            "--name", "stories", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hub.gguf").read_bytes() == (tmp_path / "local.gguf").read_bytes()
    assert len(standin.log) == standin_requests  # offline: nothing asked of the Hub
