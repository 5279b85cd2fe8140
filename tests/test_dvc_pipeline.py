"""`dvc repro` runs every stage of dvc.yaml in a scratch copy of the project on a tiny
configuration, and a second `dvc repro` changes nothing."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opt.config import CONFIG_DIR

PROJECT = CONFIG_DIR.parent
COPIED = ["dvc.yaml", "data.dvc", ".dvcignore", ".dvc/config", "configs", "src"]
# The venv's bin first, so `dvc` and the stages' `opt` are this project's, activated or not.
ENV = {**os.environ, "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


TINY = ["data.n=24", "prepare.vocab_size=200", "model=tiny", "task.probe_steps=5", "trainer.max_steps=3", "trainer.batch_size=4",
        "image_tokenizer.steps=3", "image_tokenizer.batch_size=8", "task.steps=2", "task.batch_size=4"]
STAGES = ("ingest", "validate", "prepare", "image_tokenizer", "pretrain", "finetune@retrieval",
          "finetune@text_to_image", "evaluate")


def sh(*cmd, cwd):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def scratch_project(tmp_path_factory):
    """A git repo holding the project's pipeline files, a tiny params.yaml, its own remote."""
    root = tmp_path_factory.mktemp("project")
    for name in COPIED:
        src, dst = PROJECT / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (root / "data" / "sources").mkdir(parents=True)
    sh("opt", "config", "-o", "params.yaml", *TINY, cwd=root)
    sh("git", "init", "-q", cwd=root)
    sh("dvc", "remote", "modify", "local", "url", str(root.parent / "remote"), cwd=root)
    return root


def test_repro_runs_every_stage_then_is_a_no_op(scratch_project):
    root = scratch_project
    first = sh("dvc", "repro", cwd=root)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first
    assert (root / "data/prepared/params.json").exists()
    assert (root / "models/pretrain/model.safetensors").exists()
    assert (root / "metrics/eval.json").exists()
    assert (root / "dvc.lock").exists()
    second = sh("dvc", "repro", cwd=root)
    assert "Running stage" not in second
    assert "up to date" in sh("dvc", "status", cwd=root)


def test_params_change_reruns_downstream(scratch_project):
    root = scratch_project
    sh("dvc", "repro", cwd=root)
    sh("opt", "config", "-o", "params.yaml", *TINY, "data.n=20", cwd=root)
    out = sh("dvc", "repro", cwd=root)
    assert "Running stage 'ingest'" in out and "Running stage 'prepare'" in out
