"""DVC backend: a data version is a git revision whose dvc.lock (the ingest stage's `data/raw`
hash) or data.dvc (`data/sources`) changed; the content lives in the DVC cache and remote.

`version` records the current data in dvc.lock/data.dvc and the cache (and pushes it) but never
commits to git. `rollback` writes REF's ingest entry and data.dvc back, checks the data out of
the cache (fetching from the remote when missing), and freezes the ingest stage: `dvc repro`
then keeps the rolled-back data and reruns validate, prepare and everything after them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from opt.config import root_dir
from opt.data.manifest import MANIFEST, QUARANTINE
from opt.files import git_revision
from opt.versions.snapshot import (
    INGEST,
    VersionError,
    count_lines,
    data_dirs,
    describe,
    dvc_dir_hash,
    git,
    ingest_frozen,
    set_ingest_frozen,
)

LOCK, SOURCES_DVC = "dvc.lock", "data.dvc"
EMPTY_DIR = "d751713988987e9331980363e24189ce.dir"  # DVC's hash of an empty directory


def project(cfg) -> Path:
    root = root_dir(cfg)
    if not ((root / "dvc.yaml").is_file() and (root / ".dvc").is_dir()):
        raise VersionError(f"{root} is not a DVC project (no dvc.yaml and .dvc/); set paths.root")
    return root


def dvc(root: Path, *args: str) -> str:
    """Run `dvc ARGS` in the project (its own process: DVC resolves paths against the cwd)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1"}
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        lines = out.stderr.splitlines()
        first = next((i for i, line in enumerate(lines) if line.startswith("ERROR")), max(len(lines) - 3, 0))
        raise VersionError(f"dvc {' '.join(args)}: {' '.join(lines[first : first + 3]).strip() or 'failed'}")
    return out.stdout


def push(root: Path) -> int | None:
    """Push ingest's output and data/sources to the default remote; None when none is set."""
    try:
        out = dvc(root, "push", INGEST, SOURCES_DVC)
    except VersionError as e:
        if "no remote specified" in str(e):
            return None
        raise
    match = re.search(r"(\d+) files? pushed", out)
    return int(match[1]) if match else 0


def raw_entry(lock: dict | None, raw: str) -> dict | None:
    """The ingest stage's `data/raw` out (md5, size, nfiles) in a parsed dvc.lock."""
    outs = ((lock or {}).get("stages", {}).get(INGEST) or {}).get("outs", [])
    return next((out for out in outs if out.get("path") == raw), None)


def sources_hash(dvc_file: dict | None) -> str | None:
    outs = (dvc_file or {}).get("outs") or [{}]
    return outs[0].get("md5")


def read_yaml(text: str | None) -> dict | None:
    return yaml.safe_load(text) if text else None


def file_at(root: Path, rev: str, name: str) -> str | None:
    """A file's text at a git revision (None where it did not exist)."""
    try:
        return git(root, "show", f"{rev}:./{name}")
    except VersionError:
        return None


def workspace_text(root: Path, name: str) -> str | None:
    file = root / name
    return file.read_text() if file.is_file() else None


def version(cfg) -> dict:
    """Record data/raw (and data/sources) in dvc.lock, data.dvc and the DVC cache; push them."""
    root, dirs = project(cfg), data_dirs(cfg)
    info = describe(cfg)
    recorded_raw = raw_entry(read_yaml(workspace_text(root, LOCK)), cfg.paths.raw)
    raw_changed = (recorded_raw or {}).get("md5") != info["hash"]
    sources_changed = (
        dirs["sources"].is_dir() and sources_hash(read_yaml(workspace_text(root, SOURCES_DVC))) != info["sources_hash"]
    )
    if raw_changed:  # new data from an ingest run outside `dvc repro`: ingesting has resumed
        set_ingest_frozen(root, False)
        dvc(root, "commit", "--force", INGEST)
    if sources_changed:
        dvc(root, "commit", "--force", SOURCES_DVC)
    pushed = push(root) if cfg.versioning.push else None
    recorded = [name for name, changed in ((LOCK, raw_changed), (SOURCES_DVC, sources_changed)) if changed]
    frozen = ingest_frozen(root)
    return {
        "backend": "dvc",
        "id": info["hash"],
        "changed": bool(recorded),
        "recorded": recorded,
        "pushed": pushed,
        "frozen": frozen,
        **info,
        "next": version_advice(recorded, frozen),
    }


def version_advice(recorded: list[str], frozen: bool) -> str:
    if recorded:
        return f"commit to git to name this version: git add {' '.join(recorded)} && git commit"
    if frozen:
        return (
            "data/raw is a rolled-back version: ingest stays frozen until the next ingest is "
            "versioned (or `dvc unfreeze ingest`)"
        )
    return "data/raw is already recorded in dvc.lock"


def state(lock_text: str | None, sources_text: str | None, raw: str) -> tuple[dict | None, str | None]:
    return raw_entry(read_yaml(lock_text), raw), sources_hash(read_yaml(sources_text))


def versions(cfg) -> list[dict]:
    """Versions, newest first: git revisions where data/raw or data/sources changed (plus the
    workspace when it holds a version not committed to git yet)."""
    root = project(cfg)
    log = git(root, "log", "--format=%H%x1f%cI%x1f%s", "--", LOCK, SOURCES_DVC).splitlines()
    rows, previous = [], None
    for line in reversed(log):
        rev, date, message = line.split("\x1f", 2)
        raw, sources = state(file_at(root, rev, LOCK), file_at(root, rev, SOURCES_DVC), cfg.paths.raw)
        if raw and (raw.get("md5"), sources) != previous:
            rows.append(row(rev[:12], date, raw, sources, rev, message))
            previous = (raw.get("md5"), sources)
    raw, sources = state(workspace_text(root, LOCK), workspace_text(root, SOURCES_DVC), cfg.paths.raw)
    if raw and (raw.get("md5"), sources) != previous:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        rows.append(row("workspace", now, raw, sources, None, "recorded in dvc.lock, not committed to git"))
    cache = Path(dvc(root, "cache", "dir").strip())
    for r in rows:
        r.update(counts_in_cache(cache, r["hash"]))
    return rows[::-1]


def row(id_: str, date: str, raw: dict, sources: str | None, rev: str | None, message: str) -> dict:
    return {
        "id": id_,
        "date": date,
        "kept": None,
        "quarantined": None,
        "hash": raw.get("md5"),
        "sources_hash": sources,
        "nfiles": raw.get("nfiles"),
        "git_revision": rev,
        "message": message,
    }


def counts_in_cache(cache: Path, dir_hash: str) -> dict:
    """Record counts of a data/raw version read from the DVC cache (None where not cached)."""
    counts = {"kept": None, "quarantined": None}
    where = lambda md5: cache / "files" / "md5" / md5[:2] / md5[2:]  # noqa: E731  (DVC 3's layout)
    try:
        entries = {e["relpath"]: e["md5"] for e in json.loads(where(dir_hash).read_text())}
        for key, name in (("kept", MANIFEST), ("quarantined", QUARANTINE)):
            if name in entries:
                counts[key] = count_lines(where(entries[name]).read_bytes())
    except (OSError, ValueError, TypeError, KeyError):
        pass
    return counts


def resolve(root: Path, ref: str) -> str:
    try:
        return git(root, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").strip()
    except VersionError:
        if git_revision(root) is None and not (root / ".git").exists():
            raise VersionError(f"{root} is not a git repository: DVC data versions are git revisions") from None
        raise VersionError(f"unknown ref {ref!r}: not a git revision (see `opt data versions`)") from None


def rollback(cfg, to: str) -> dict:
    """Restore data/raw and data/sources exactly as recorded at git revision `to`; freeze ingest."""
    root = project(cfg)
    rev = resolve(root, to)
    lock_text, sources_text = file_at(root, rev, LOCK), file_at(root, rev, SOURCES_DVC)
    if raw_entry(read_yaml(lock_text), cfg.paths.raw) is None:
        raise VersionError(f"{to!r} ({rev[:12]}) records no {cfg.paths.raw} in {LOCK}: not a data version")
    entry = read_yaml(lock_text)["stages"][INGEST]
    backup = {name: workspace_text(root, name) for name in (LOCK, SOURCES_DVC)}
    try:
        restore(cfg, root, entry, sources_text)
    except VersionError:  # e.g. not in the cache nor the remote: dvc.lock and data.dvc as they were
        for name, text in backup.items():
            if text is not None:
                (root / name).write_text(text)
        raise
    return finish_rollback(cfg, root, to, rev, entry)


def restore(cfg, root: Path, entry: dict, sources_text: str | None) -> None:
    """Write the ingest entry into dvc.lock and data.dvc's text, then check both out."""
    from dvc.utils.serialize import dumps_yaml

    lock = read_yaml(workspace_text(root, LOCK)) or {"schema": "2.0", "stages": {}}
    lock.setdefault("stages", {})[INGEST] = entry
    (root / LOCK).write_text(dumps_yaml(lock))  # DVC's own YAML style
    sources = sources_hash(read_yaml(sources_text))
    if sources_text:
        (root / SOURCES_DVC).write_text(sources_text)
    checkout(root, [INGEST, SOURCES_DVC] if sources and sources != EMPTY_DIR else [INGEST])
    if sources == EMPTY_DIR:  # DVC keeps no cache object for an empty folder
        shutil.rmtree(data_dirs(cfg)["sources"], ignore_errors=True)
        data_dirs(cfg)["sources"].mkdir(parents=True)


def checkout(root: Path, names: list[str]) -> None:
    """Check targets out of the cache exactly (extra files removed), fetching missing objects."""
    try:
        dvc(root, "checkout", "--force", *names)
    except VersionError:
        dvc(root, "fetch", *names)  # not in the cache: from the default remote
        dvc(root, "checkout", "--force", *names)


def finish_rollback(cfg, root: Path, to: str, rev: str, entry: dict) -> dict:
    """Check the restored data against the recorded hash, then freeze the ingest stage."""
    want = raw_entry({"stages": {INGEST: entry}}, cfg.paths.raw)["md5"]
    got = dvc_dir_hash(data_dirs(cfg)["raw"])
    if got != want:
        raise VersionError(f"restored {cfg.paths.raw} hashes to {got}, but {to!r} recorded {want}")
    set_ingest_frozen(root, True)
    return {
        **describe(cfg),
        "backend": "dvc",
        "to": to,
        "git_revision": rev,
        "hash": want,
        "frozen": True,
        "next": (
            "`dvc repro` keeps this data (ingest is frozen) and reruns the stages after it; "
            "commit dvc.yaml dvc.lock data.dvc to record the rollback"
        ),
    }
