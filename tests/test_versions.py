"""Data versions and rollbacks on both backends: every file restored byte for byte (sha256).

DVC: a scratch git + DVC project (tiny params, its own remote), ingest run as a Prefect flow
would (the stage function, outside `dvc repro`). lakeFS: the real `lakefs` SDK over a socket
against tests/lakefs_fake.py, or against a live server when LAKEFS_TEST_ENDPOINT (with
LAKEFS_TEST_ACCESS_KEY_ID, LAKEFS_TEST_SECRET_ACCESS_KEY) is set.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from lakefs_fake import FakeLakeFSServer
from scratch import ENV, TINY, make_scratch_project, sh

from opt.cli import show_config
from opt.config import PROJECT_ROOT, load_config
from opt.data.ingest import ingest
from opt.files import file_hashes
from opt.versions import VersionError, rollback, tag, version, versions
from opt.versions.snapshot import ingest_frozen, set_ingest_frozen


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under data/raw and data/sources, by path."""
    return {
        f"{folder}/{name}": digest
        for folder in ("data/raw", "data/sources")
        for name, digest in file_hashes(root / folder).items()
    }


def opt_fails(*args, cwd, env=None) -> str:
    """Run `opt ARGS` expecting exit status 1 and a one-line error; returns stderr."""
    out = subprocess.run(
        [sys.executable, "-m", "opt.cli", *args], cwd=cwd, capture_output=True, text=True, env=env or ENV
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    return out.stderr


def test_freeze_adds_one_line_and_unfreeze_restores_dvc_yaml(tmp_path):
    original = (PROJECT_ROOT / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(original)
    assert set_ingest_frozen(tmp_path, True) and ingest_frozen(tmp_path)
    assert len((tmp_path / "dvc.yaml").read_text().splitlines()) == len(original.splitlines()) + 1
    assert not set_ingest_frozen(tmp_path, True)
    assert set_ingest_frozen(tmp_path, False) and not ingest_frozen(tmp_path)
    assert (tmp_path / "dvc.yaml").read_text() == original


# ---------------------------------------------------------------- DVC


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    """A scratch git + DVC copy of the project: tiny params.yaml, its own DVC remote."""
    return make_scratch_project(tmp_path_factory.mktemp("versions") / "project")


def ingest_and_version(root: Path, overrides: list[str], message: str, extra: dict | None = None) -> dict:
    """Ingest outside `dvc repro` (as a Prefect flow does), add `extra` files, record the
    version and commit it to git as a user would."""
    show_config(overrides, str(root / "params.yaml"))
    cfg = load_config([*overrides, f"paths.root={root}"])
    ingest(cfg)
    for name, text in (extra or {}).items():
        (root / name).write_text(text)
    result = version(cfg)
    sh("git", "add", "-A", cwd=root)
    sh("git", "commit", "-q", "-m", message, cwd=root)
    return result


def test_dvc_rollback_restores_every_file_and_keeps_it_through_repro(dvc_project):
    root = dvc_project
    cfg = load_config([f"paths.root={root}"])
    first = ingest_and_version(root, TINY, "v1")
    v1 = snapshot(root)
    second = ingest_and_version(
        root,
        [*TINY, "data.n=20", "data.seed=1"],
        "v2",
        {"data/raw/notes.txt": "not in v1\n", "data/sources/annotations.jsonl": "{}\n"},
    )
    v2 = snapshot(root)
    assert first["changed"] and first["pushed"] and first["kept"] == 24 and v1 != v2
    assert second["recorded"] == ["dvc.lock", "data.dvc"]

    rows = versions(cfg)
    assert [r["message"] for r in rows] == ["v2", "v1"]
    assert [r["kept"] for r in rows] == [20, 24] and rows[1]["hash"] == first["hash"]

    result = rollback(cfg, to="HEAD~1")
    assert snapshot(root) == v1 and result["hash"] == first["hash"] and ingest_frozen(root)
    assert sh("git", "diff", "--numstat", "dvc.yaml", cwd=root).split() == ["1", "0", "dvc.yaml"]  # one line added
    status = sh("dvc", "status", cwd=root)
    assert "validate:" in status and "modified:           data/raw" in status
    assert "Running stage" not in sh("dvc", "repro", "ingest", cwd=root)  # though params.yaml says n=20
    assert snapshot(root) == v1
    dry = sh("dvc", "repro", "--dry", "validate", cwd=root)
    assert "Running stage 'validate'" in dry and "Running stage 'ingest'" not in dry
    assert version(cfg)["changed"] is False and ingest_frozen(root)  # nothing new: stays rolled back

    shutil.rmtree(root / ".dvc/cache")  # the newer version comes back from the DVC remote
    rollback(cfg, to="HEAD")
    assert snapshot(root) == v2
    ingest(load_config([*TINY, "data.n=16", f"paths.root={root}"]))  # a new ingest outside dvc (Prefect)
    assert version(cfg)["changed"] and not ingest_frozen(root)  # recorded: ingesting resumes


def test_dvc_errors_are_clear(dvc_project, tmp_path):
    cfg = load_config([f"paths.root={dvc_project}"])
    with pytest.raises(VersionError, match="unknown ref 'no-such-rev'"):
        rollback(cfg, to="no-such-rev")
    with pytest.raises(VersionError, match="git tag"):
        tag(cfg, "release-1")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(VersionError, match="not a git repository"):
        rollback(load_config([f"paths.root={tmp_path}"]), to="HEAD")
    with pytest.raises(VersionError, match="not a DVC project"):
        versions(load_config([f"paths.root={tmp_path / 'nowhere'}"]))
    assert "unknown ref" in opt_fails("data", "rollback", "--to", "no-such-rev", cwd=dvc_project)


# ---------------------------------------------------------------- lakeFS


@pytest.fixture(scope="module")
def lakefs_server():
    """LAKECTL_* settings of a live lakeFS (LAKEFS_TEST_ENDPOINT) or of the in-process fake."""
    if os.environ.get("LAKEFS_TEST_ENDPOINT"):
        yield {
            "LAKECTL_SERVER_ENDPOINT_URL": os.environ["LAKEFS_TEST_ENDPOINT"],
            "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": os.environ["LAKEFS_TEST_ACCESS_KEY_ID"],
            "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": os.environ["LAKEFS_TEST_SECRET_ACCESS_KEY"],
        }
        return
    with FakeLakeFSServer("AKIAOPTTESTS", "opt-tests-secret") as server:
        yield {
            "LAKECTL_SERVER_ENDPOINT_URL": server.endpoint,
            "LAKECTL_CREDENTIALS_ACCESS_KEY_ID": "AKIAOPTTESTS",
            "LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY": "opt-tests-secret",
        }


@pytest.fixture
def lakefs_cfg(lakefs_server, tmp_path, monkeypatch):
    """A config on a fresh lakeFS repository (deleted afterwards) with its root in tmp_path."""
    for key, value in lakefs_server.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LAKECTL_CONFIG_FILE", str(tmp_path / "no-lakectl.yaml"))
    name = f"opt-test-{uuid.uuid4().hex[:10]}"
    namespace = os.environ.get("LAKEFS_TEST_STORAGE_NAMESPACE", "local://opt-tests").rstrip("/") + f"/{name}"
    cfg = load_config(
        [
            "versioning.backend=lakefs",
            f"versioning.lakefs.repository={name}",
            f"versioning.lakefs.storage_namespace={namespace}",
            f"paths.root={tmp_path}",
        ]
    )
    import lakefs

    client = lakefs.Client()  # made now: a test may break the settings
    yield cfg
    lakefs.Repository(name, client=client).delete()


def write_raw(root: Path, kept: int, seed: int) -> None:
    """A small raw dataset: manifest and quarantine lines, binary media, one source file."""
    raw = root / "data/raw"
    shutil.rmtree(raw, ignore_errors=True)
    for folder in ("images", "audio"):
        (raw / folder).mkdir(parents=True)
    (raw / "manifest.jsonl").write_text("".join(f'{{"image_id": "{seed}-{i}"}}\n' for i in range(kept)))
    (raw / "quarantine.jsonl").write_text('{"reason": "empty caption"}\n' * seed)
    for i in range(kept):
        (raw / f"images/{seed}-{i}.png").write_bytes(hashlib.sha256(f"{seed}{i}".encode()).digest() * 50)
        (raw / f"audio/{i}.flac").write_bytes(os.urandom(300 + i))
    (root / "data/sources").mkdir(parents=True, exist_ok=True)
    (root / "data/sources/annotations.jsonl").write_text(f"source {seed}\n")


def test_lakefs_rollback_restores_every_file_byte_for_byte(lakefs_cfg):
    root = Path(lakefs_cfg.paths.root)
    write_raw(root, kept=3, seed=1)
    first = version(lakefs_cfg)
    v1 = snapshot(root)
    write_raw(root, kept=2, seed=2)  # files changed, added and removed
    second = version(lakefs_cfg)
    v2 = snapshot(root)
    assert first["changed"] and second["changed"] and v1 != v2

    rows = versions(lakefs_cfg)
    assert [r["id"] for r in rows] == [second["id"], first["id"]]
    assert [(r["kept"], r["quarantined"]) for r in rows] == [(2, 2), (3, 1)]
    assert rows[1]["hash"] == first["hash"] and rows[1]["git_revision"] == first["git_revision"]

    result = rollback(lakefs_cfg, to=first["id"][:12])  # the short id `opt data versions` prints
    assert snapshot(root) == v1 and result["reverted"] == [second["id"]]
    tag(lakefs_cfg, "release-1", first["id"])
    rollback(lakefs_cfg, to=second["id"])  # forward again: the revert is reverted
    assert snapshot(root) == v2
    rollback(lakefs_cfg, to="release-1")
    assert snapshot(root) == v1
    with pytest.raises(VersionError, match="409 tag already exists"):
        tag(lakefs_cfg, "release-1")


def test_lakefs_same_data_is_no_new_version(lakefs_cfg):
    write_raw(Path(lakefs_cfg.paths.root), kept=2, seed=3)
    first, again = version(lakefs_cfg), version(lakefs_cfg)
    assert again["changed"] is False and again["id"] == first["id"]
    assert len(versions(lakefs_cfg)) == 1


def test_lakefs_errors_are_lakefs_errors(lakefs_cfg, monkeypatch):
    """404, 409 and 400 as lakeFS answers them, through the SDK and through opt."""
    import lakefs
    from lakefs.exceptions import BadRequestException, ConflictException, NotFoundException

    root = Path(lakefs_cfg.paths.root)
    write_raw(root, kept=1, seed=4)
    version(lakefs_cfg)
    repo = lakefs.Repository(lakefs_cfg.versioning.lakefs.repository, client=lakefs.Client())
    with pytest.raises(ConflictException):
        repo.branch("main").create("main")
    with pytest.raises(BadRequestException, match="no changes"):
        repo.branch("main").commit("nothing to commit")
    with pytest.raises(NotFoundException):
        repo.ref("no-such-ref").get_commit()
    with pytest.raises(VersionError, match="unknown ref 'no-such-ref'"):
        rollback(lakefs_cfg, to="no-such-ref")
    monkeypatch.setenv("LAKECTL_CREDENTIALS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(VersionError, match="401"):
        versions(lakefs_cfg)
    monkeypatch.delenv("LAKECTL_SERVER_ENDPOINT_URL")
    with pytest.raises(VersionError, match="no lakeFS endpoint configured"):
        versions(lakefs_cfg)


def test_lakefs_cli(lakefs_cfg, lakefs_server):
    root = Path(lakefs_cfg.paths.root)
    write_raw(root, kept=2, seed=5)
    conf = lakefs_cfg.versioning.lakefs
    args = [
        "versioning.backend=lakefs",
        f"versioning.lakefs.repository={conf.repository}",
        f"versioning.lakefs.storage_namespace={conf.storage_namespace}",
        f"paths.root={root}",
    ]
    env = {**ENV, **lakefs_server, "LAKECTL_CONFIG_FILE": str(root / "no-lakectl.yaml")}
    opt = [sys.executable, "-m", "opt.cli", "data"]
    sh(*opt, "version", *args, cwd=root, env=env)
    listed = sh(*opt, "versions", *args, cwd=root, env=env)
    assert listed.splitlines()[0].split() == ["id", "date", "kept", "quarantined", "hash", "git_revision", "message"]
    assert "data version: 2 records" in listed
    assert "unknown ref" in opt_fails("data", "rollback", "--to", "no-such-ref", *args, cwd=root, env=env)
    env.pop("LAKECTL_SERVER_ENDPOINT_URL")
    assert "no lakeFS endpoint" in opt_fails("data", "versions", *args, cwd=root, env=env)
