"""Prefect artifacts from files the stages wrote: validation summary, metrics table, pictures."""

from __future__ import annotations

import base64
import json

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from opt.config import load_config, path

MAX_PICTURES = 4  # pictures are inlined as data URIs; keep artifacts small


def publish_validation(overrides: list[str], config_file: str | None) -> None:
    report = path(load_config(overrides, config_file), "reports") / "validation.md"
    create_markdown_artifact(report.read_text(), key="opt-validation", description="Great Expectations summary")


def metrics_rows(eval_json: dict) -> list[dict]:
    """eval.json (task -> split -> {metric: value, "blind": {metric: value}}) as table rows, each
    metric beside its blind baseline."""
    from opt.tasks.metrics import BLIND

    return [
        {"task": task, "split": split, "metric": metric, "value": value, "blind": metrics.get(BLIND, {}).get(metric)}
        for task, splits in eval_json.items()
        for split, metrics in splits.items()
        for metric, value in metrics.items()
        if isinstance(value, (int, float))
    ]


def publish_evaluation(overrides: list[str], config_file: str | None) -> None:
    cfg = load_config(overrides, config_file)
    results = json.loads((path(cfg, "metrics") / "eval.json").read_text())
    create_table_artifact(metrics_rows(results), key="opt-eval-metrics", description="metrics/eval.json")
    pictures = sorted((path(cfg, "reports") / "eval").glob("*_test.png"))[:MAX_PICTURES]
    lines = ["# Test-split pictures", ""]
    for picture in pictures:
        data = base64.b64encode(picture.read_bytes()).decode()
        lines += [f"## {picture.stem}", "", f"![{picture.stem}](data:image/png;base64,{data})", ""]
    create_markdown_artifact("\n".join(lines), key="opt-eval-pictures", description="captions and generated images")


def publish_release(result: dict) -> None:
    lines = ["# Release", ""] + [
        f"- **{key}**: `{value}`" for key, value in result.items() if not isinstance(value, dict)
    ]
    create_markdown_artifact("\n".join(lines), key="opt-release", description="packaged model")
