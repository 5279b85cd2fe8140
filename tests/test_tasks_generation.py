"""Generation tasks on the tiny pre-trained model: captioning, speech recognition, text-to-image.

Each is fine-tuned a few steps through the `finetune` stage, evaluated on test with the weights
`load_task_model` finds, and shown to lower its own loss on a repeated tiny batch.
"""
from __future__ import annotations

import math

import pytest
import torch

from opt.config import load_config
from opt.stages import run_stage
from opt.tasks import get_task
from opt.tasks.base import TaskContext, TaskObjective
from opt.tasks.run import finetuned_dir, load_pretrained, load_task_model
from opt.train.data import batches

EXPECTED = {
    "captioning": {"bleu4", "cider", "bleu4_image_audio", "cider_image_audio"},
    "speech_recognition": {"wer", "sentence_accuracy"},
    "text_to_image": {"frechet_distance", "attribute_accuracy", "exact_match", "probe_accuracy", "probe_exact_match"},
}


def check_ranges(name: str, metrics: dict) -> None:
    assert set(metrics) == EXPECTED[name]
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    for key, value in metrics.items():
        if key in ("wer", "frechet_distance", "cider", "cider_image_audio"):
            assert value >= 0
        else:
            assert 0 <= value <= 1, (key, value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_finetune_then_evaluate_writes_metrics_and_pictures(pretrained_synth, name):
    root, overrides = pretrained_synth
    overrides = overrides + [f"task={name}", "task.steps=3"]
    result = run_stage("finetune", overrides)
    assert result["step"] == 3 and set(result["val"]) == EXPECTED[name]
    cfg = load_config(overrides)
    assert (finetuned_dir(cfg, name) / "model.safetensors").exists()
    context, task = TaskContext(cfg), get_task(name)
    task_model = load_task_model(cfg, task, context)
    metrics = task.evaluate(task_model.opt, task_model.heads, "test", context)
    check_ranges(name, metrics)
    if name != "speech_recognition":
        assert (context.pictures_dir / f"{name}_test.png").stat().st_size > 0
    if name == "text_to_image":
        assert (root / "models" / "probe" / "probe.safetensors").exists()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_finetuning_lowers_the_task_loss_on_a_repeated_batch(pretrained_synth, name):
    _, overrides = pretrained_synth
    cfg = load_config(overrides + [f"task={name}"])
    context, task = TaskContext(cfg), get_task(name)
    model = load_pretrained(cfg)
    objective = TaskObjective(task, model, task.heads(model, context), context).train()
    batch = next(batches(context.split("train"), 4))
    optimiser = torch.optim.Adam(objective.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        out = objective(batch, None)
        assert f"{name}_loss" in out
        optimiser.zero_grad()
        out["loss"].backward()
        optimiser.step()
        losses.append(out[f"{name}_loss"].item())
    assert losses[-1] < losses[0]
