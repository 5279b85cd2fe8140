"""`opt check`: a run inside the reference's tolerances passes; drift, a different config, a
missing metric or a short loss curve fails; the CLI exits 1 on any of them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from omegaconf import OmegaConf

from opt.check import compare

REFERENCE = {
    "config": {"data.n": 100, "model.name": "tiny"},
    "metrics": {"eval.json: retrieval.test.text_to_image/R@1": [0.20, 0.05], "eval.json: vqa.test.accuracy": [0.5, 0.1]},
    "loss_curve": {"1-2": [10.0, 1.0], "3-4": [8.0, 1.0]},
}


def write_run(root, r1=0.22, losses=(10.5, 9.8, 8.2, 7.6), n=100):
    (root / "metrics").mkdir(parents=True)
    (root / "runs").mkdir()
    eval_json = {"retrieval": {"test": {"text_to_image/R@1": r1}}, "vqa": {"test": {"accuracy": 0.45}}}
    (root / "metrics" / "eval.json").write_text(json.dumps(eval_json))
    rows = ["step,loss"] + [f"{i + 1},{v}" for i, v in enumerate(losses)]
    (root / "metrics" / "pretrain_losses.csv").write_text("\n".join(rows) + "\n")
    (root / "runs" / "evaluate.yaml").write_text(yaml.safe_dump({"data": {"n": n}, "model": {"name": "tiny"}}))


def failures(root) -> list[str]:
    results = compare(REFERENCE, root / "metrics", OmegaConf.load(root / "runs" / "evaluate.yaml"))
    assert len(results) == 6
    return [r.name for r in results if not r.ok]


def test_a_run_within_tolerance_passes(tmp_path):
    write_run(tmp_path)
    assert failures(tmp_path) == []


@pytest.mark.parametrize("change,failed", [
    ({"r1": 0.26}, "eval.json retrieval.test.text_to_image/R@1"),  # drifted past 0.20 +- 0.05
    ({"r1": 0.14}, "eval.json retrieval.test.text_to_image/R@1"),  # either direction
    ({"losses": (10.5, 9.8, 9.9, 9.5)}, "pre-training loss, steps 3-4"),  # a slower loss curve
    ({"losses": (10.5, 9.8, 8.2)}, "pre-training loss, steps 3-4"),  # a run that stopped early
    ({"n": 60}, "config data.n"),  # another config: not comparable
])
def test_drift_or_another_config_fails(tmp_path, change, failed):
    write_run(tmp_path, **change)
    assert failures(tmp_path) == [failed]


def test_a_missing_metric_fails(tmp_path):
    write_run(tmp_path)
    (tmp_path / "metrics" / "eval.json").write_text(json.dumps({"vqa": {"test": {"accuracy": 0.45}}}))
    assert failures(tmp_path) == ["eval.json retrieval.test.text_to_image/R@1"]


def test_cli_exit_code_follows_the_checks(tmp_path):
    reference = tmp_path / "reference.yaml"
    reference.write_text(yaml.safe_dump(REFERENCE))

    def opt_check(root):
        return subprocess.run([sys.executable, "-m", "opt.cli", "check", "--reference", str(reference),
                               f"paths.root={root}"], capture_output=True, text=True)

    write_run(tmp_path / "good")
    write_run(tmp_path / "drifted", r1=0.3)
    good, drifted, absent = opt_check(tmp_path / "good"), opt_check(tmp_path / "drifted"), opt_check(tmp_path / "none")
    assert good.returncode == 0 and "6 of 6 checks within the reference" in good.stdout
    assert drifted.returncode == 1 and "OUTSIDE" in drifted.stdout
    assert absent.returncode == 1 and "run the pipeline" in absent.stderr
