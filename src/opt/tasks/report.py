"""The evaluation report: one markdown table per task (split x metric), plus the pictures
tasks saved under reports/eval/."""
from __future__ import annotations

from pathlib import Path

from opt.config import path


def table(task_results: dict) -> list[str]:
    metrics = sorted({m for split in task_results.values() for m in split})
    lines = ["| split | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for split, values in task_results.items():
        cells = [f"{values[m]:.4f}" if isinstance(values.get(m), float) else str(values.get(m, "")) for m in metrics]
        lines.append(f"| {split} | " + " | ".join(cells) + " |")
    return lines


def write_report(cfg, results: dict) -> Path:
    reports = path(cfg, "reports")
    lines = ["# Downstream evaluation", ""]
    for task, task_results in results.items():
        lines += [f"## {task}", "", *table(task_results), ""]
        pictures = sorted((reports / "eval").glob(f"{task}*.png"))
        lines += [f"![{p.stem}](eval/{p.name})" for p in pictures] + ([""] if pictures else [])
    out = reports / "eval.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    return out
