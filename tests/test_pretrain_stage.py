"""`opt image_tokenizer` then `opt pretrain` on the built-in data, as a user runs them."""

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from opt.artifacts import training_split
from opt.config import load_config
from opt.train.floors import floor_table
from opt.train.pretrain import build_model


def opt(*args):
    return subprocess.run([sys.executable, "-m", "opt.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def pretrained(prepared_synth):
    root, overrides = prepared_synth
    tokenizer = opt("image_tokenizer", *overrides, "image_tokenizer.steps=150", "image_tokenizer.batch_size=16")
    assert tokenizer.returncode == 0, tokenizer.stderr[-3000:]
    steps = ("trainer.max_steps=20", "trainer.batch_size=8", "trainer.checkpoint_every=10")
    out = opt("pretrain", *overrides, *steps, "objectives.matching=1")  # every objective, matching too
    assert out.returncode == 0, out.stderr[-3000:]
    return root, overrides, out


def test_pretrain_tiny_writes_a_safetensors_checkpoint(pretrained):
    root, overrides, out = pretrained
    checkpoints = sorted((root / "checkpoints" / "pretrain").glob("step-*"))
    assert [c.name for c in checkpoints] == ["step-000010", "step-000020"]
    weights = load_file(str(root / "models" / "pretrain" / "model.safetensors"))
    build_model(load_config(overrides)).load_state_dict(weights)  # loads into a fresh model of that config
    metrics = json.loads((root / "metrics" / "pretrain.json").read_text())
    assert metrics["step"] == 20
    assert 0.0 <= metrics["zero_shot"]["text_to_image"]["R@1"] <= 1.0
    losses = (root / "metrics" / "pretrain_losses.csv").read_text().splitlines()
    assert len(losses) == 21 and "mlm_loss" in losses[0]


def test_pretraining_reports_each_loss_against_its_floor(pretrained):
    root, _, out = pretrained
    rows = {r["loss"]: r for r in json.loads((root / "metrics" / "pretrain_floors.json").read_text())}
    logged = (root / "metrics" / "pretrain_losses.csv").read_text().splitlines()[0].split(",")
    assert set(rows) == {name for name in logged if name.endswith("_loss")}  # every active objective
    assert rows["matching_loss"]["floor"] == pytest.approx(math.log(5))
    assert rows["contrastive_loss"]["floor"] == pytest.approx(math.log(8))  # trainer.batch_size=8
    assert all(r["floor"] > 0 and math.isfinite(r["first"]) for r in rows.values())
    assert "| matching_loss |" in (root / "reports" / "pretrain.md").read_text()
    assert "losses at their floor" in out.stdout


def test_a_flat_loss_is_reported_at_its_floor_and_a_falling_one_as_learned():
    floors = {"matching_loss": math.log(5), "mlm_loss": 4.0}
    rows = {r["loss"]: r for r in floor_table({"matching_loss": (1.61, 1.60), "mlm_loss": (5.0, 2.0)}, floors)}
    assert not rows["matching_loss"]["learned"] and rows["mlm_loss"]["learned"]


def test_image_tokenizer_reconstructs_better_than_a_constant(pretrained):
    root, overrides, _ = pretrained
    metrics = json.loads((root / "metrics" / "image_tokenizer.json").read_text())
    cfg = load_config(overrides)
    train, test = training_split(cfg, "train", with_codes=False), training_split(cfg, "test", with_codes=True)
    mean_train_image = torch.stack([train[i]["image"] for i in range(len(train))]).mean(dim=0)
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    constant_mse = float(((images - mean_train_image) ** 2).mean())
    assert metrics["test"]["reconstruction_mse"] < constant_mse
    assert 0.0 < metrics["train"]["codebook_used"] <= 1.0
    assert test[0]["codes"].shape == ((64 // 8) ** 2,)


def test_fused_share_counts_the_mam_floor_on_the_fused_part_and_refuses_length_buckets(tmp_path):
    from opt.train.floors import loss_floors
    from opt.train.pretrain import pretrain

    stats = dict.fromkeys(
        ("masked_token_entropy", "token_entropy", "code_entropy", "pixel_variance", "mel_variance"), 1.0
    ) | {"audio_patches": 30.0}
    wide, all_fused = load_config(["experiment=wide_contrastive"]), load_config(["objectives.fused_share=1"])
    narrow = loss_floors(stats, all_fused.objectives, 32)
    floors = loss_floors(stats, wide.objectives, wide.trainer.batch_size)
    assert floors["mam_contrastive_loss"] == narrow["mam_contrastive_loss"]  # MAM sees the fused 32
    assert floors["mam_contrastive_loss"] != loss_floors(stats, all_fused.objectives, 128)["mam_contrastive_loss"]
    assert floors["contrastive_loss"] == pytest.approx(math.log(128))  # contrastive the whole 128
    cfg = load_config(["experiment=wide_contrastive", "trainer.length_buckets=4", f"paths.root={tmp_path}"])
    with pytest.raises(ValueError, match="length_buckets"):
        pretrain(cfg)
