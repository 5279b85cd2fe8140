"""`opt finetune task=NAME` and `opt evaluate`: the stage functions over the task registry.

finetune: the pre-trained model (or, with task.from_scratch, a fresh one) plus the task's
heads, trained on train by the shared Trainer; saved with the task's state (opt.artifacts:
models/finetune/<task>/).
evaluate: every task on test and test_compositional, with its fine-tuned weights where they
exist (else the pre-trained model with fresh heads), into metrics/eval.json and reports/eval.md.
Each split holds the metrics and, under "blind", the same metrics of a model that ignores its
input (eval.json: task -> split -> {metric, ..., "blind": {metric, ...}}).
"""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from opt.artifacts import (
    is_finetuned,
    load_finetuned_weights,
    load_pretrained,
    prepared_identity,
    pretrained_identity,
    save_finetuned,
    task_state,
)
from opt.config import path
from opt.files import write_metrics
from opt.tasks import TASK_NAMES, get_task
from opt.tasks.base import Task, TaskContext, TaskModel, TaskObjective
from opt.tasks.metrics import BLIND
from opt.train.distributed import pick_device
from opt.train.seeding import seed_everything
from opt.train.trainer import Trainer, fingerprint


def task_steps(task_cfg) -> int:
    """Fine-tuning steps of the configured task: `steps`, times its entry in `step_factors`."""
    return task_cfg.steps * int(task_cfg.step_factors.get(task_cfg.name, 1))


def task_batch_factor(task_cfg) -> int:
    """The configured task's entry in `batch_factors`: its batch and lr are that multiple of the shared ones."""
    return int(task_cfg.batch_factors.get(task_cfg.name, 1))


def task_trainer_config(cfg):
    t, steps, factor = cfg.task, task_steps(cfg.task), task_batch_factor(cfg.task)
    return OmegaConf.create(
        {
            **OmegaConf.to_container(cfg.trainer),
            "max_steps": steps,
            "batch_size": t.batch_size * factor,
            "lr": t.lr * factor,
            "head_lr_factor": t.head_lr_factor,
            "warmup_steps": max(1, steps // 10),
            "init_from": None,
            "checkpoint_every": steps,
        }
    )


def finetune(cfg) -> dict:
    task = get_task(cfg.task.name)
    context = TaskContext(cfg, pick_device(cfg.trainer.device))
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)  # fresh heads (and body) from the run's seed
    model = load_pretrained(cfg, cfg.task.from_scratch)
    state = task.fit_state(context)
    task.use_state(state)
    objective = TaskObjective(task, model, task.heads(model, context), context)
    tcfg = task_trainer_config(cfg)
    run_dir = path(cfg, "checkpoints") / "finetune" / task.name
    result = Trainer(
        objective,
        context.split("train"),
        tcfg,
        run_dir,
        fingerprint=fingerprint(
            cfg,
            ("task",),
            tcfg,
            {
                **prepared_identity(cfg),
                "pretrained": pretrained_identity(cfg),
            },
        ),
    ).fit()
    save_finetuned(cfg, task.name, objective.model.state_dict(), state)
    result["val"] = task.evaluate(model.eval(), objective.model.heads.eval(), "val", context)
    write_metrics(cfg, f"finetune_{task.name}", result)
    print(f"finetune {task.name}: {result['step']} steps, val {json.dumps(result['val'])}")
    return result


def load_task_model(cfg, task: Task, context: TaskContext) -> TaskModel:
    """The fine-tuned model of `task` with its saved state; else the pre-trained model with fresh
    heads, whose state is saved beside them when there is one (a bundle), else fitted now."""
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)  # fresh heads of a task that was not fine-tuned
    state = task_state(cfg, task.name)
    if state is None and is_finetuned(cfg, task.name):
        raise ValueError(f"fine-tuned {task.name} has no saved state: run `opt finetune task.name={task.name}` again")
    task.use_state(task.fit_state(context) if state is None else state)
    model = load_pretrained(cfg)
    task_model = TaskModel(model, task.heads(model, context))
    if is_finetuned(cfg, task.name):
        task_model.load_state_dict(load_finetuned_weights(cfg, task.name))
    return task_model.to(context.device).eval()


@torch.no_grad()
def evaluate(cfg) -> dict:
    context = TaskContext(cfg, pick_device(cfg.trainer.device))
    results = {}
    for name in TASK_NAMES:
        task = get_task(name)
        task_model = load_task_model(cfg, task, context)
        results[name] = {
            split: {
                **task.evaluate(task_model.opt, task_model.heads, split, context),
                BLIND: task.blind(split, context),
            }
            for split in task.splits
        }
    out = path(cfg, "metrics") / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, sort_keys=True))
    from opt.tasks.report import write_report

    report = write_report(cfg, results)
    print(f"evaluate: {len(results)} tasks -> {out}, {report}")
    return results
