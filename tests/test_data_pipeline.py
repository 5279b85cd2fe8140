"""Issue 2's must-show, through the console script: ingest is byte-deterministic, then
validate and prepare succeed on the result; ingestion replaces data/raw whole."""

import os
import subprocess
import sys

import pytest

from opt.data.manifest import MANIFEST, read_manifest
from opt.files import file_hashes

N = 48


def opt(*args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "opt.cli", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("A")
    first = opt("ingest", "data.source=synth", f"data.n={N}", "data.seed=3", f"paths.root={root}")
    assert first.returncode == 0, first.stderr
    return root, first


def test_ingest_twice_gives_identical_bytes(ingested):
    root, first = ingested
    raw = root / "data" / "raw"
    digest = file_hashes(raw)
    assert f"kept {N}, quarantined 0" in first.stdout
    assert sum(name.endswith(".png") for name in digest) == N
    assert sum(name.endswith(".flac") for name in digest) == N
    again = opt("ingest", "data.source=synth", f"data.n={N}", "data.seed=3", f"paths.root={root}")
    assert again.returncode == 0, again.stderr
    assert file_hashes(raw) == digest
    assert len(read_manifest(raw)) == N


def test_another_seed_gives_other_data(ingested, tmp_path):
    root, _ = ingested
    other = opt("ingest", f"data.n={N}", "data.seed=4", f"paths.root={tmp_path}")
    assert other.returncode == 0, other.stderr
    assert (tmp_path / "data/raw" / MANIFEST).read_bytes() != (root / "data/raw" / MANIFEST).read_bytes()


def test_smaller_rerun_leaves_no_stale_media(tmp_path):
    assert opt("ingest", "data.n=6", f"paths.root={tmp_path}").returncode == 0
    assert opt("ingest", "data.n=3", f"paths.root={tmp_path}").returncode == 0
    raw = tmp_path / "data" / "raw"
    assert len(list((raw / "images").glob("*.png"))) == 3
    assert not (tmp_path / "data" / "raw.partial").exists()


def test_validate_then_prepare_succeed(ingested):
    root, _ = ingested
    validated = opt("validate", f"paths.root={root}")
    assert validated.returncode == 0, validated.stderr
    assert (root / "reports" / "validation.md").exists()
    prepared = opt("prepare", f"paths.root={root}", "prepare.shard_size=16")
    assert prepared.returncode == 0, prepared.stderr
    assert (root / "data" / "prepared" / "contact_sheet.png").exists()
    assert (root / "runs" / "prepare.yaml").exists()
