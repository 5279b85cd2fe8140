"""Shared fixtures: a tiny canonical raw dataset made by hand (no generator, no TTS); a headless Chromium."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from opt.config import load_config
from opt.data.manifest import MANIFEST, QUARANTINE, write_jsonl
from opt.data.media import SAMPLE_RATE, save_flac, save_png

COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
SPLIT_CYCLE = ["train", "train", "train", "train", "val", "test", "test_compositional"]


def write_handmade_raw(raw_dir, n: int = 14, seed: int = 0, image_size: int = 64) -> list[dict]:
    """Write `n` valid canonical records (one coloured square each, a tone as audio)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        name = list(COLORS)[i % len(COLORS)]
        image = Image.new("RGB", (image_size, image_size), "white")
        ImageDraw.Draw(image).rectangle([16, 16, 48, 48], fill=COLORS[name])
        save_png(image, raw_dir / "images" / f"hm_{i:04d}.png")
        seconds = 1.0 + 0.25 * (i % 4)
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        audio = 0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t) + 0.01 * rng.standard_normal(t.size)
        save_flac(audio, raw_dir / "audio" / f"hm_{i:04d}_0.flac")
        caption = f"In this image we can see a {name} square in the center."
        records.append(
            {
                "dataset_id": "handmade",
                "image_id": f"hm_{i:04d}",
                "annotator_id": 0,
                "caption": caption,
                "timed_caption": [{"utterance": caption, "start_time": 0.0, "end_time": seconds}],
                "traces": [],
                "voice_recording": f"audio/hm_{i:04d}_0.flac",
                "image": f"images/hm_{i:04d}.png",
                "split": SPLIT_CYCLE[i % len(SPLIT_CYCLE)],
                "audio_seconds": seconds,
                "objects": [{"shape": "square", "color": name, "size": "large", "position": [1, 1]}],
                "relations": [],
            }
        )
    write_jsonl(raw_dir / MANIFEST, records)
    write_jsonl(raw_dir / QUARANTINE, [])
    return records


@pytest.fixture
def tiny_cfg(tmp_path):
    """A config whose paths.root is a fresh scratch folder, tiny sizes everywhere."""
    return load_config([f"paths.root={tmp_path}", "data.n=24", "prepare.vocab_size=200", "prepare.shard_size=5"])


@pytest.fixture
def handmade_raw(tiny_cfg, tmp_path):
    """A config plus a hand-made raw dataset under its root; returns (cfg, records)."""
    records = write_handmade_raw(tmp_path / "data" / "raw")
    return tiny_cfg, records


@pytest.fixture(scope="session")
def prepared_synth(tmp_path_factory):
    """Built-in data, ingested and prepared once per test session: (root, overrides)."""
    from opt.stages import run_stage

    root = tmp_path_factory.mktemp("synth")
    overrides = [f"paths.root={root}", "data.n=60", "data.seed=5", "prepare.vocab_size=300", "model=tiny"]
    run_stage("ingest", overrides)
    run_stage("prepare", overrides)
    return root, overrides


@pytest.fixture(scope="session")
def pretrained_synth(tmp_path_factory):
    """A tiny OPT pre-trained for a few steps on built-in data, once per session: (root, overrides).

    For downstream-task tests; it has its own root, so other tests' runs never overwrite it."""
    from opt.stages import run_stage

    root = tmp_path_factory.mktemp("pretrained")
    overrides = [
        f"paths.root={root}",
        "data.n=60",
        "data.seed=6",
        "prepare.vocab_size=300",
        "model=tiny",
        "image_tokenizer.steps=30",
        "image_tokenizer.batch_size=16",
        "trainer.max_steps=4",
        "trainer.batch_size=8",
        "trainer.precision=fp32",
        "task.steps=3",
        "task.batch_size=8",
        "task.probe_steps=5",
    ]
    for stage in ("ingest", "prepare", "image_tokenizer", "pretrain"):
        run_stage(stage, overrides)
    return root, overrides


CHROMIUM = os.environ.get("OPT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    """The system's headless Chromium (Debian's `chromium`; `scripts/setup.sh` installs it where it can;
    OPT_CHROMIUM names another) driven by Playwright, which downloads nothing here. None: skipped."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("OPT_CHROMIUM"):  # named, so required
            pytest.fail(f"OPT_CHROMIUM={CHROMIUM} does not exist")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set OPT_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()
