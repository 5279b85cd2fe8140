"""lakeFS's data model for tests/lakefs_fake.py: repositories of commits (parents, metadata, a
tree of objects each), branches with a staging area, tags, ref resolution (`~N`), merge base,
three-way merge, and lakeFS's pagination of listings."""

from __future__ import annotations

import hashlib
import json
import time


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def page(results: list, after: str | None, amount: int, key) -> dict:
    """lakeFS pagination: items after `after` (by key), at most `amount` of them."""
    if after:
        results = [r for r in results if key(r) > after]
    chunk = results[:amount]
    more = len(results) > amount
    return {
        "pagination": {
            "has_more": more,
            "next_offset": key(chunk[-1]) if more else "",
            "results": len(chunk),
            "max_per_page": amount,
        },
        "results": chunk,
    }


def diff_trees(left: dict, right: dict) -> list[dict]:
    """Changes from `left` to `right` as lakeFS Diff entries, sorted by path."""
    out = []
    for path in sorted(set(left) | set(right)):
        a, b = left.get(path), right.get(path)
        if a is None or b is None or a["checksum"] != b["checksum"]:
            kind = "added" if a is None else "removed" if b is None else "changed"
            out.append({"type": kind, "path": path, "path_type": "object", "size_bytes": (b or a)["size_bytes"]})
    return out


class Repo:
    def __init__(self, name: str, namespace: str, branch: str):
        self.name, self.namespace, self.default_branch = name, namespace, branch
        self.created = int(time.time())
        self.commits: dict[str, dict] = {}
        self.trees: dict[str, dict] = {}
        self.tags: dict[str, str] = {}
        root = self.add_commit([], "Repository created", {}, {})
        self.branches = {branch: {"head": root, "staged": {}}}

    def add_commit(self, parents: list[str], message: str, metadata: dict, tree: dict) -> str:
        body = json.dumps([parents, message, metadata, sorted(tree), time.time_ns()])
        cid = hashlib.sha256(body.encode()).hexdigest()
        generation = 1 + max((self.commits[p]["generation"] for p in parents), default=0)
        self.commits[cid] = {
            "id": cid,
            "parents": parents,
            "committer": "opt-tests",
            "message": message,
            "creation_date": int(time.time()),
            "meta_range_id": cid[:32],
            "metadata": metadata,
            "generation": generation,
            "version": 1,
        }
        self.trees[cid] = dict(tree)
        return cid

    def resolve(self, ref: str) -> str:
        """A commit id from a branch, tag or commit id, with an optional `~N` suffix."""
        base, tilde, back = ref.partition("~")
        cid = (
            self.branches[base]["head"]
            if base in self.branches
            else self.tags.get(base) or (base if base in self.commits else None)
        )
        if cid is None:
            raise ApiError(404, f"{ref}: not found")
        for _ in range(int(back) if back.isdigit() else 1 if tilde else 0):
            if not self.commits[cid]["parents"]:
                raise ApiError(404, f"{ref}: not found")
            cid = self.commits[cid]["parents"][0]
        return cid

    def tree(self, ref: str) -> dict:
        """Objects at a ref; a branch includes its staged (uncommitted) changes."""
        tree = dict(self.trees[self.resolve(ref)])
        for path, entry in self.branches.get(ref, {"staged": {}})["staged"].items():
            if entry is None:
                tree.pop(path, None)
            else:
                tree[path] = entry
        return tree

    def branch(self, name: str) -> dict:
        if name not in self.branches:
            raise ApiError(404, "branch not found")
        return self.branches[name]

    def log(self, ref: str, first_parent: bool) -> list[dict]:
        seen, queue, out = set(), [self.resolve(ref)], []
        while queue:
            cid = queue.pop(0)
            if cid in seen:
                continue
            seen.add(cid)
            out.append(self.commits[cid])
            parents = self.commits[cid]["parents"]
            queue.extend(parents[:1] if first_parent else parents)
        return out if first_parent else sorted(out, key=lambda c: -c["generation"])

    def merge_base(self, a: str, b: str) -> str | None:
        ancestors = {c["id"] for c in self.log(a, False)}
        return next((c["id"] for c in self.log(b, False) if c["id"] in ancestors), None)


def three_way(base: dict, ours: dict, theirs: dict) -> dict:
    """Merge `theirs` into `ours` relative to `base`; a path both changed differently conflicts."""
    key = lambda tree, p: tree[p]["checksum"] if p in tree else None  # noqa: E731
    out = dict(ours)
    for path in set(base) | set(ours) | set(theirs):
        b, o, t = key(base, path), key(ours, path), key(theirs, path)
        if t == b or t == o:
            continue
        if o != b:
            raise ApiError(409, "conflict found")
        if t is None:
            out.pop(path)
        else:
            out[path] = theirs[path]
    return out
