"""Runs that repeat, as a user runs them: stages as separate processes.

Two pre-trainings of one config give byte-identical weights (fp32 and bf16); one killed with
SIGKILL after a checkpoint and started again ends with the uninterrupted run's weights; a run
that diverges stops with a message naming the step and the values, and leaves nothing
non-finite on disk, its last good checkpoint resumable.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from trainer_fixtures import in_memory_dataset, objective, trainer_config

from opt.train import checkpoint as ckpt
from opt.train.trainer import Trainer

RUN = [
    "trainer.batch_size=8",
    "trainer.checkpoint_every=10",
    "image_tokenizer.steps=20",
    "image_tokenizer.batch_size=16",
]


def opt(*args: str) -> list[str]:
    return [sys.executable, "-m", "opt.cli", *args]


@pytest.fixture(scope="module")
def tokenized(prepared_synth, tmp_path_factory):
    """A root of its own with prepared data and a trained image tokenizer: (root, overrides)."""
    source, overrides = prepared_synth
    root = tmp_path_factory.mktemp("repeatable")
    shutil.copytree(source / "data" / "prepared", root / "data" / "prepared")
    overrides = [o for o in overrides if not o.startswith("paths.root=")] + RUN
    done = subprocess.run(opt("image_tokenizer", f"paths.root={root}", *overrides), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, overrides


def run_in_copy(tokenized, name: str, *extra: str) -> Path:
    """`opt pretrain` in a fresh copy of the tokenized root; returns the copy."""
    source, overrides = tokenized
    root = source.parent / name
    shutil.copytree(source, root)
    done = subprocess.run(opt("pretrain", f"paths.root={root}", *overrides, *extra), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def losses(root: Path) -> list[dict]:
    """Per-step rows of the losses CSV without its timings."""
    with (root / "metrics" / "pretrain_losses.csv").open() as f:
        return [
            {k: v for k, v in row.items() if k not in ("samples_per_s", "data_fraction")} for row in csv.DictReader(f)
        ]


def model_bytes(root: Path) -> bytes:
    return (root / "models" / "pretrain" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_two_pretrainings_in_fresh_processes_give_identical_weights(tokenized, precision):
    steps = ("trainer.max_steps=20", f"trainer.precision={precision}")
    first, second = run_in_copy(tokenized, f"a_{precision}", *steps), run_in_copy(tokenized, f"b_{precision}", *steps)
    assert model_bytes(first) == model_bytes(second)
    assert losses(first) == losses(second)  # the same losses at every step
    other_seed = run_in_copy(tokenized, f"c_{precision}", *steps, "trainer.seed=1")
    assert model_bytes(other_seed) != model_bytes(first)  # the seed is what decides


def test_a_pretraining_killed_with_sigkill_and_restarted_ends_with_the_uninterrupted_weights(tokenized):
    steps = ("trainer.max_steps=60", "trainer.precision=fp32")
    whole = run_in_copy(tokenized, "whole", *steps)
    source, overrides = tokenized
    root = source.parent / "killed"
    shutil.copytree(source, root)
    command = opt("pretrain", f"paths.root={root}", *overrides, *steps)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = root / "checkpoints" / "pretrain" / "step-000010"
    deadline = time.monotonic() + 300
    while not first_checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (root / "models" / "pretrain" / "model.safetensors").exists()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert model_bytes(root) == model_bytes(whole)


def assert_nothing_non_finite(root: Path) -> None:
    for file in root.rglob("*.safetensors"):
        assert not ckpt.non_finite(load_file(str(file))), file


def test_a_diverging_pretraining_stops_with_the_step_and_values_and_saves_nothing_non_finite(tokenized):
    source, overrides = tokenized
    root = source.parent / "diverged"
    shutil.copytree(source, root)
    # an infinite learning rate: step 1 is finite, its update makes every weight non-finite
    done = subprocess.run(
        opt(
            "pretrain",
            f"paths.root={root}",
            *overrides,
            "trainer.max_steps=5",
            "trainer.lr=inf",
            "trainer.warmup_steps=0",
        ),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "FAILED: step 2: non-finite" in done.stderr and "mlm_loss=nan" in done.stderr, done.stderr[-2000:]
    assert not (root / "models" / "pretrain").exists() and not (root / "metrics" / "pretrain.json").exists()
    assert_nothing_non_finite(root)


class NaNAfter(torch.nn.Module):
    """The tiny pre-training objective whose mlm loss turns NaN from call `after` on."""

    def __init__(self, inner, after: int):
        super().__init__()
        self.inner, self.model, self.after, self.calls = inner, inner.model, after, 0

    def forward(self, batch, draw):
        losses = self.inner(batch, draw)
        self.calls += 1
        if self.calls > self.after:
            losses["mlm_loss"] = losses["mlm_loss"] * math.nan
            losses["loss"] = losses["loss"] + losses["mlm_loss"]
        return losses


def test_a_nan_loss_stops_before_its_step_and_the_last_checkpoint_resumes(tmp_path):
    tcfg = trainer_config(max_steps=6, checkpoint_every=2)
    broken = Trainer(NaNAfter(objective(seed=0), after=3), in_memory_dataset(), tcfg, tmp_path / "run")
    with pytest.raises(ckpt.NonFiniteError, match=r"step 4: non-finite .*mlm_loss=nan") as error:
        broken.fit()
    assert "step-000002" in str(error.value)  # names the last good checkpoint
    assert broken.step == 3  # the NaN step was never applied
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["step-000002"]
    assert all(torch.isfinite(p).all() for p in broken.objective.model.parameters())
    resumed = Trainer(objective(seed=0), in_memory_dataset(), tcfg, tmp_path / "run")
    assert resumed.fit()["step"] == 6
    log = (tmp_path / "run" / "losses.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in log] == [1, 2, 3, 4, 5, 6]  # resumed after step 2


def test_non_finite_weights_are_never_saved(tmp_path):
    weights = {"a": torch.ones(3), "b": torch.tensor([1.0, float("inf")]), "steps": torch.tensor([3])}
    with pytest.raises(ckpt.NonFiniteError, match="b"):
        ckpt.save_weights(weights, tmp_path / "model.safetensors")
    with pytest.raises(ckpt.NonFiniteError):
        ckpt.save_checkpoint(tmp_path / "run", 1, weights, {}, {})
    assert not list(tmp_path.rglob("*.safetensors"))
