"""Training phase: prepare -> image tokenizer, probe -> pretrain -> finetune (each task) -> evaluate."""

from __future__ import annotations

from prefect import flow

from flows.artifacts import publish_evaluation
from flows.tasks import stage
from opt.tasks import TASK_NAMES


@flow(name="opt-training", log_prints=True)
def training_flow(overrides: list[str] | None = None, config_file: str | None = None) -> dict:
    overrides = list(overrides or [])
    results = {
        name: stage(name, overrides, config_file) for name in ("prepare", "image_tokenizer", "probe", "pretrain")
    }
    for task in TASK_NAMES:
        results[f"finetune@{task}"] = stage("finetune", [*overrides, f"task.name={task}"], config_file)
    results["evaluate"] = stage("evaluate", overrides, config_file)
    publish_evaluation(overrides, config_file)
    return results
