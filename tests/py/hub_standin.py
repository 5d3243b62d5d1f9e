#!/usr/bin/env python3
"""A stand-in for the Hugging Face Hub on loopback, serving repositories from a folder.

It answers the requests that hf-hub (Rust) and huggingface_hub (Python) make, with the headers
the real Hub sends:

- ``GET /api/{models|datasets}/{org}/{name}[/revision/{rev}]`` — repository info: ``sha``,
  ``siblings`` (``rfilename``; with ``?blobs=true`` also ``size``, ``blobId`` and ``lfs``).
- ``GET /api/{models|datasets}/{org}/{name}/tree/{rev}[/{path}]`` — ``list_repo_tree`` (what
  ``snapshot_download`` lists): file entries with ``oid``, ``size``, ``lfs``; folders.
- ``GET|HEAD /[datasets/]{org}/{name}/resolve/{rev}/{path}`` — a regular file is served with
  ``ETag`` (its git blob id), ``X-Repo-Commit``, ``Accept-Ranges``; an LFS file (safetensors,
  gguf, parquet, bin) answers ``302`` to ``/cdn-lfs/{sha256}`` on a second port (the CDN: another
  origin) with ``X-Linked-Etag``, ``X-Linked-Size`` and ``X-Repo-Commit``, as the Hub redirects
  to its CDN.
- ``GET|HEAD /cdn-lfs/{sha256}`` — the LFS object, with ``Range`` (206 + ``Content-Range``).
- A private repository answers ``401`` (``X-Error-Code: RepoNotFound``) unless the request
  carries ``Authorization: Bearer <token>``.

Layout of the served folder: ``ROOT/models/{org}/{name}/…`` and ``ROOT/datasets/{org}/{name}/…``.
Options: ``private`` (repos needing the token), ``cuts`` (file name → how many of its next
body downloads are cut off half-way), and a request log at ``GET /_standin/log``.

Run as a program: ``hub_standin.py ROOT [--private org/name] [--token T] [--cut FILE[:N]]``
prints ``PORT <n>`` and serves until killed.
"""

import argparse
import hashlib
import json
import os
import re
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit, parse_qs

LFS_EXTENSIONS = (".safetensors", ".gguf", ".parquet", ".bin")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    """One repository folder, read once: its files and a commit id derived from their content."""

    def __init__(self, kind: str, repo_id: str, folder: Path):
        self.kind, self.repo_id, self.folder = kind, repo_id, folder
        self.files = {}
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                self.files[p.relative_to(folder).as_posix()] = p
        h = hashlib.sha1()
        for name, p in self.files.items():
            h.update(name.encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
        self.commit = h.hexdigest()

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_EXTENSIONS)

    def sibling(self, name: str, blobs: bool) -> dict:
        s = {"rfilename": name}
        if blobs:
            data = self.files[name].read_bytes()
            s["blobId"] = git_blob_id(data)
            s["size"] = len(data)
            if self.is_lfs(name):
                s["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "pointerSize": 134}
        return s


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that drops the connection (or the cut body) is expected here; others print.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Standin:
    """The server; `start()` binds a free loopback port in a background thread."""

    def __init__(self, root: Path, private=(), token=None, cuts=None):
        self.root = Path(root)
        self.private = set(private)
        self.token = token
        self.cuts = dict(cuts or {})
        self.log = []
        self.lock = threading.Lock()
        self.httpd = None
        self.cdn = None

    def repo(self, kind: str, repo_id: str):
        folder = self.root / kind / repo_id
        return Repo(kind, repo_id, folder) if folder.is_dir() else None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> "Standin":
        standin = self

        class Handler(_Handler):
            hub = standin

        # The Hub and its CDN: another origin (port), as clients treat a CDN redirect differently.
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.cdn = _Server(("127.0.0.1", 0), Handler)
        for srv in (self.httpd, self.cdn):
            threading.Thread(target=srv.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for srv in (self.httpd, self.cdn):
            if srv:
                srv.shutdown()
                srv.server_close()
        self.httpd = self.cdn = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Standin = None

    def log_message(self, *args):  # quiet
        pass

    def do_HEAD(self):
        self.route(head=True)

    def do_GET(self):
        self.route(head=False)

    # --- responses -----------------------------------------------------------------------
    def send(self, status: int, body: bytes = b"", headers=(), head=False):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def error(self, status: int, code: str, message: str, head: bool):
        body = json.dumps({"error": message}).encode()
        self.send(status, body, [("Content-Type", "application/json"), ("X-Error-Code", code),
                                 ("X-Error-Message", message)], head)

    def authorized(self, repo: Repo) -> bool:
        if f"{repo.kind}/{repo.repo_id}" not in self.hub.private and repo.repo_id not in self.hub.private:
            return True
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    # --- routing -------------------------------------------------------------------------
    def route(self, head: bool):
        url = urlsplit(self.path)
        path = unquote(url.path)
        with self.hub.lock:
            self.hub.log.append({"method": self.command, "path": path,
                                 "range": self.headers.get("Range"),
                                 "auth": self.headers.get("Authorization") is not None})
        if path == "/_standin/log":
            with self.hub.lock:
                body = json.dumps(self.hub.log).encode()
            return self.send(200, body, [("Content-Type", "application/json")], head)
        m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/(.+))?", path)
        if m:
            return self.api_info(m.group(1), m.group(2), m.group(3) or "main",
                                 parse_qs(url.query), head)
        m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if m:
            return self.api_tree(m.group(1), m.group(2), m.group(3), m.group(4) or "",
                                 parse_qs(url.query), head)
        m = re.fullmatch(r"/cdn-lfs/([0-9a-f]{64})", path)
        if m:
            return self.cdn(m.group(1), head)
        m = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            kind = "datasets" if m.group(1) else "models"
            return self.resolve(kind, m.group(2), m.group(3), m.group(4), head)
        self.error(404, "EntryNotFound", f"no route for {path}", head)

    def find(self, kind: str, repo_id: str, head: bool):
        repo = self.hub.repo(kind, repo_id)
        if repo is None:
            self.error(401, "RepoNotFound", "Repository not found", head)
            return None
        if not self.authorized(repo):
            # The Hub does not tell a private repository from a missing one without a token.
            self.error(401, "RepoNotFound", "Repository not found", head)
            return None
        return repo

    def api_info(self, kind, repo_id, revision, query, head):
        repo = self.find(kind, repo_id, head)
        if repo is None:
            return
        if revision not in ("main", repo.commit):
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        blobs = query.get("blobs", ["false"])[0].lower() == "true"
        info = {
            "_id": repo.commit[:24], "id": repo_id, "private": repo_id in self.hub.private,
            "sha": repo.commit, "lastModified": "2026-01-01T00:00:00.000Z", "tags": [],
            "siblings": [repo.sibling(n, blobs) for n in repo.files],
        }
        if kind == "models":
            info["modelId"] = repo_id
        body = json.dumps(info).encode()
        self.send(200, body, [("Content-Type", "application/json; charset=utf-8"),
                              ("X-Repo-Commit", repo.commit)], head)

    def api_tree(self, kind, repo_id, revision, folder, query, head):
        """`list_repo_tree`: the entries under `folder` (all depths with `recursive=true`)."""
        repo = self.find(kind, repo_id, head)
        if repo is None:
            return
        if revision not in ("main", repo.commit):
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        entries, dirs = [], set()
        for name, p in repo.files.items():
            if not name.startswith(prefix):
                continue
            rest = name[len(prefix):]
            parts = rest.split("/")
            for i in range(1, len(parts)):
                d = prefix + "/".join(parts[:i])
                if (recursive or i == 1) and d not in dirs:
                    dirs.add(d)
                    entries.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(),
                                    "size": 0, "path": d})
            if len(parts) > 1 and not recursive:
                continue
            data = p.read_bytes()
            e = {"type": "file", "oid": git_blob_id(data), "size": len(data), "path": name}
            if repo.is_lfs(name):
                e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "pointerSize": 134}
            entries.append(e)
        if prefix and not entries:
            return self.error(404, "EntryNotFound", f"{folder} does not exist", head)
        body = json.dumps(entries).encode()
        self.send(200, body, [("Content-Type", "application/json; charset=utf-8")], head)

    def resolve(self, kind, repo_id, revision, name, head):
        repo = self.find(kind, repo_id, head)
        if repo is None:
            return
        if revision not in ("main", repo.commit):
            return self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        if name not in repo.files:
            return self.error(404, "EntryNotFound", f"{name} does not exist on \"{revision}\"",
                              head)
        data = repo.files[name].read_bytes()
        common = [("X-Repo-Commit", repo.commit), ("Accept-Ranges", "bytes"),
                  ("Access-Control-Expose-Headers", "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,ETag")]
        if repo.is_lfs(name):
            sha = hashlib.sha256(data).hexdigest()
            location = f"http://127.0.0.1:{self.hub.cdn.server_address[1]}/cdn-lfs/{sha}"
            return self.send(302, b"", common + [
                ("Location", location), ("ETag", f'"{git_blob_id(data)}"'),
                ("X-Linked-Etag", f'"{sha}"'), ("X-Linked-Size", str(len(data)))], head)
        self.body(data, git_blob_id(data), name, common, head)

    def cdn(self, sha, head):
        for kind in ("models", "datasets"):
            base = self.hub.root / kind
            for p in base.rglob("*") if base.is_dir() else []:
                if p.is_file() and p.suffix in LFS_EXTENSIONS:
                    data = p.read_bytes()
                    if hashlib.sha256(data).hexdigest() == sha:
                        return self.body(data, sha, p.name, [], head)
        self.error(404, "EntryNotFound", "no such object", head)

    def body(self, data: bytes, etag: str, name: str, headers, head):
        """The bytes, honouring `Range: bytes=a-[b]`; a file in `cuts` has its body cut off."""
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range")
        status = 200
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= max(len(data), 1):
                return self.send(416, b"", [("Content-Range", f"bytes */{len(data)}")], head)
            start = int(m.group(1))
            end = min(int(m.group(2)), end) if m.group(2) else end
            status = 206
        part = data[start:end + 1]
        self.send_response(status)
        for k, v in headers + [("ETag", f'"{etag}"'), ("Content-Type", "application/octet-stream")]:
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        if head:
            return
        with self.hub.lock:
            cut = self.hub.cuts.get(name, 0) > 0 and len(part) > 1
            if cut:
                self.hub.cuts[name] -= 1
        if cut:
            # Half the body, then the connection drops: the client must resume with a Range.
            self.wfile.write(part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(part)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("--private", action="append", default=[])
    ap.add_argument("--token")
    ap.add_argument("--cut", action="append", default=[],
                    help="FILE[:N]: cut the next N (1) body downloads of FILE half-way")
    a = ap.parse_args()
    cuts = {}
    for c in a.cut:
        name, _, n = c.partition(":")
        cuts[name] = int(n or 1)
    s = Standin(Path(a.root), a.private, a.token, cuts).start()
    print(f"PORT {s.httpd.server_address[1]}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
