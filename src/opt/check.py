"""`opt check`: does a run reproduce a reference run (reference/default_run.yaml), and does each
of its metrics clear what a blind model scores?

The reference holds (1) `config`: every resolved key that changes results (`result_config`),
checked against the run's saved runs/evaluate.yaml; (2) `metrics`: dotted paths into files of
metrics/, each with `expected`, `tolerance` and, for eval.json metrics, `above_blind`: the margin
by which the run must beat the same metric's blind baseline (eval.json's task.split.blind.metric;
"beat" is "lower" for lower_is_better metrics); (3) `loss_curve`: the mean pre-training loss over
step windows; (4) `runs`: the measured values the tolerances were made from (`write_reference`),
with the precision each pre-trained in (a run in another one gets a note, not a failure).
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from opt.config import PROJECT_ROOT, path
from opt.files import metric_value
from opt.tasks.metrics import BLIND, HEADLINE, lower_is_better

DEFAULT_REFERENCE = PROJECT_ROOT / "reference" / "default_run.yaml"
RESULT_GROUPS = ("data", "prepare", "image_tokenizer", "model", "objectives", "trainer", "task")
NOT_RESULTS = {
    "data.workers",
    "data.executor",
    "data.task_runner",
    "prepare.workers",
    "trainer.checkpoint_every",
    "trainer.resume",
    "trainer.threads",
    "task.name",
}  # how a run is executed, not what it computes
HEADLINE_PATHS = [
    f"{task}.{split}.{metric}"
    for split in ("test", "test_compositional")
    for task, metrics in HEADLINE.items()
    for metric in metrics
]
BLIND_MARGIN = 0.02  # a headline metric must beat its blind baseline by this much (absolute): about one
# standard error of a share on this test split (VQA: sqrt(0.4 * 0.6 / ~800 questions) = 0.017) ...
WIDER_BLIND_MARGINS = {"mAP": 0.1, "attribute_accuracy": 0.1}  # ... except where an untrained model already
# beat blind by chance: a random head on random features, mAP 0.287 against 0.258; random VQ codes, attribute
# accuracy 0.24 against 0.21 (the default data, `trainer.max_steps=0`, no fine-tuning; trained: 0.59 and 0.41)
NO_BLIND_CHECK = ("frechet_distance",)  # its blind value is the noise floor: no generator beats it


def loss_windows(max_steps: int) -> tuple[str, ...]:
    """Steps "first-last" of the reference's loss windows: the first, third, sixth and last tenth
    of pre-training (250 steps: 1-25, 51-75, 126-150, 226-250)."""
    w = max(1, max_steps // 10)
    return tuple(f"{s + 1}-{s + w}" for s in (0, 2 * w, 5 * w, max_steps - w))


REFERENCE_HEADER = """\
# What the default run gives, written by `opt check --write-from RUN_DIR RUN_DIR ...` from runs of the
# default config that differ only in trainer.seed (`bash scripts/seed_run.sh SEED DIR` makes one).
# `opt check` compares a run with it and exits 1 when the run drifts or fails to beat a blind baseline.
# expected: the mean over the runs; tolerance: 3 standard deviations of the runs (at least 2% of the
# value, 0.02 for metrics within [0, 1]); above_blind: the margin by which the metric must beat its blind
# baseline in the run's own eval.json (below it, for wer). config: every key that changes results.
"""


@dataclass
class Result:
    """One check: `rule` is equal (got == expected), within (|got - expected| <= tolerance),
    at_least (got >= expected) or at_most (got <= expected)."""

    name: str
    expected: object
    got: object
    tolerance: float | None = None
    rule: str = "equal"

    @property
    def ok(self) -> bool:
        if self.rule == "equal":
            return self.got == self.expected
        if not isinstance(self.got, float) or self.expected is None:  # a missing metric or baseline fails
            return False
        if self.rule == "within":
            return abs(self.got - float(self.expected)) <= self.tolerance
        return self.got >= float(self.expected) if self.rule == "at_least" else self.got <= float(self.expected)


def result_config(cfg) -> dict:
    """{dotted key: value} of every resolved config key that changes a run's numbers."""
    flat: dict = {}

    def walk(node, prefix: str) -> None:
        for key, value in node.items():
            name = f"{prefix}.{key}"
            if isinstance(value, dict):
                walk(value, name)
            elif name not in NOT_RESULTS:
                flat[name] = value

    for group in RESULT_GROUPS:
        walk(OmegaConf.to_container(cfg[group], resolve=True), group)
    return flat


def blind_path(dotted: str) -> str:
    """ "task.split.metric" -> "task.split.blind.metric" (where eval.json keeps the blind baseline)."""
    task, split, metric = dotted.split(".", 2)
    return f"{task}.{split}.{BLIND}.{metric}"


def mean_loss(rows: list[dict], window: str) -> float | None:
    """Mean `loss` over the steps "first-last" (inclusive) of the losses CSV; None when the run lacks any."""
    first, last = (int(s) for s in window.split("-"))
    losses = [float(r["loss"]) for r in rows if first <= int(r["step"]) <= last]
    return sum(losses) / len(losses) if len(losses) == last - first + 1 else None


def read_json(file: Path) -> dict | None:
    return json.loads(file.read_text()) if file.exists() else None


def pretrain_precision(metrics_dir: Path) -> str | None:
    """The precision pre-training ran in (trainer.precision resolved), from metrics/pretrain.json."""
    return (read_json(metrics_dir / "pretrain.json") or {}).get("precision")


def metric_checks(spec: str, expectation: dict, files: dict, metrics_dir: Path) -> list[Result]:
    """The tolerance check of one reference metric and, with `above_blind`, its blind check."""
    name, dotted = (s.strip() for s in spec.split(":", 1))
    if name not in files:
        files[name] = read_json(metrics_dir / name)
    got = metric_value(files[name], dotted) if files[name] is not None else None
    out = [Result(f"{name} {dotted}", expectation["expected"], got, float(expectation["tolerance"]), "within")]
    margin = expectation.get("above_blind")
    if margin is not None:
        blind = metric_value(files[name], blind_path(dotted)) if files[name] is not None else None
        lower = lower_is_better(dotted)
        bound = None if blind is None else blind - margin if lower else blind + margin
        out.append(
            Result(
                f"{dotted} {'below' if lower else 'above'} blind ({'missing' if blind is None else f'{blind:.4g}'}) "
                f"by {margin:g}",
                bound,
                got,
                rule="at_most" if lower else "at_least",
            )
        )
    return out


def compare(reference: dict, metrics_dir: Path, run_config) -> list[Result]:
    """Every check of `reference` against the run: config keys, metrics (and blind margins), loss windows."""
    results = [
        Result(f"config {key}", value, OmegaConf.select(run_config, key, default=None))
        for key, value in (reference.get("config") or {}).items()
    ]
    files: dict[str, dict | None] = {}
    for spec, expectation in (reference.get("metrics") or {}).items():
        results += metric_checks(spec, expectation, files, metrics_dir)
    losses = metrics_dir / "pretrain_losses.csv"
    rows = list(csv.DictReader(losses.open())) if losses.exists() else []
    for window, expectation in (reference.get("loss_curve") or {}).items():
        results.append(
            Result(
                f"pre-training loss, steps {window}",
                expectation["expected"],
                mean_loss(rows, window),
                float(expectation["tolerance"]),
                "within",
            )
        )
    return results


def show(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else ("missing" if v is None else str(v))


def table(results: list[Result]) -> str:
    lines = ["| check | expected | tolerance | got | |", "|---|---:|---:|---:|---|"]
    for r in results:
        tol = (
            f"±{r.tolerance:g}"
            if r.rule == "within"
            else {"at_least": "at least", "at_most": "at most"}.get(r.rule, "")
        )
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
    at_blind = [r.name.split(" ")[0] for r in bad if r.rule in ("at_least", "at_most")]
    if at_blind:
        print(f"at their blind baseline (no better than a model that ignores its input): {', '.join(at_blind)}")
    made_in = {run.get("precision") for run in (reference.get("runs") or {}).values()} - {None}
    ran_in = pretrain_precision(path(cfg, "metrics"))
    if made_in and ran_in not in made_in:
        print(
            f"note: this run pre-trained in {ran_in}, the reference's runs in {', '.join(sorted(made_in))} "
            "(trainer.precision=auto follows the machine): its numbers may drift by more than seed noise"
        )
    return results


def spread_tolerance(values: list[float]) -> float:
    """Tolerance from runs of several seeds: 3 standard deviations, at least 2% of the mean
    magnitude (at least 0.02 for metrics within [0, 1])."""
    return max(3 * statistics.stdev(values), 0.02 * max(1.0, abs(statistics.fmean(values))))


def measured(root: Path, max_steps: int) -> dict:
    """A run's headline metrics and loss windows of a `max_steps` run (None where missing)."""
    results = read_json(root / "metrics" / "eval.json") or {}
    losses = root / "metrics" / "pretrain_losses.csv"
    rows = list(csv.DictReader(losses.open())) if losses.exists() else []
    return {
        "metrics": {m: metric_value(results, m) for m in HEADLINE_PATHS},
        "loss_curve": {w: mean_loss(rows, w) for w in loss_windows(max_steps)},
        "precision": pretrain_precision(root / "metrics"),
    }


def run_seed(cfg, root: Path) -> int:
    """The trainer.seed of the run at `root`, after checking it ran `cfg` in every other result key."""
    saved = Path(root) / "runs" / "evaluate.yaml"
    if not saved.exists():
        raise FileNotFoundError(f"{saved} is missing: finish the run at {root} up to `opt evaluate` first")
    run = OmegaConf.load(saved)
    differ = [k for k, v in result_config(cfg).items() if k != "trainer.seed" and OmegaConf.select(run, k) != v]
    if differ:
        raise ValueError(f"the run at {root} used another config: {', '.join(differ[:8])}")
    return int(run.trainer.seed)


def write_reference(cfg, roots: list[Path], out: Path) -> dict:
    """A reference from runs of the config `cfg` that differ only in trainer.seed: expected = their
    mean, tolerance = spread_tolerance, blind margin BLIND_MARGIN; each seed's values kept under `runs`."""
    runs = {f"seed {run_seed(cfg, r)}": measured(Path(r), cfg.trainer.max_steps) for r in roots}
    if len(runs) < 2:
        raise ValueError("a reference needs runs of at least two different seeds")
    reference: dict = {"config": result_config(cfg), "metrics": {}, "loss_curve": {}, "runs": runs}
    for section in ("metrics", "loss_curve"):
        for key in next(iter(runs.values()))[section]:
            values = [run[section][key] for run in runs.values()]
            if any(v is None for v in values):
                raise ValueError(f"{key} is missing from a run: finish every run up to `opt evaluate` first")
            entry = {"expected": round(statistics.fmean(values), 4), "tolerance": round(spread_tolerance(values), 4)}
            if section == "metrics" and not key.split(".")[-1].startswith(NO_BLIND_CHECK):
                entry["above_blind"] = WIDER_BLIND_MARGINS.get(key.split(".")[-1], BLIND_MARGIN)
            reference[section]["eval.json: " + key if section == "metrics" else key] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(REFERENCE_HEADER + OmegaConf.to_yaml(OmegaConf.create(reference)))
    return reference
