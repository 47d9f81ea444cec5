"""A local stand-in for the Hugging Face Hub HTTP API, so push/pull tests run the real client.

The Hub is unreachable from the test machines and `HF_HUB_OFFLINE=1` blocks localhost too, so
`push_to_hub` / `from_pretrained(repo_id)` are tested against `FakeHub`: a stdlib HTTP server on
127.0.0.1 that implements the handful of routes `huggingface_hub` (2.4) calls for a model or
dataset repo:

    POST   /api/repos/create                          create_repo (409 if it exists)
    DELETE /api/repos/delete                          delete_repo
    GET    /api/whoami-v2                             whoami
    POST   /api/validate-yaml                         README.md front matter check before a commit
    GET    /api/{type}s/{ns}/{name}[/revision/{rev}]  repo_info / model_info (siblings, sha)
    GET    /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]     list_repo_tree (?recursive=)
    POST   /api/{type}s/{ns}/{name}/paths-info/{rev}        get_paths_info
    POST   /api/{type}s/{ns}/{name}/preupload/{rev}         upload mode of each file
    POST   /api/{type}s/{ns}/{name}/commit/{rev}            NDJSON commit (header + file ops)
    HEAD|GET /[{type}s/]{ns}/{name}/resolve/{rev}/{path}    hf_hub_download / snapshot_download

How the client is kept on the plain-HTTP path (no LFS, no Xet), read from huggingface_hub 2.4:
- Upload: `create_commit` asks `preupload` for each file's `uploadMode`. Only files answered
  `"lfs"` go through `_upload_files` (which picks Xet when `hf_xet` is installed, else the LFS
  batch API). `preupload` here answers `"regular"` for every file, so each file travels
  base64-encoded inside the commit's NDJSON body, with or without `hf_xet` installed.
- Download: the client takes the Xet path only when the HEAD answer carries `X-Xet-Hash` plus a
  refresh route, or a tree entry carries `xetHash`. Neither is ever sent here, so files come
  from a plain GET on the resolve URL, checked against `Content-Length`.
A request this server does not implement is answered 501 and recorded in `FakeHub.unhandled`,
so a test can assert the client stayed on the routes above.

Storage: blobs live content-addressed in a directory (`root/blobs/<git blob sha1>`); repos,
branches and commits are kept in memory. Each commit gets a fresh 40-hex sha and `main` moves
to it; `create_repo` makes an initial commit holding `.gitattributes`, as the Hub does.
Not implemented (answered 501 or 400): LFS/Xet transfer, pull requests (`create_pr`),
branches other than `main`, tags, copies, and auth (any bearer token is accepted; writes only
require that one is sent).

Use it through the `fake_hub_server` fixture and `run_client` below.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

REPO_TYPES = ("model", "dataset", "space")

# The `.gitattributes` the Hub writes into a new repo (abridged): the first commit of every repo.
DEFAULT_GITATTRIBUTES = b"""*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""

_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", re.DOTALL)


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a blob: what the Hub reports as `oid`/ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class _Commit:
    sha: str
    parent: str | None
    summary: str
    description: str
    files: dict[str, str]  # path in repo -> blob oid
    date: str


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit sha
    commits: dict[str, _Commit] = field(default_factory=dict)


class HubError(Exception):
    """An error answer: HTTP status, the Hub's `X-Error-Code` (selects the client exception), message."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.extra = extra or {}  # more fields for the JSON body


class FakeHub:
    """A Hub-compatible HTTP server on 127.0.0.1 backed by a directory.

    Args:
        root: directory for blobs (created if missing).
        username: the namespace a bare `create_repo("name")` lands in, and what `whoami` answers.

    Attributes:
        endpoint: `http://127.0.0.1:PORT`, the value for `HF_ENDPOINT` (set after `start()`).
        requests: `"METHOD /path"` of every request served, in order.
        unhandled: the subset answered 501 because no route matched.
    """

    def __init__(self, root: str | os.PathLike, username: str = "user"):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.requests: list[str] = []
        self.unhandled: list[str] = []
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._commit_counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint: str | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakeHub:
        if self._httpd is not None:
            raise RuntimeError(f"FakeHub already serving at {self.endpoint}")
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- server-side view for assertions

    def list_files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """Sorted paths of the files in `repo_id` at `revision`."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return sorted(repo.commits[self._resolve(repo, revision)].files)

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = repo.commits[self._resolve(repo, revision)]
            if path not in commit.files:
                raise KeyError(f"{path!r} not in {repo_id}@{revision}; files: {sorted(commit.files)}")
            return self._read_blob(commit.files[path])

    def commits(self, repo_id: str, repo_type: str = "model") -> list[dict]:
        """History of `main`, newest first: dicts with sha, parent, summary, files."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            history, sha = [], repo.branches["main"]
            while sha is not None:
                commit = repo.commits[sha]
                history.append(
                    {"sha": sha, "parent": commit.parent, "summary": commit.summary, "files": sorted(commit.files)}
                )
                sha = commit.parent
            return history

    # ---------------------------------------------------------------- storage

    def _write_blob(self, content: bytes) -> str:
        oid = git_blob_sha1(content)
        path = self.blob_dir / oid
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(content)
            tmp.replace(path)
        return oid

    def _read_blob(self, oid: str) -> bytes:
        return (self.blob_dir / oid).read_bytes()

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository Not Found for {repo_type} {repo_id!r}.", "RepoNotFound")
        return repo

    def _resolve(self, repo: _Repo, revision: str) -> str:
        """Branch name, full sha, or a unique sha prefix of at least 7 hex digits -> full sha."""
        if revision in repo.branches:
            return repo.branches[revision]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [sha for sha in repo.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _commit(self, repo: _Repo, files: dict[str, str], summary: str, description: str = "") -> str:
        parent = repo.branches.get("main")
        seed = json.dumps([repo.repo_type, repo.repo_id, parent, files, summary, next(self._commit_counter)])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = _Commit(sha, parent, summary, description, dict(files), _utc_now())
        repo.branches["main"] = sha
        return sha

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo_id}"

    # ---------------------------------------------------------------- routes

    def create_repo(self, body: dict) -> tuple[int, dict]:
        name, organization = body.get("name"), body.get("organization")
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}; allowed: {REPO_TYPES}")
        if not name or not re.fullmatch(r"[\w.\-]+", name):
            raise HubError(400, f"Invalid repo name {name!r}")
        repo_id = f"{organization or self.username}/{name}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                # The Hub's 409 carries the url: `create_repo(exist_ok=True)` returns it.
                raise HubError(
                    409,
                    f"You already created this {repo_type} repo: {repo_id}",
                    extra={"url": self._repo_url(repo_type, repo_id)},
                )
            repo = _Repo(repo_type, repo_id, body.get("visibility") == "private", _utc_now())
            self._repos[(repo_type, repo_id)] = repo
            self._commit(repo, {".gitattributes": self._write_blob(DEFAULT_GITATTRIBUTES)}, "initial commit")
        return 200, {"url": self._repo_url(repo_type, repo_id), "name": repo_id, "id": repo_id}

    def delete_repo(self, body: dict) -> tuple[int, dict]:
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.username}/{body.get('name')}"
        with self._lock:
            self._get_repo(repo_type, repo_id)
            del self._repos[(repo_type, repo_id)]
        return 200, {}

    def validate_yaml(self, body: dict) -> tuple[int, dict]:
        match = _FRONT_MATTER.match(body.get("content") or "")
        if match is not None:
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as err:
                return 400, {"errors": [{"message": f"Invalid YAML: {err}"}], "warnings": []}
            if metadata is not None and not isinstance(metadata, dict):
                return 400, {"errors": [{"message": "Metadata must be a YAML mapping"}], "warnings": []}
        return 200, {"errors": [], "warnings": []}

    def repo_info(self, repo_type: str, repo_id: str, revision: str, query: dict) -> tuple[int, dict]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            commit = repo.commits[self._resolve(repo, revision)]
            with_sizes = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for path, oid in sorted(commit.files.items()):
                sibling = {"rfilename": path}
                if with_sizes:
                    sibling.update(size=(self.blob_dir / oid).stat().st_size, blobId=oid)
                siblings.append(sibling)
            card_data = None
            if "README.md" in commit.files:
                match = _FRONT_MATTER.match(self._read_blob(commit.files["README.md"]).decode("utf-8", "replace"))
                card_data = yaml.safe_load(match.group(1)) if match else None
            info = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": list((card_data or {}).get("tags") or []),
                "siblings": siblings,
            }
            if card_data:
                info["cardData"] = card_data
                if repo_type == "model" and "library_name" in card_data:
                    info["library_name"] = card_data["library_name"]
            return 200, info

    def _entry(self, files: dict[str, str], path: str) -> dict | None:
        """Tree entry for `path`: a file, a directory (any file under `path/`), or None."""
        if path in files:
            oid = files[path]
            return {"type": "file", "oid": oid, "size": (self.blob_dir / oid).stat().st_size, "path": path}
        under = sorted((p, oid) for p, oid in files.items() if p.startswith(path + "/"))
        if under:
            tree_id = hashlib.sha1(json.dumps(under).encode()).hexdigest()
            return {"type": "directory", "oid": tree_id, "size": 0, "path": path}
        return None

    def list_tree(self, repo_type: str, repo_id: str, revision: str, path: str, query: dict) -> tuple[int, list]:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            sha = self._resolve(repo, revision)
            files = repo.commits[sha].files
            prefix = f"{path}/" if path else ""
            if path and self._entry(files, path) is None:
                raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound", {"X-Repo-Commit": sha})
            children: set[str] = set()
            for file_path in files:
                if not file_path.startswith(prefix):
                    continue
                parts = file_path[len(prefix):].split("/")
                for depth in range(1, len(parts) + 1 if recursive else 2):
                    children.add(prefix + "/".join(parts[:depth]))
            entries = [self._entry(files, child) for child in sorted(children)]
            # The Hub lists directories before files at each level.
            return 200, sorted(entries, key=lambda e: (e["type"] != "directory", e["path"]))

    def paths_info(self, repo_type: str, repo_id: str, revision: str, form: dict) -> tuple[int, list]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            files = repo.commits[self._resolve(repo, revision)].files
            entries = [self._entry(files, path.strip("/")) for path in form.get("paths", [])]
            return 200, [entry for entry in entries if entry is not None]

    def preupload(self, repo_type: str, repo_id: str, revision: str, body: dict, query: dict) -> tuple[int, dict]:
        if query.get("create_pr"):
            raise HubError(501, "FakeHub does not implement pull requests (create_pr)")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            files = repo.commits[self._resolve(repo, revision)].files
            answers = [
                # "regular" keeps every file inside the commit body: no LFS or Xet transfer is
                # started. `oid` (git blob sha1 of the current file) lets the client skip no-op adds.
                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
                for f in body.get("files", [])
            ]
            return 200, {"files": answers, "commitOid": repo.branches["main"]}

    def commit(self, repo_type: str, repo_id: str, revision: str, raw_body: bytes, query: dict) -> tuple[int, dict]:
        if query.get("create_pr"):
            raise HubError(501, "FakeHub does not implement pull requests (create_pr)")
        lines = [json.loads(line) for line in raw_body.decode("utf-8").splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "Commit body must be NDJSON starting with a 'header' line")
        header = lines[0]["value"]
        summary = header.get("summary") or ""
        if not summary:
            raise HubError(400, "Commit summary must not be empty")
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            if revision != "main":
                self._resolve(repo, revision)  # 404 RevisionNotFound for an unknown revision
                raise HubError(501, f"FakeHub only commits to 'main', got revision {revision!r}")
            head = repo.branches["main"]
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and not head.startswith(parent_commit):
                raise HubError(412, f"parentCommit {parent_commit} is not the head of main ({head})")
            files = dict(repo.commits[head].files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding") == "base64":
                        content = base64.b64decode(value["content"])
                    else:
                        content = value["content"].encode("utf-8")
                    files[path] = self._write_blob(content)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    # lfsFile would reference content this server never received (preupload never says "lfs").
                    raise HubError(400, f"FakeHub does not accept commit operation {key!r} (path {path!r})")
            sha = self._commit(repo, files, summary, header.get("description") or "")
        return 200, {
            "success": True,
            "commitOid": sha,
            "commitUrl": f"{self._repo_url(repo_type, repo_id)}/commit/{sha}",
            "pullRequestUrl": None,
            "hookOutput": "",
        }

    def resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> tuple[bytes, dict]:
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            sha = self._resolve(repo, revision)
            oid = repo.commits[sha].files.get(path)
            if oid is None:
                raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": sha})
            content = self._read_blob(oid)
        return content, {"ETag": f'"{oid}"', "X-Repo-Commit": sha, "Content-Type": "application/octet-stream"}


class _HubHandler(BaseHTTPRequestHandler):
    """Parses a request, dispatches it to `FakeHub`, writes JSON or file answers."""

    hub: FakeHub  # set on the per-server subclass
    protocol_version = "HTTP/1.1"  # keep-alive, as httpx expects; every answer carries Content-Length

    def log_message(self, format, *args):  # quiet: the request list is in `hub.requests`
        pass

    def do_GET(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, headers: dict) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload, headers: dict | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _handle(self) -> None:
        hub = self.hub
        method = self.command
        split = urlsplit(self.path)
        hub.requests.append(f"{method} {split.path}")
        query = parse_qs(split.query)
        # Split before unquoting: the client quotes a revision like "refs/pr/1" into one segment.
        segments = [unquote(s) for s in split.path.split("/")[1:]]
        raw_body = self._read_body()
        try:
            if method in ("POST", "PUT", "DELETE") and not self.headers.get("Authorization", "").startswith("Bearer "):
                raise HubError(401, "Invalid credentials in Authorization header")
            if method in ("HEAD", "GET") and segments[0] != "api" and "resolve" in segments[2:4]:
                self._resolve_file(segments)
                return
            status, payload = self._route_api(method, segments, query, raw_body)
            self._send_json(status, payload)
        except HubError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
            if err.status == 501:
                hub.unhandled.append(f"{method} {split.path}")
            self._send_json(err.status, {"error": err.message, **err.extra}, headers)

    def _resolve_file(self, segments: list[str]) -> None:
        # /{ns}/{name}/resolve/{rev}/{path...} or /{type}s/{ns}/{name}/resolve/{rev}/{path...}
        repo_type = "model"
        if segments[0] in ("datasets", "spaces"):
            repo_type, segments = segments[0][:-1], segments[1:]
        if len(segments) < 5 or segments[2] != "resolve":
            raise HubError(501, f"FakeHub has no route for {self.command} {self.path}")
        repo_id, revision, path = f"{segments[0]}/{segments[1]}", segments[3], "/".join(segments[4:])
        content, headers = self.hub.resolve(repo_type, repo_id, revision, path)
        status = 200
        range_header = self.headers.get("Range")
        if range_header:  # the client resumes an interrupted download with "bytes=START-"
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            if match is None:
                raise HubError(416, f"Unsupported Range header {range_header!r}")
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start : end + 1], 206
        self._send(status, content, {**headers, "Accept-Ranges": "bytes"})

    def _route_api(self, method: str, segments: list[str], query: dict, raw_body: bytes):
        hub = self.hub
        route = "/".join(segments[:3])
        if method == "POST" and route == "api/repos/create":
            return hub.create_repo(json.loads(raw_body or b"{}"))
        if method == "DELETE" and route == "api/repos/delete":
            return hub.delete_repo(json.loads(raw_body or b"{}"))
        if method == "GET" and route == "api/whoami-v2":
            return 200, {"type": "user", "name": hub.username, "fullname": hub.username, "orgs": []}
        if method == "POST" and route == "api/validate-yaml":
            return hub.validate_yaml(json.loads(raw_body or b"{}"))
        if len(segments) >= 4 and segments[0] == "api" and segments[1] in ("models", "datasets", "spaces"):
            repo_type, repo_id = segments[1][:-1], f"{segments[2]}/{segments[3]}"
            rest = segments[4:]
            if method == "GET" and not rest:
                return hub.repo_info(repo_type, repo_id, "main", query)
            if method == "GET" and len(rest) == 2 and rest[0] == "revision":
                return hub.repo_info(repo_type, repo_id, rest[1], query)
            if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
                return hub.list_tree(repo_type, repo_id, rest[1], "/".join(rest[2:]).strip("/"), query)
            if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                return hub.paths_info(repo_type, repo_id, rest[1], parse_qs(raw_body.decode()))
            if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
                return hub.preupload(repo_type, repo_id, rest[1], json.loads(raw_body or b"{}"), query)
            if method == "POST" and len(rest) == 2 and rest[0] == "commit":
                return hub.commit(repo_type, repo_id, rest[1], raw_body, query)
        raise HubError(501, f"FakeHub has no route for {method} /{'/'.join(segments)}")


# -------------------------------------------------------------------- pytest helpers


@pytest.fixture
def fake_hub_server(tmp_path_factory):
    """A started `FakeHub`, stopped after the test. Pass it to `run_client`."""
    with FakeHub(tmp_path_factory.mktemp("fake_hub")) as hub:
        yield hub


@pytest.fixture(scope="module")
def fake_hub_module_server(tmp_path_factory):
    """One `FakeHub` shared by a test module: push once, check many things (repos persist between tests)."""
    with FakeHub(tmp_path_factory.mktemp("fake_hub")) as hub:
        yield hub


_HF_ENV_TO_DROP = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_XET_CACHE",
    "HF_ASSETS_CACHE",
    "HF_TOKEN_PATH",
    "HF_STORED_TOKENS_PATH",
    "HUGGING_FACE_HUB_TOKEN",
)


def client_env(server: FakeHub, hf_home: str | os.PathLike) -> dict[str, str]:
    """Environment for a process whose `huggingface_hub` talks to `server` with a cache in `hf_home`."""
    env = {k: v for k, v in os.environ.items() if k not in _HF_ENV_TO_DROP}
    env.update(
        HF_ENDPOINT=server.endpoint,  # read once, when huggingface_hub is imported
        HF_HOME=str(hf_home),
        HF_TOKEN="hf_fake_token_for_local_tests",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_client(
    code: str,
    server: FakeHub,
    tmp_path: str | os.PathLike,
    *,
    hf_home: str | os.PathLike | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run Python `code` in a fresh interpreter whose Hub client talks to `server`.

    A subprocess because `HF_ENDPOINT` is read when `huggingface_hub` is imported. Each call
    gets a new empty `HF_HOME` under `tmp_path` unless `hf_home` is given, so a download
    really comes from the server. The working directory is `tmp_path`. Raises
    `RuntimeError` with the client's stdout/stderr if it exits non-zero.
    """
    tmp_path = Path(tmp_path)
    if hf_home is None:
        hf_home = tempfile.mkdtemp(prefix="hf_home_", dir=tmp_path)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=client_env(server, hf_home),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"Hub client exited with status {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result
