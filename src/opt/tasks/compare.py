"""`opt compare`: the paper's comparisons on our data, at the configured budget.

Each variant pre-trains its own model (sharing data/raw, data/prepared, the image tokenizer
and the text-to-image probe of the run's root: `opt image_tokenizer` must have run), fine-tunes every task and evaluates it; the table of headline
metrics on `test` goes to metrics/compare.json and reports/compare.md. Variants: no
pre-training (the same model, 0 pre-training steps); pre-training without audio; without each
of the token, modality and sample levels; full tri-modal pre-training.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from opt.artifacts import image_tokenizer_dir, probe_dir, vq_file
from opt.config import load_config, path, typed
from opt.files import write_metrics
from opt.tasks import TASK_NAMES
from opt.tasks.metrics import HEADLINE
from opt.tasks.run import evaluate, finetune
from opt.train.pretrain import pretrain

VARIANTS = {
    "no_pretraining": "all",
    "image_text": "image_text",
    "no_token": "no_token",
    "no_modality": "no_modality",
    "no_sample": "no_sample",
    "full": "all",
}


def variant_config(cfg, name: str):
    """The run's config with this variant's objectives, under compare/<name>/, sharing the data."""
    v = typed(OmegaConf.to_container(cfg))
    v.objectives = load_config([f"objectives={VARIANTS[name]}"]).objectives
    for key in ("raw", "prepared"):
        setattr(v.paths, key, str(path(cfg, key)))
    v.paths.root = str(path(cfg, "runs").parent / "compare" / name)
    if name == "no_pretraining":
        v.trainer.max_steps = 0
    return v


def share_tools(cfg, vcfg) -> None:
    """Link the variant's image tokenizer and attribute probe to the run's: every variant's codes
    and generated images are judged by the same tools."""
    for folder in (image_tokenizer_dir, probe_dir):
        source, target = folder(cfg), folder(vcfg)
        if not target.exists() and not target.is_symlink():
            source.mkdir(parents=True, exist_ok=True)  # the probe is trained on first use, into the run's folder
            target.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(source, target, target_is_directory=True)


def run_variant(cfg, name: str) -> dict:
    vcfg = variant_config(cfg, name)
    share_tools(cfg, vcfg)
    pretrain(vcfg)
    for task in TASK_NAMES:
        vcfg.task.name = task
        finetune(vcfg)
    return evaluate(vcfg)


def headline(results: dict, split: str = "test") -> dict:
    return {
        f"{task}/{metric}": results[task][split].get(metric) for task, metrics in HEADLINE.items() for metric in metrics
    }


def compare(cfg) -> dict:
    vq_file(cfg)  # every variant shares the run's image tokenizer: `opt image_tokenizer` first
    table = {name: headline(run_variant(cfg, name)) for name in VARIANTS}
    write_metrics(cfg, "compare", table)
    report = write_table(path(cfg, "reports") / "compare.md", table)
    print(f"compare: {len(table)} variants -> {report}")
    return table


def write_table(out: Path, table: dict) -> Path:
    columns = list(next(iter(table.values())))
    lines = [
        "# Pre-training comparisons (test split)",
        "",
        "| variant | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join("" if row[c] is None else f"{row[c]:.4f}" for c in columns) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out
