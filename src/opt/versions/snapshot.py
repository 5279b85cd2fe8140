"""The raw data on disk as a version sees it: files, DVC-compatible hashes, record counts, the
git revision, and the `frozen` flag of the ingest stage that keeps a rollback in place."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import yaml

from opt.config import path, root_dir
from opt.data.manifest import MANIFEST, QUARANTINE
from opt.files import git_revision
from opt.stages import StageFailed

INGEST = "ingest"  # the dvc.yaml stage that writes data/raw
SOURCES_DIR = "data/sources"  # raw sources no stage regenerates (versioned by data.dvc)
FROZEN_NOTE = "  # set by `opt data rollback`; `opt data version` after a new ingest clears it"


class VersionError(StageFailed):
    """A data-version operation cannot be done (unknown ref, no server, not a git repo...)."""


def data_dirs(cfg) -> dict[str, Path]:
    """The folders a version holds, by key: `raw` (data/raw) and `sources` (data/sources)."""
    return {"raw": path(cfg, "raw"), "sources": root_dir(cfg) / SOURCES_DIR}


def list_files(folder: Path) -> dict[str, Path]:
    """Relative POSIX path -> file, sorted as DVC sorts a directory (by path components)."""
    if not folder.is_dir():
        return {}
    files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.relative_to(folder).parts)
    return {p.relative_to(folder).as_posix(): p for p in files}


def md5_file(file: Path) -> str:
    digest = hashlib.md5()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_dir_hash(folder: Path) -> str | None:
    """The `md5: <hex>.dir` DVC 3 records for a directory output (None: no such folder)."""
    if not folder.is_dir():
        return None
    entries = [{"md5": md5_file(p), "relpath": rel} for rel, p in list_files(folder).items()]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def count_lines(data: bytes) -> int:
    return sum(1 for line in data.splitlines() if line.strip())


def record_counts(raw_dir: Path) -> dict[str, int | None]:
    """Records kept (manifest.jsonl) and quarantined (quarantine.jsonl) in a raw folder."""
    counts: dict[str, int | None] = {}
    for key, name in (("kept", MANIFEST), ("quarantined", QUARANTINE)):
        file = raw_dir / name
        counts[key] = count_lines(file.read_bytes()) if file.is_file() else None
    return counts


def describe(cfg) -> dict:
    """What a new version of the current raw data records: hashes, sizes, counts, git revision."""
    dirs = data_dirs(cfg)
    raw = list_files(dirs["raw"])
    if not raw:
        raise VersionError(f"no raw data in {dirs['raw']}: run `opt ingest` first")
    return {
        "hash": dvc_dir_hash(dirs["raw"]),
        "sources_hash": dvc_dir_hash(dirs["sources"]),
        "nfiles": len(raw),
        "size": sum(p.stat().st_size for p in raw.values()),
        **record_counts(dirs["raw"]),
        "git_revision": git_revision(root_dir(cfg)),
    }


def git(root: Path, *args: str) -> str:
    """Output of `git -C root ARGS`; a failure is a VersionError with git's message."""
    out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise VersionError(f"git {' '.join(args)}: {out.stderr.strip() or 'failed'}")
    return out.stdout


def ingest_frozen(root: Path) -> bool:
    """Whether dvc.yaml's ingest stage is frozen (a rollback in effect)."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file():
        return False
    stage = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(INGEST) or {}
    return bool(stage.get("frozen"))


def set_ingest_frozen(root: Path, frozen: bool) -> bool:
    """Freeze or unfreeze the ingest stage by adding or removing one line of dvc.yaml (the rest
    of the file stays byte for byte, unlike `dvc freeze`, which reformats it). Returns whether
    it changed anything; a project without an ingest stage is left alone."""
    dvc_yaml = root / "dvc.yaml"
    if not dvc_yaml.is_file() or ingest_frozen(root) == frozen:
        return False
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    head = next((i for i, line in enumerate(lines) if re.match(rf"^ +{INGEST}:\s*(#.*)?$", line)), None)
    if head is None:
        return False
    indent = len(lines[head]) - len(lines[head].lstrip())
    body = [i for i in range(head + 1, len(lines)) if lines[i].strip()]
    end = next((i for i in body if len(lines[i]) - len(lines[i].lstrip()) <= indent), len(lines))
    if frozen:
        inner = next((len(lines[i]) - len(lines[i].lstrip()) for i in body if i < end), indent + 2)
        lines.insert(head + 1, " " * inner + "frozen: true" + FROZEN_NOTE + "\n")
    else:
        lines = [line for i, line in enumerate(lines) if not (head < i < end and line.strip().startswith("frozen:"))]
    stage = (yaml.safe_load("".join(lines)) or {}).get("stages", {}).get(INGEST) or {}
    if bool(stage.get("frozen")) != frozen:  # checked before writing: dvc.yaml is never left broken
        raise VersionError(f"could not {'freeze' if frozen else 'unfreeze'} stage {INGEST!r} in {dvc_yaml}")
    dvc_yaml.write_text("".join(lines))
    return True
