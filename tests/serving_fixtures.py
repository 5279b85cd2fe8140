"""A packaged tiny model (`opt package` into a scratch BentoML home) and a real `bentoml serve`.

`packaged_tiny` copies the session's pre-trained tiny run, fine-tunes retrieval until it knows
its train pairs (`task.steps=200` and `task.lr=1e-3`, scaled by retrieval's step and batch
factors as every fine-tuning is), writes a
metrics/eval.json, and runs `opt package` in a subprocess (BENTOML_HOME in tmp) with the train
split as the gallery, so a served query can be checked against its own image.
It is built once per session and shared by test_package.py, test_serving.py and test_demo.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from opt.config import CONFIG_DIR
from opt.serving.launch import start_server, stop_server  # noqa: F401  (re-exported for the tests)

PROJECT = CONFIG_DIR.parent
BIN = Path(sys.executable).parent
# Limits small enough that the bad-input tests stay small.
TEST_LIMITS = [
    "serve.limits.max_upload_bytes=300000",
    "serve.limits.max_audio_seconds=20",
    "serve.limits.max_text_chars=200",
    "serve.limits.max_top_k=20",
    "serve.limits.max_image_pixels=4000000",
]
GALLERY = ["serve.gallery_split=train"]
RETRIEVAL_FINETUNE = ["task.name=retrieval", "task.steps=200", "task.lr=1e-3"]
_PACKAGED: dict = {}


def opt_env(home: Path) -> dict:
    return {
        **os.environ,
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "True",
        "DO_NOT_TRACK": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def scratch_run(pretrained_root: Path, root: Path) -> None:
    """The pre-trained run's data and models in `root` (so other tests' runs stay untouched)."""
    for part in ("data/prepared", "models/pretrain", "models/image_tokenizer"):
        shutil.copytree(pretrained_root / part, root / part)


def package_tiny(pretrained, tmp_path_factory) -> dict:
    """{"root", "home", "env", "overrides", "result"} of a tiny run packaged once per session."""
    if "result" in _PACKAGED:
        return _PACKAGED
    from opt.stages import run_stage

    pretrained_root, pretrained_overrides = pretrained
    root, home = tmp_path_factory.mktemp("served"), tmp_path_factory.mktemp("bentoml_home")
    scratch_run(Path(pretrained_root), root)
    overrides = [o for o in pretrained_overrides if not o.startswith("paths.root=")] + [f"paths.root={root}"]
    retrieval = [o for o in overrides if not o.startswith(("task.steps=", "task.lr="))]
    run_stage("finetune", retrieval + RETRIEVAL_FINETUNE)
    (root / "metrics" / "eval.json").write_text(json.dumps({"retrieval": {"test": {"text_to_image/R@1": 0.25}}}))
    env = opt_env(home)
    out = subprocess.run(
        ["opt", "package", *overrides, *TEST_LIMITS, *GALLERY], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads((root / "metrics" / "package.json").read_text())
    _PACKAGED.update(root=root, home=home, env=env, overrides=overrides, result=result)
    return _PACKAGED


def image_bytes(mode: str = "RGB", fmt: str = "PNG", size: tuple[int, int] = (80, 60)) -> bytes:
    """A small picture (a coloured square on white) in any Pillow mode and format."""
    rgb = Image.new("RGB", size, "white")
    rgb.paste((200, 30, 30), (10, 10, 40, 40))
    out = io.BytesIO()
    (rgb.convert(mode) if mode != "RGB" else rgb).save(out, format=fmt)
    return out.getvalue()


def audio_bytes(
    fmt: str = "WAV",
    rate: int = 16000,
    seconds: float = 1.0,
    channels: int = 1,
    subtype: str | None = None,
    samples: np.ndarray | None = None,
) -> bytes:
    """A tone (or the given samples) encoded as WAV, OGG or FLAC at any rate and channel count."""
    if samples is None:
        t = np.arange(int(rate * seconds)) / rate
        samples = np.repeat((0.3 * np.sin(2 * np.pi * 220 * t))[:, None], channels, axis=1).astype(np.float32)
    out = io.BytesIO()
    sf.write(out, samples, rate, format=fmt, subtype=subtype)
    return out.getvalue()
