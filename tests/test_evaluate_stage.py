"""`opt evaluate` after pre-training writes eval.json with every task and split, each metric beside
its blind baseline, and a report that shows both."""

import json
import math
import subprocess
import sys

from omegaconf import OmegaConf

from opt.check import DEFAULT_REFERENCE, compare
from opt.tasks import TASK_NAMES


def test_evaluate_writes_every_task_and_split(pretrained_synth):
    root, overrides = pretrained_synth
    out = subprocess.run([sys.executable, "-m", "opt.cli", "evaluate", *overrides], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((root / "metrics" / "eval.json").read_text())
    assert set(results) == set(TASK_NAMES)
    for task, splits in results.items():
        assert set(splits) == {"test", "test_compositional"}, task
        for split, values in splits.items():
            blind = values.pop("blind")
            assert values and blind, f"{task} {split}: no metric or no blind baseline"
            assert set(blind) <= set(values), f"{task} {split}: a blind baseline of no metric"
            assert all(math.isfinite(v) for v in [*values.values(), *blind.values()]), (task, split)
    assert results["retrieval"]["test"]["text_to_image/R@1"] >= 0
    assert set(results["text_to_image"]["test"]) >= {"attribute_accuracy", "frechet_distance", "probe_accuracy"}
    report = (root / "reports" / "eval.md").read_text()
    assert "| metric | test | test blind | test_compositional | test_compositional blind |" in report
    assert all(f"## {task}" in report for task in TASK_NAMES)
    assert list((root / "reports" / "eval").glob("*.png"))
    # the shipped reference (opt check) names metrics that evaluate writes
    reference = OmegaConf.to_container(OmegaConf.load(DEFAULT_REFERENCE))
    checks = compare({"metrics": reference["metrics"]}, root / "metrics", OmegaConf.create({}))
    missing = [c.name for c in checks if c.got is None or c.expected is None]  # a metric or its blind baseline
    assert checks and not missing, missing
