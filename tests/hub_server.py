"""A loopback stand-in for the Hugging Face Hub API, for publishing tests (no network, no real Hub).

`FakeHub().start()` serves on 127.0.0.1 (ephemeral port, one thread per request) the routes a push and a
download-back use: whoami, repo create / settings / branch, validate-yaml, preupload (always "regular"),
commit (NDJSON, files base64; `parentCommit` checked: 412 when stale), model info, tree, paths-info, resolve.
Every request is kept (`requests`: method, path, body, and the decoded files of a commit); failures can be
injected: `fail_commit = 500` answers every commit with that status, `conflict_once = True` lets "someone
else" commit just before the next commit (which then gets 412), `add_repo(...)` makes a pre-existing repo.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import yaml


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FRONT_MATTER = re.compile(r"\A---\r?\n(.*?)\r?\n---", re.DOTALL)


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, bytes]
    message: str
    description: str = ""


@dataclass
class Repo:
    repo_id: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        oid = self.refs.get(rev, rev)
        return self.commits.get(oid)

    def history(self, ref: str = "main") -> list[Commit]:
        """Commits from the first to the head of `ref`."""
        out, commit = [], self.resolve(ref)
        while commit is not None:
            out.append(commit)
            commit = self.commits.get(commit.parent) if commit.parent else None
        return out[::-1]


@dataclass
class Received:
    method: str
    path: str
    body: bytes
    files: dict[str, bytes] = field(default_factory=dict)  # decoded files of a commit request


class FakeHub:
    def __init__(self, user: str = "alice"):
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.requests: list[Received] = []
        self.fail_commit: int | None = None
        self.conflict_once = False
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self.server: ThreadingHTTPServer | None = None

    # -- life cycle ------------------------------------------------------------------------------------------
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- state -------------------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, private: bool = False, files: dict[str, bytes] | None = None) -> Repo:
        with self.lock:
            repo = Repo(repo_id, private)
            self.repos[repo_id] = repo
            self.commit(
                repo, "main", {".gitattributes": b"*.safetensors filter=lfs\n", **(files or {})}, "initial commit"
            )
            return repo

    def commit(self, repo: Repo, ref: str, files: dict[str, bytes], message: str, description: str = "") -> Commit:
        with self.lock:
            parent = repo.refs.get(ref)
            oid = hashlib.sha1(f"{repo.repo_id}:{next(self._ids)}:{message}".encode()).hexdigest()
            commit = Commit(oid, parent, files, message, description)
            repo.commits[oid] = commit
            repo.refs[ref] = oid
            return commit

    def commit_requests(self) -> list[Received]:
        return [r for r in self.requests if r.method == "POST" and "/commit/" in r.path]

    def sent_items(self) -> dict[str, bytes]:
        """Everything that reached the server, for a privacy scan: paths, raw bodies, decoded commit files."""
        items: dict[str, bytes] = {}
        for i, r in enumerate(self.requests):
            items[f"request {i} path"] = unquote(r.path).encode()
            items[f"request {i} body"] = r.body
            items.update({f"request {i} file {path}": content for path, content in r.files.items()})
        return items


def _validate_card(content: str) -> list[str]:
    """The subset of the Hub's README metadata checks that matters here (a local path is not a base model)."""
    match = _FRONT_MATTER.match(content)
    if not match:
        return []
    try:
        data = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError as err:
        return [f"invalid YAML: {err}"]
    if not isinstance(data, dict):
        return ["metadata must be a mapping"]
    errors = []
    bases = data.get("base_model") or []
    for base in [bases] if isinstance(bases, str) else bases:
        if not isinstance(base, str) or not _HUB_ID.match(base):
            errors.append(f'"base_model" must be a Hub model id, got {base!r}')
    if "license" in data and not isinstance(data["license"], str):
        errors.append('"license" must be a string')
    for entry in data.get("model-index") or []:
        for result in entry.get("results") or []:
            if not (result.get("task") or {}).get("type") or not (result.get("dataset") or {}).get("type"):
                errors.append("model-index: every result needs task.type and dataset.type")
            if any("type" not in m or "value" not in m for m in result.get("metrics") or []):
                errors.append("model-index: every metric needs a type and a value")
    return errors


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _read(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes | dict | list = b"", headers: dict[str, str] | None = None):
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        self.send_response(status)
        self.send_header(
            "Content-Type", "application/json" if isinstance(body, (dict, list)) else "application/octet-stream"
        )
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str):
        self._send(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _handle(self):
        body = self._read()
        received = Received(self.command, self.path, body)
        with self.fake.lock:
            self.fake.requests.append(received)
        url = urlparse(self.path)
        for method, pattern, handler in _ROUTES:
            match = re.fullmatch(pattern, url.path)
            if method == self.command and match:
                groups = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return handler(self, received, parse_qs(url.query), **groups)
        return self._error(404, "NotFound", f"fake hub: no route for {self.command} {url.path}")

    do_GET = do_POST = do_PUT = do_HEAD = _handle

    def _repo(self, repo: str) -> Repo | None:
        found = self.fake.repos.get(repo)
        if found is None or (found.private and not self.headers.get("Authorization")):
            self._error(404, "RepoNotFound", f"Repository {repo} not found")
            return None
        return found

    # -- routes ------------------------------------------------------------------------------------------------
    def whoami(self, received, query):
        if not (self.headers.get("Authorization") or "").startswith("Bearer "):
            return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
        return self._send(200, {"type": "user", "name": self.fake.user, "fullname": "Test User", "orgs": []})

    def create_repo(self, received, query):
        payload = json.loads(received.body or b"{}")
        repo_id = f"{payload.get('organization') or self.fake.user}/{payload['name']}"
        private = payload.get("private", payload.get("visibility") == "private")
        if repo_id in self.fake.repos:
            return self._send(
                409, {"error": "You already created this model repo", "url": f"{self.fake.url}/{repo_id}"}
            )
        self.fake.add_repo(repo_id, private=bool(private))
        return self._send(200, {"url": f"{self.fake.url}/{repo_id}", "name": repo_id})

    def settings(self, received, query, repo):
        found = self._repo(repo)
        if found:
            payload = json.loads(received.body or b"{}")
            if "private" in payload or "visibility" in payload:
                found.private = bool(payload.get("private", payload.get("visibility") == "private"))
            self._send(200, {})

    def branch(self, received, query, repo, branch):
        found = self._repo(repo)
        if not found:
            return
        if branch in found.refs:
            return self._error(409, "BranchExists", f"Branch {branch} already exists")
        start = json.loads(received.body or b"{}").get("startingPoint") or "main"
        found.refs[branch] = found.refs.get(start, start)
        self._send(200, {})

    def validate_yaml(self, received, query):
        errors = _validate_card(json.loads(received.body).get("content", ""))
        self._send(400 if errors else 200, {"errors": [{"message": e} for e in errors], "warnings": []})

    def preupload(self, received, query, repo, rev):
        if self._repo(repo):
            files = json.loads(received.body).get("files", [])
            self._send(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )

    def commit(self, received, query, repo, rev):
        found = self._repo(repo)
        if not found:
            return
        items = [json.loads(line) for line in received.body.splitlines() if line.strip()]
        header = items[0]["value"]
        with self.fake.lock:
            if self.fake.fail_commit:
                return self._error(self.fake.fail_commit, "Injected", "fake hub: injected failure")
            if self.fake.conflict_once:
                self.fake.conflict_once = False
                head = found.resolve(rev)
                self.fake.commit(
                    found, rev, {**head.files, "someone_else.txt": b"meanwhile\n"}, "someone else's commit"
                )
            head = found.resolve(rev)
            if head is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                return self._error(
                    412, "PreconditionFailed", "A commit has happened since. Please refresh and try again."
                )
            files = dict(head.files)
            for item in items[1:]:
                if item["key"] == "file":
                    received.files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "deletedFile":
                    files.pop(item["value"]["path"], None)
                else:
                    return self._error(400, "Unsupported", f"fake hub: {item['key']} is not supported")
            files.update(received.files)
            ref, pr_url = rev, None
            if query.get("create_pr"):
                number = 1 + sum(r.startswith("refs/pr/") for r in found.refs)
                ref, pr_url = f"refs/pr/{number}", f"{self.fake.url}/{repo}/discussions/{number}"
                found.refs[ref] = head.oid
            new = self.fake.commit(found, ref, files, header["summary"], header.get("description", ""))
        self._send(
            200,
            {
                "commitUrl": f"{self.fake.url}/{repo}/commit/{new.oid}",
                "commitOid": new.oid,
                "success": True,
                "pullRequestUrl": pr_url,
            },
        )

    def model_info(self, received, query, repo, rev=None):
        found = self._repo(repo)
        if not found:
            return
        commit = found.resolve(rev or "main")
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        card = _FRONT_MATTER.match(commit.files.get("README.md", b"").decode("utf-8", "replace"))
        info = {
            "id": repo,
            "modelId": repo,
            "sha": commit.oid,
            "private": found.private,
            "tags": [],
            "siblings": [{"rfilename": p, "size": len(c)} for p, c in sorted(commit.files.items())],
            "cardData": (yaml.safe_load(card.group(1)) if card else None) or {},
            "lastModified": "2024-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
        self._send(200, info)

    def _entries(self, commit: Commit, paths) -> list[dict]:
        return [
            {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
            for p, c in sorted(commit.files.items())
            if p in paths
        ]

    def tree(self, received, query, repo, rev, path=""):
        found = self._repo(repo)
        if not found:
            return
        commit = found.resolve(rev)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        prefix = f"{path.strip('/')}/" if path else ""
        entries = self._entries(commit, [p for p in commit.files if p.startswith(prefix)])
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        self._send(200, entries)

    def paths_info(self, received, query, repo, rev):
        found = self._repo(repo)
        if not found:
            return
        commit = found.resolve(rev)
        body = received.body.decode()
        payload = json.loads(body) if body.startswith("{") else {k: v for k, v in parse_qs(body).items()}
        self._send(200, self._entries(commit, set(payload.get("paths", []))) if commit else [])

    def resolve(self, received, query, repo, rev, path):
        found = self._repo(repo)
        if not found:
            return
        commit = found.resolve(rev)
        if commit is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        if path not in commit.files:
            self._send(
                404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit.oid}
            )
            return
        content = commit.files[path]
        headers = {"ETag": f'"{hashlib.sha1(content).hexdigest()}"', "X-Repo-Commit": commit.oid}
        self._send(200, content, headers)


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_ROUTES = [
    ("GET", r"/api/whoami-v2", _Handler.whoami),
    ("POST", r"/api/repos/create", _Handler.create_repo),
    ("PUT", rf"/api/models/{_REPO}/settings", _Handler.settings),
    ("POST", rf"/api/models/{_REPO}/branch/(?P<branch>[^/]+)", _Handler.branch),
    ("POST", r"/api/validate-yaml", _Handler.validate_yaml),
    ("POST", rf"/api/models/{_REPO}/preupload/(?P<rev>[^/]+)", _Handler.preupload),
    ("POST", rf"/api/models/{_REPO}/commit/(?P<rev>[^/]+)", _Handler.commit),
    ("GET", rf"/api/models/{_REPO}(?:/revision/(?P<rev>[^/]+))?", _Handler.model_info),
    ("GET", rf"/api/models/{_REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", _Handler.tree),
    ("POST", rf"/api/models/{_REPO}/paths-info/(?P<rev>[^/]+)", _Handler.paths_info),
    ("HEAD", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
    ("GET", rf"/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", _Handler.resolve),
]
