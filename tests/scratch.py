"""A scratch copy of the project (pipeline files, tiny params.yaml, git, its own DVC remote)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from opt.config import PROJECT_ROOT

COPIED = [
    "dvc.yaml",
    "data.dvc",
    ".dvcignore",
    ".gitignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "configs",
    "src",
    "bentofile.yaml",
]
# The venv's bin first, so `dvc` and the stages' `opt` are this project's, activated or not.
ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "DO_NOT_TRACK": "1",
    "GIT_AUTHOR_NAME": "opt-tests",
    "GIT_AUTHOR_EMAIL": "tests@opt.invalid",
    "GIT_COMMITTER_NAME": "opt-tests",
    "GIT_COMMITTER_EMAIL": "tests@opt.invalid",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}
TINY = [
    "data.n=24",
    "data.workers=1",
    "prepare.vocab_size=200",
    "model=tiny",
    "task.probe_steps=5",
    "trainer.max_steps=3",
    "trainer.batch_size=4",
    "image_tokenizer.steps=3",
    "image_tokenizer.batch_size=8",
    "task.steps=2",
    "task.batch_size=4",
]


def sh(*cmd, cwd, env=None) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env or ENV)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
    return out.stdout


def make_scratch_project(root: Path, overrides=TINY) -> Path:
    """Copy the pipeline into `root`, write params.yaml from `overrides`, `git init`, set a remote."""
    for name in COPIED:
        src, dst = PROJECT_ROOT / name, root / name
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    (root / "data" / "sources").mkdir(parents=True, exist_ok=True)
    sh("opt", "config", "-o", "params.yaml", *overrides, cwd=root)
    sh("git", "init", "-q", cwd=root)
    sh("git", "commit", "-q", "--allow-empty", "-m", "empty", cwd=root)
    sh("dvc", "remote", "modify", "local", "url", str(root.parent / f"{root.name}-remote"), cwd=root)
    return root
