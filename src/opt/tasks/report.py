"""The evaluation report: one markdown table per task (metric x split, each value beside its blind
baseline), plus the pictures tasks saved under reports/eval/."""

from __future__ import annotations

from pathlib import Path

from opt.config import path
from opt.tasks.metrics import BLIND, LOWER_IS_BETTER

INTRO = (
    "Each metric stands beside its **blind** baseline: what a model that ignores its input scores on the "
    "same split (chance ranking, train label or answer priors, the best single train caption or transcript, "
    "real images of other prompts). Lower is better for " + ", ".join(LOWER_IS_BETTER) + "; higher for the rest."
)


def cell(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def table(task_results: dict) -> list[str]:
    """split -> {metric: value, BLIND: {metric: value}}  =>  markdown rows: a metric per row."""
    splits = list(task_results)
    metrics = sorted({m for values in task_results.values() for m in values if m != BLIND})
    lines = [
        "| metric | " + " | ".join(f"{s} | {s} blind" for s in splits) + " |",
        "|---|" + "---:|---:|" * len(splits),
    ]
    for m in metrics:
        cells = [f"{cell(task_results[s].get(m))} | {cell(task_results[s].get(BLIND, {}).get(m))}" for s in splits]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def write_report(cfg, results: dict) -> Path:
    reports = path(cfg, "reports")
    lines = ["# Downstream evaluation", "", INTRO, ""]
    for task, task_results in results.items():
        lines += [f"## {task}", "", *table(task_results), ""]
        pictures = sorted((reports / "eval").glob(f"{task}*.png"))
        lines += [f"![{p.stem}](eval/{p.name})" for p in pictures] + ([""] if pictures else [])
    out = reports / "eval.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
