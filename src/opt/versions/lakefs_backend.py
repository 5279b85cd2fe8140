"""lakeFS backend, through the maintained `lakefs` SDK (server and credentials: LAKECTL_*).

A version is a merge commit on the main branch: each `version` creates a branch
`ingest-<UTC time>` from main, makes its `raw/` and `sources/` objects equal to data/raw and
data/sources (uploads changed files, deletes vanished ones), commits with metadata (record
counts, DVC hash of data/raw, git revision) and merges it into main. `rollback` reverts main's
commits after REF (newest first), so main equals REF again, and downloads REF's objects into
data/raw and data/sources exactly.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from opt.config import root_dir
from opt.data.ingest import swap_in
from opt.versions.snapshot import (
    VersionError,
    data_dirs,
    describe,
    dvc_dir_hash,
    list_files,
    md5_file,
    set_ingest_frozen,
)

KEYS = ("raw", "sources")  # object prefixes: raw/<file>, sources/<file>
METADATA = ("hash", "sources_hash", "nfiles", "size", "kept", "quarantined", "git_revision")


@contextmanager
def lakefs_errors(what: str):
    """lakeFS and connection errors as VersionError: status and lakeFS's message, no traceback."""
    from lakefs.exceptions import LakeFSException, NoAuthenticationFound, ServerException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except NoAuthenticationFound as e:
        raise VersionError(
            "no lakeFS credentials: set LAKECTL_CREDENTIALS_ACCESS_KEY_ID and "
            "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY (or ~/.lakectl.yaml)"
        ) from e
    except ServerException as e:
        message = e.body.get("message") if isinstance(e.body, dict) else None
        raise VersionError(f"lakeFS: {what}: {e.status_code} {message or e.reason}") from e
    except LakeFSException as e:
        raise VersionError(f"lakeFS: {what}: {e}") from e
    except HTTPError as e:
        raise VersionError(f"lakeFS: {what}: cannot reach the server: {e}") from e


def repository(cfg, create: bool = False):
    """The configured repository (created with its storage namespace when `create`)."""
    import lakefs

    with lakefs_errors("connect"):
        client = lakefs.Client()
    if not (os.environ.get("LAKECTL_SERVER_ENDPOINT_URL") or client.config.host):
        raise VersionError("no lakeFS endpoint configured: set LAKECTL_SERVER_ENDPOINT_URL (or ~/.lakectl.yaml)")
    conf = cfg.versioning.lakefs
    repo = lakefs.Repository(conf.repository, client=client)
    with lakefs_errors(f"repository {conf.repository!r}"):
        if create:
            repo.create(conf.storage_namespace, default_branch=conf.branch, exist_ok=True)
        else:
            _ = repo.properties  # 404 here: no such repository
    return repo


def version(cfg) -> dict:
    """Upload the raw data to a new ingest branch, commit with metadata, merge into main."""
    info = describe(cfg)
    repo = repository(cfg, create=True)
    main = cfg.versioning.lakefs.branch
    name = "ingest-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    with lakefs_errors(f"create branch {name!r} from {main!r}"):
        branch = repo.branch(name).create(main)
    with lakefs_errors(f"upload to {name!r}"):
        sync_up(branch, data_dirs(cfg))
        if not any(True for _ in branch.uncommitted(max_amount=1)):
            branch.delete()
            head = repo.branch(main).get_commit()
            return {
                "backend": "lakefs",
                "id": head.id,
                "changed": False,
                **info,
                "next": f"data/raw is already the head of {main!r}",
            }
    metadata = {key: str(info[key]) for key in METADATA if info[key] is not None}
    message = f"data version: {info['kept']} records, {info['hash']}"
    with lakefs_errors(f"commit {name!r} and merge it into {main!r}"):
        branch.commit(message, metadata=metadata)
        merged = branch.merge_into(main, message=message, metadata=metadata)
    set_ingest_frozen(root_dir(cfg), False)  # a new version: ingesting has resumed
    return {
        "backend": "lakefs",
        "id": merged,
        "branch": name,
        "changed": True,
        **info,
        "next": f"`opt data rollback --to {merged[:12]}` restores it",
    }


def sync_up(branch, dirs: dict[str, Path]) -> None:
    """Make the branch's raw/ and sources/ objects equal to the local folders."""
    for key in KEYS:
        remote = {o.path: o.checksum for o in branch.objects(prefix=f"{key}/")}
        local = {f"{key}/{rel}": file for rel, file in list_files(dirs[key]).items()}
        for path, file in local.items():
            if remote.get(path) != md5_file(file):
                branch.object(path).upload(file.read_bytes(), mode="wb", pre_sign=False)
        gone = sorted(set(remote) - set(local))
        for start in range(0, len(gone), 1000):  # lakeFS deletes at most 1000 paths per call
            branch.delete_objects(gone[start : start + 1000])


def versions(cfg) -> list[dict]:
    """Main's first-parent log, newest first (the repository's empty first commit left out)."""
    repo = repository(cfg)
    with lakefs_errors(f"log of {cfg.versioning.lakefs.branch!r}"):
        commits = [c for c in repo.ref(cfg.versioning.lakefs.branch).log(first_parent=True) if c.parents]
    return [row(c) for c in commits]


def row(commit) -> dict:
    meta = commit.metadata or {}
    as_int = lambda key: int(meta[key]) if meta.get(key, "").isdigit() else None  # noqa: E731
    date = datetime.fromtimestamp(commit.creation_date, UTC).isoformat(timespec="seconds")
    return {
        "id": commit.id,
        "date": date,
        "kept": as_int("kept"),
        "quarantined": as_int("quarantined"),
        "hash": meta.get("hash"),
        "sources_hash": meta.get("sources_hash"),
        "nfiles": as_int("nfiles"),
        "git_revision": meta.get("git_revision"),
        "message": commit.message,
    }


def tag(cfg, name: str, ref: str | None = None) -> dict:
    """Tag a version (default: main's head) for a release."""
    repo = repository(cfg)
    commit = find_commit(repo, cfg.versioning.lakefs.branch, ref or cfg.versioning.lakefs.branch)
    with lakefs_errors(f"tag {name!r} at {commit.id[:12]}"):
        repo.tag(name).create(commit.id)
    return {"backend": "lakefs", "tag": name, "id": commit.id}


def find_commit(repo, branch: str, ref: str):
    """A commit by ref (branch, tag, commit id) or by the id prefix `opt data versions` prints."""
    from lakefs.exceptions import NotFoundException

    with lakefs_errors(f"ref {ref!r}"):
        try:
            return repo.ref(ref).get_commit()
        except NotFoundException:
            matches = [c for c in repo.ref(branch).log(first_parent=True) if c.id.startswith(ref)]
    if len(matches) != 1:
        raise VersionError(f"unknown ref {ref!r} in lakeFS repository {repo.id!r} (see `opt data versions`)")
    return matches[0]


def rollback(cfg, to: str) -> dict:
    """Revert main back to `to`, then download `to`'s objects into the local folders exactly."""
    repo = repository(cfg)
    main = repo.branch(cfg.versioning.lakefs.branch)
    target = find_commit(repo, main.id, to)
    with lakefs_errors(f"revert {main.id!r} to {to!r}"):
        reverted = revert_to(main, target)
    with lakefs_errors(f"download {to!r}"):
        sync_down(repo.ref(target.id), data_dirs(cfg))
    got, want = dvc_dir_hash(data_dirs(cfg)["raw"]), (target.metadata or {}).get("hash")
    if want and got != want:
        raise VersionError(f"downloaded data/raw hashes to {got}, but {to!r} recorded {want}")
    set_ingest_frozen(root_dir(cfg), True)  # in a DVC project: `dvc repro` keeps this data
    return {
        **describe(cfg),
        "backend": "lakefs",
        "to": to,
        "id": target.id,
        "reverted": reverted,
        "next": "main equals this version again; the stages after ingest are stale",
    }


def revert_to(main, target) -> list[str]:
    """Revert main's first-parent commits after `target`, newest first; returns their ids."""
    commits = []
    for commit in main.log(first_parent=True):
        if commit.id == target.id:
            break
        commits.append(commit)
    else:
        raise VersionError(f"{target.id[:12]} is not a version on {main.id!r} (see `opt data versions`)")
    if not any(True for _ in main.diff(target.id, max_amount=1, type="two_dot")):  # lakeFS's default: three_dot
        return []
    for commit in commits:
        main.revert(commit.id, parent_number=1 if len(commit.parents) > 1 else 0)
    return [c.id for c in commits]


def sync_down(ref, dirs: dict[str, Path]) -> None:
    """Write the ref's raw/ and sources/ objects into fresh folders, then swap them in."""
    for key in KEYS:
        partial = dirs[key].with_name(dirs[key].name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for obj in ref.objects(prefix=f"{key}/"):
            out = partial / obj.path[len(key) + 1 :]
            out.parent.mkdir(parents=True, exist_ok=True)
            with ref.object(obj.path).reader(mode="rb", pre_sign=False) as reader:
                out.write_bytes(reader.read())
        swap_in(partial, dirs[key])
