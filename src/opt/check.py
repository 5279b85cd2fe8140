"""`opt check`: does a run reproduce a reference run (reference/default_run.yaml) within its tolerances?

The reference names the config the run must have used (checked against the run's saved
runs/evaluate.yaml), metrics at dotted paths of files in metrics/, and the mean pre-training loss
over step windows of metrics/pretrain_losses.csv, each as [expected, tolerance].
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from opt.config import PROJECT_ROOT, path
from opt.files import metric_value

DEFAULT_REFERENCE = PROJECT_ROOT / "reference" / "default_run.yaml"


@dataclass
class Result:
    name: str
    expected: object
    got: object
    tolerance: float | None = None  # None: must be equal

    @property
    def ok(self) -> bool:
        if self.tolerance is None:
            return self.got == self.expected
        return isinstance(self.got, float) and abs(self.got - float(self.expected)) <= self.tolerance


def mean_loss(rows: list[dict], window: str) -> float | None:
    """Mean `loss` over the steps "first-last" (inclusive) of the losses CSV; None when the run lacks any."""
    first, last = (int(s) for s in window.split("-"))
    losses = [float(r["loss"]) for r in rows if first <= int(r["step"]) <= last]
    return sum(losses) / len(losses) if len(losses) == last - first + 1 else None


def compare(reference: dict, metrics_dir: Path, run_config) -> list[Result]:
    """Every check of `reference` against the run: config keys, metrics, loss windows."""
    results = [Result(f"config {key}", value, OmegaConf.select(run_config, key))
               for key, value in (reference.get("config") or {}).items()]
    files: dict[str, dict | None] = {}
    for spec, (expected, tol) in (reference.get("metrics") or {}).items():
        name, dotted = (s.strip() for s in spec.split(":", 1))
        if name not in files:
            file = metrics_dir / name
            files[name] = json.loads(file.read_text()) if file.exists() else None
        got = metric_value(files[name], dotted) if files[name] is not None else None
        results.append(Result(f"{name} {dotted}", expected, got, float(tol)))
    losses = metrics_dir / "pretrain_losses.csv"
    rows = list(csv.DictReader(losses.open())) if losses.exists() else []
    for window, (expected, tol) in (reference.get("loss_curve") or {}).items():
        results.append(Result(f"pre-training loss, steps {window}", expected, mean_loss(rows, window), float(tol)))
    return results


def table(results: list[Result]) -> str:
    def show(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else ("missing" if v is None else str(v))

    lines = ["| check | expected | tolerance | got | |", "|---|---:|---:|---:|---|"]
    for r in results:
        tol = "" if r.tolerance is None else f"±{r.tolerance:g}"
        lines.append(f"| {r.name} | {show(r.expected)} | {tol} | {show(r.got)} | {'ok' if r.ok else 'OUTSIDE'} |")
    return "\n".join(lines)


def check(cfg, reference_file: Path = DEFAULT_REFERENCE) -> list[Result]:
    """Compare the run at cfg.paths with the reference; print the table; return the checks."""
    reference = OmegaConf.to_container(OmegaConf.load(reference_file))
    saved = path(cfg, "runs") / "evaluate.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{saved} is missing: run the pipeline (dvc repro) up to evaluate first")
    results = compare(reference, path(cfg, "metrics"), OmegaConf.load(saved))
    print(table(results))
    bad = [r for r in results if not r.ok]
    print(f"\n{len(results) - len(bad)} of {len(results)} checks within the reference ({reference_file.name})")
    return results
