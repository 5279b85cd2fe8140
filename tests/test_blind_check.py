"""A model trained on shuffled pairs cannot pass the blind check; one trained on true pairs can.

Classification is fine-tuned on the tiny pre-trained model twice: once on the train split's true
(image, labels) pairs, once with the label rows shuffled among the images. Both are scored on the
true pairs of that split against the task's own blind baseline, as `opt check` scores a run.
"""

from __future__ import annotations

import pytest
import torch

from opt.artifacts import load_pretrained
from opt.check import metric_checks
from opt.config import load_config
from opt.tasks import get_task
from opt.tasks.base import TaskContext, TaskObjective
from opt.tasks.run import task_trainer_config
from opt.train.trainer import Trainer

MARGIN = 0.1  # the reference's blind margin of mAP (opt.check.WIDER_BLIND_MARGINS)


def finetune_classification(overrides: list[str], shuffled: bool, run_dir) -> tuple[float, float]:
    """(mAP, blind mAP) on the true pairs of the train split after fine-tuning classification."""
    kept = [o for o in overrides if not o.startswith(("task.steps=", "task.lr="))]
    cfg = load_config(kept + ["task.name=classification", "task.steps=120", "task.lr=5e-3"])
    context = TaskContext(cfg)
    task = get_task("classification").fitted(context)
    model = load_pretrained(cfg)
    objective = TaskObjective(task, model, task.heads(model, context), context)
    true_labels = task.targets(context, "train")
    if shuffled:  # item i learns the labels of item i+1
        task._labels["train"] = true_labels.roll(1, dims=0)
    Trainer(objective, context.split("train"), task_trainer_config(cfg), run_dir).fit()
    task._labels["train"] = true_labels
    with torch.no_grad():
        scored = task.evaluate(model.eval(), objective.model.heads.eval(), "train", context)["mAP"]
    return scored, task.blind("train", context)["mAP"]


def passes_blind_check(scored: float, blind: float) -> bool:
    results = {"classification": {"train": {"mAP": scored, "blind": {"mAP": blind}}}}
    within, above_blind = metric_checks(
        "eval.json: classification.train.mAP",
        {"expected": scored, "tolerance": 1.0, "above_blind": MARGIN},
        {"eval.json": results},
        None,
    )
    return within.ok and above_blind.ok


@pytest.fixture(scope="module")
def trained(pretrained_synth, tmp_path_factory):
    _, overrides = pretrained_synth
    runs = tmp_path_factory.mktemp("pairs")
    return {
        "true": finetune_classification(overrides, False, runs / "true"),
        "shuffled": finetune_classification(overrides, True, runs / "shuffled"),
    }


def test_a_model_trained_on_true_pairs_passes_the_blind_check(trained):
    assert passes_blind_check(*trained["true"]), trained


def test_a_model_trained_on_shuffled_pairs_fails_the_blind_check(trained):
    assert not passes_blind_check(*trained["shuffled"]), trained
    assert trained["shuffled"][0] < trained["true"][0] - MARGIN, trained
