"""Versions of the raw data (data/raw plus data/sources): one interface, two backends.

`versioning.backend=dvc` (default): versions are git revisions whose dvc.lock or data.dvc
changed, their content in the DVC cache and remote. `versioning.backend=lakefs`: merge commits
on a lakeFS branch, one ingest branch each. Every function takes the typed config and returns
JSON-able data, so the CLI (`opt data ...`), Prefect (`run_stage("version")`) and tests share it.
After `rollback`, the ingest stage of dvc.yaml is frozen: `dvc repro` keeps the restored data and
reruns the stages after it; the next `version` of newly ingested data unfreezes it.
"""

from __future__ import annotations

from importlib import import_module

from opt.versions.snapshot import VersionError

BACKENDS = {"dvc": "opt.versions.dvc_backend", "lakefs": "opt.versions.lakefs_backend"}
__all__ = ["VersionError", "version", "versions", "rollback", "tag"]


def backend(cfg):
    name = cfg.versioning.backend
    if name not in BACKENDS:
        raise VersionError(f"versioning.backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    return import_module(BACKENDS[name])


def version(cfg) -> dict:
    """Record the current raw data as a version; returns its id, hashes and record counts.
    `versioning.backend=none` (a scratch run outside any DVC project) records nothing, saying so."""
    if cfg.versioning.backend == "none":
        print("version: versioning.backend=none: the raw data is not recorded as a version")
        return {"backend": "none", "recorded": False}
    return backend(cfg).version(cfg)


def versions(cfg) -> list[dict]:
    """Dataset versions, newest first: id, date, kept/quarantined, hash, git_revision, message."""
    return backend(cfg).versions(cfg)


def rollback(cfg, to: str) -> dict:
    """Restore the raw data of version `to` exactly and leave the stages after ingest stale."""
    return backend(cfg).rollback(cfg, to)


def tag(cfg, name: str, ref: str | None = None) -> dict:
    """Name a version for a release (lakeFS tags; with DVC, tag the git revision instead)."""
    if cfg.versioning.backend == "dvc":
        raise VersionError(f"with DVC a version is a git revision: tag it with `git tag {name} {ref or 'HEAD'}`")
    return backend(cfg).tag(cfg, name, ref)
