"""An in-process lakeFS: the subset of lakeFS's REST API (/api/v1) that the `lakefs` SDK calls
when opt's lakeFS backend and its tests run, served over a real socket on 127.0.0.1.

It keeps lakeFS's model (repositories, commits with metadata and parents, branches with a
staging area, tags, three-way merge, revert of a commit relative to a parent) and its error
responses, `{"message": ...}` bodies with lakeFS's messages: 401 bad credentials, 404 unknown
repository/branch/ref/object, 409 branch or tag exists and merge/revert conflicts, 400 a commit
with no changes ("commit: no changes"), 416 a read past the end. Not covered: presigned URLs,
imports, hooks, branch protection, auth management, ref expressions other than `~N`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

from lakefs_model import ApiError, Repo, diff_trees, page, three_way


class FakeLakeFS:
    """lakeFS's state and its API operations; `routes` maps (method, path pattern) to them."""

    def __init__(self, access_key_id: str, secret_access_key: str):
        token = base64.b64encode(f"{access_key_id}:{secret_access_key}".encode()).decode()
        self.authorization = f"Basic {token}"
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.lock = threading.Lock()
        R, B, F = "/repositories/(?P<repo>[^/]+)", "/branches/(?P<branch>[^/]+)", "/refs/(?P<ref>[^/]+)"
        self.routes = [
            (method, re.compile(f"^/api/v1{pattern}$"), handler)
            for method, pattern, handler in [
                ("POST", "/repositories", self.create_repo),
                ("GET", R, self.get_repo),
                ("DELETE", R, self.delete_repo),
                ("POST", R + "/branches", self.create_branch),
                ("GET", R + B, self.get_branch),
                ("DELETE", R + B, self.delete_branch),
                ("GET", R + B + "/diff", self.diff_branch),
                ("POST", R + B + "/commits", self.commit),
                ("POST", R + B + "/revert", self.revert),
                ("POST", R + B + "/objects", self.upload),
                ("POST", R + B + "/objects/delete", self.delete_objects),
                ("GET", R + F + "/objects", self.get_object),
                ("GET", R + F + "/objects/ls", self.list_objects),
                ("GET", R + F + "/objects/stat", self.stat_object),
                ("GET", R + F + "/commits", self.log_commits),
                ("GET", R + F + "/diff/(?P<right>[^/]+)", self.diff_refs),
                ("POST", R + F + "/merge/(?P<dest>[^/]+)", self.merge),
                ("GET", R + "/commits/(?P<ref>[^/]+)", self.get_commit),
                ("POST", R + "/tags", self.create_tag),
                ("GET", R + "/tags", self.list_tags),
            ]
        ]

    def repo(self, name: str) -> Repo:
        if name not in self.repos:
            raise ApiError(404, "repository not found")
        return self.repos[name]

    def stats(self, path: str, entry: dict) -> dict:
        return {
            "path": path,
            "path_type": "object",
            "physical_address": entry["address"],
            "checksum": entry["checksum"],
            "size_bytes": entry["size_bytes"],
            "mtime": entry["mtime"],
            "content_type": entry["content_type"],
            "metadata": {},
        }

    def create_repo(self, req):
        body = req.json()
        name = body["name"]
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{2,62}", name):
            raise ApiError(400, "repository id: invalid value: validation error")
        if name in self.repos:
            raise ApiError(409, "repository already exists: not unique")
        repo = self.repos[name] = Repo(name, body["storage_namespace"], body.get("default_branch") or "main")
        return 201, self.repo_json(repo)

    def repo_json(self, repo: Repo) -> dict:
        return {
            "id": repo.name,
            "creation_date": repo.created,
            "default_branch": repo.default_branch,
            "storage_namespace": repo.namespace,
            "read_only": False,
        }

    def get_repo(self, req, repo):
        return 200, self.repo_json(self.repo(repo))

    def delete_repo(self, req, repo):
        self.repo(repo)
        del self.repos[repo]
        return 204, None

    def create_branch(self, req, repo):
        r, body = self.repo(repo), req.json()
        if body["name"] in r.branches:
            raise ApiError(409, "branch already exists: not unique")
        head = r.resolve(body["source"])
        r.branches[body["name"]] = {"head": head, "staged": {}}
        return 201, head

    def get_branch(self, req, repo, branch):
        return 200, {"id": branch, "commit_id": self.repo(repo).branch(branch)["head"]}

    def delete_branch(self, req, repo, branch):
        r = self.repo(repo)
        r.branch(branch)
        if branch == r.default_branch:
            raise ApiError(400, "cannot delete repository default branch")
        del r.branches[branch]
        return 204, None

    def uncommitted(self, r: Repo, branch: str) -> list[dict]:
        return diff_trees(r.trees[r.branch(branch)["head"]], r.tree(branch))

    def diff_branch(self, req, repo, branch):
        changes = self.uncommitted(self.repo(repo), branch)
        return 200, page(changes, req.arg("after"), int(req.arg("amount", 1000)), lambda d: d["path"])

    def commit(self, req, repo, branch):
        r, body = self.repo(repo), req.json()
        if not self.uncommitted(r, branch) and not body.get("allow_empty"):
            raise ApiError(400, "commit: no changes")
        b = r.branch(branch)
        b["head"] = r.add_commit([b["head"]], body["message"], body.get("metadata") or {}, r.tree(branch))
        b["staged"] = {}
        return 201, r.commits[b["head"]]

    def revert(self, req, repo, branch):
        r, body = self.repo(repo), req.json()
        b, commit = r.branch(branch), r.commits[r.resolve(body["ref"])]
        if self.uncommitted(r, branch):
            raise ApiError(400, "uncommitted changes (dirty branch)")
        number, parents = body.get("parent_number", 0), commit["parents"]
        if len(parents) > 1 and number == 0:
            raise ApiError(400, "must specify 1-based parent number for reverting merge commit")
        if not parents or number > len(parents):
            raise ApiError(400, "given commit does not have the given parent number")
        parent = parents[max(number, 1) - 1]
        tree = three_way(r.trees[commit["id"]], r.trees[b["head"]], r.trees[parent])
        if tree == r.trees[b["head"]] and not body.get("allow_empty"):
            raise ApiError(400, "revert: no changes")
        b["head"] = r.add_commit([b["head"]], f"Revert {body['ref']}", {}, tree)
        return 204, None

    def upload(self, req, repo, branch):
        r, path, data = self.repo(repo), req.arg("path"), req.body
        r.branch(branch)
        address = f"{r.namespace.rstrip('/')}/data/{hashlib.sha256(data).hexdigest()}"
        self.blobs[address] = data
        entry = {
            "address": address,
            "checksum": hashlib.md5(data).hexdigest(),
            "size_bytes": len(data),
            "mtime": int(time.time()),
            "content_type": req.headers.get("Content-Type", "application/octet-stream"),
        }
        r.branches[branch]["staged"][path] = entry
        return 201, self.stats(path, entry)

    def delete_objects(self, req, repo, branch):
        r = self.repo(repo)
        staged, tree = r.branch(branch)["staged"], r.tree(branch)
        for path in req.json()["paths"]:
            if path in tree:
                staged[path] = None
        return 200, {"errors": []}

    def object_entry(self, repo: str, ref: str, path: str) -> dict:
        entry = self.repo(repo).tree(ref).get(path)
        if entry is None:
            raise ApiError(404, "object not found: not found")
        return entry

    def get_object(self, req, repo, ref):
        data = self.blobs[self.object_entry(repo, ref, req.arg("path"))["address"]]
        return 200, ("bytes", data)

    def stat_object(self, req, repo, ref):
        path = req.arg("path")
        return 200, self.stats(path, self.object_entry(repo, ref, path))

    def list_objects(self, req, repo, ref):
        prefix = req.arg("prefix", "")
        tree = self.repo(repo).tree(ref)
        objects = [self.stats(p, e) for p, e in sorted(tree.items()) if p.startswith(prefix)]
        return 200, page(objects, req.arg("after"), int(req.arg("amount", 1000)), lambda o: o["path"])

    def log_commits(self, req, repo, ref):
        commits = self.repo(repo).log(ref, str(req.arg("first_parent")).lower() == "true")
        after, amount = req.arg("after"), int(req.arg("amount", 1000))
        start = next((i + 1 for i, c in enumerate(commits) if c["id"] == after), 0)
        return 200, page(commits[start:], None, amount, lambda c: c["id"])

    def get_commit(self, req, repo, ref):
        r = self.repo(repo)
        return 200, r.commits[r.resolve(ref)]

    def diff_refs(self, req, repo, ref, right):
        """two_dot: left to right; three_dot (lakeFS's default): what right changed since the merge base."""
        r = self.repo(repo)
        left, right_id = r.resolve(ref), r.resolve(right)
        if req.arg("type", "three_dot") == "three_dot":
            base = r.merge_base(left, right_id)
            left = base if base else left
        changes = diff_trees(r.trees[left], r.trees[right_id])
        return 200, page(changes, req.arg("after"), int(req.arg("amount", 1000)), lambda d: d["path"])

    def merge(self, req, repo, ref, dest):
        r, body = self.repo(repo), req.json()
        source, d = r.resolve(ref), r.branch(dest)
        base = r.merge_base(source, d["head"])
        tree = three_way(r.trees[base] if base else {}, r.trees[d["head"]], r.trees[source])
        if tree == r.trees[d["head"]] and not body.get("allow_empty"):
            raise ApiError(400, "no changes")
        message = body.get("message") or f"Merge '{ref}' into '{dest}'"
        d["head"] = r.add_commit([d["head"], source], message, body.get("metadata") or {}, tree)
        return 200, {"reference": d["head"]}

    def create_tag(self, req, repo):
        r, body = self.repo(repo), req.json()
        if body["id"] in r.tags:
            raise ApiError(409, "tag already exists: not unique")
        r.tags[body["id"]] = r.resolve(body["ref"])
        return 201, {"id": body["id"], "commit_id": r.tags[body["id"]]}

    def list_tags(self, req, repo):
        tags = [{"id": t, "commit_id": c} for t, c in sorted(self.repo(repo).tags.items())]
        return 200, page(tags, req.arg("after"), int(req.arg("amount", 1000)), lambda t: t["id"])


class Handler(BaseHTTPRequestHandler):
    """One HTTP request: authenticate, route, answer JSON (or bytes), errors as lakeFS does."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def arg(self, name: str, default=None):
        return self.query.get(name, [default])[0]

    def json(self) -> dict:
        return json.loads(self.body or b"{}")

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def dispatch(self, method: str):
        fake: FakeLakeFS = self.server.fake  # type: ignore[attr-defined]
        url = urlparse(self.path)
        self.query, self.body = parse_qs(url.query), self.read_body()
        try:
            if self.headers.get("Authorization") != fake.authorization:
                raise ApiError(401, "error authenticating request")
            for route_method, pattern, handler in fake.routes:
                match = pattern.match(url.path)
                if match and route_method == method:
                    with fake.lock:
                        status, payload = handler(self, **{k: unquote(v) for k, v in match.groupdict().items()})
                    return self.answer(status, payload)
            raise ApiError(404, f"no such API: {method} {url.path}")
        except ApiError as e:
            self.answer(e.status, {"message": e.message})

    def answer(self, status: int, payload) -> None:
        if isinstance(payload, tuple):  # object bytes, with HTTP ranges as lakeFS serves them
            return self.answer_bytes(payload[1])
        kind = "text/html; charset=utf-8" if isinstance(payload, str) else "application/json"
        text = payload if isinstance(payload, str) else "" if payload is None else json.dumps(payload)
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def answer_bytes(self, data: bytes) -> None:
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        status, start, end = 200, 0, len(data)
        if match:
            start, end = int(match[1]), min(int(match[2]) + 1 if match[2] else len(data), len(data))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                return self.end_headers()
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:end])


class FakeLakeFSServer:
    """Serve a FakeLakeFS on 127.0.0.1 (a free port) in a thread; `endpoint` is its URL."""

    def __init__(self, access_key_id: str = "AKIAFAKE", secret_access_key: str = "fake-secret"):
        self.fake = FakeLakeFS(access_key_id, secret_access_key)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.fake = self.fake  # type: ignore[attr-defined]
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeLakeFSServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
