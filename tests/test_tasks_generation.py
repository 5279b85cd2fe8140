"""Generation tasks on the tiny pre-trained model: captioning, speech recognition, text-to-image.

Each is fine-tuned a few steps through the `finetune` stage, evaluated on test with the weights
`load_task_model` finds, and shown to lower its own loss on a repeated tiny batch.
"""

from __future__ import annotations

import math

import pytest
import torch

from opt.artifacts import finetuned_dir, load_pretrained
from opt.config import load_config
from opt.data.splits import batches
from opt.model.masking import Draw
from opt.stages import run_stage
from opt.tasks import get_task
from opt.tasks.base import TaskContext, TaskObjective
from opt.tasks.run import load_task_model, task_steps

EXPECTED = {
    "captioning": {"bleu4", "cider", "bleu4_image_audio", "cider_image_audio"},
    "speech_recognition": {"wer", "sentence_accuracy"},
    "text_to_image": {
        "frechet_distance",
        "attribute_accuracy",
        "exact_match",
        "probe_accuracy",
        "probe_exact_match",
        "reconstruction_accuracy",
        *(f"{m}/{f}" for m in ("attribute_accuracy", "reconstruction_accuracy") for f in ("color", "shape", "size")),
    },
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
    cfg = load_config(overrides)
    assert result["step"] == task_steps(cfg.task) == 3 * int(cfg.task.step_factors.get(name, 1))
    assert set(result["val"]) == EXPECTED[name]
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
    context = TaskContext(cfg)
    task = get_task(name).fitted(context)
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


@pytest.mark.parametrize("hidden_share", [0.0, 1.0])
def test_text_to_image_hides_the_configured_share_of_prompts(pretrained_synth, hidden_share):
    """With every prompt hidden the loss cannot depend on the text; with none hidden it does."""
    _, overrides = pretrained_synth
    cfg = load_config(overrides + ["task=text_to_image", f"task.null_text_prob={hidden_share}"])
    context, task = TaskContext(cfg), get_task("text_to_image")
    model = load_pretrained(cfg).eval()
    batch = next(batches(context.split("train"), 4))
    other = {**batch, "tokens": batch["tokens"].roll(1, dims=0), "token_count": batch["token_count"].roll(1, dims=0)}
    with torch.no_grad():
        losses = [
            task.losses(model, None, b, Draw(torch.Generator().manual_seed(0)), context)["loss"] for b in (batch, other)
        ]
    assert torch.allclose(losses[0], losses[1]) == (hidden_share == 1.0)
