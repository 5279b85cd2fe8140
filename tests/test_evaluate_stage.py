"""`opt evaluate` after pre-training writes eval.json with every task and split, and a report."""
import json
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
        assert all(splits[s] for s in splits), f"{task} reported no metric"
    report = (root / "reports" / "eval.md").read_text()
    assert all(f"## {task}" in report for task in TASK_NAMES)
    assert list((root / "reports" / "eval").glob("*.png"))
    # the shipped reference (opt check) names metrics that evaluate writes
    reference = OmegaConf.to_container(OmegaConf.load(DEFAULT_REFERENCE))
    checks = compare({"metrics": reference["metrics"]}, root / "metrics", OmegaConf.create({}))
    assert checks and all(c.got is not None for c in checks), [c.name for c in checks if c.got is None]
