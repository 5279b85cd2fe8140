"""`opt check`: a run inside the reference's tolerances that beats its blind baselines passes;
drift, a different config, a missing metric, a short loss curve or a metric at its blind
baseline fails; the CLI exits 1 on any of them. The shipped reference covers every result key."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from omegaconf import OmegaConf

from opt.check import DEFAULT_REFERENCE, HEADLINE_PATHS, compare, loss_windows, result_config, write_reference
from opt.config import load_config

REFERENCE = {
    "config": {"data.n": 100, "model.name": "tiny"},
    "metrics": {
        "eval.json: retrieval.test.text_to_image/R@1": {"expected": 0.20, "tolerance": 0.05, "above_blind": 0.02},
        "eval.json: speech_recognition.test.wer": {"expected": 0.5, "tolerance": 0.1, "above_blind": 0.02},
    },
    "loss_curve": {"1-2": {"expected": 10.0, "tolerance": 1.0}, "3-4": {"expected": 8.0, "tolerance": 1.0}},
}


def write_run(
    root, r1=0.22, wer=0.45, blind_r1=0.01, blind_wer=0.7, losses=(10.5, 9.8, 8.2, 7.6), n=100, seed=0, precision="bf16"
):
    (root / "metrics").mkdir(parents=True)
    (root / "runs").mkdir()
    (root / "metrics" / "pretrain.json").write_text(json.dumps({"precision": precision}))
    eval_json = {
        "retrieval": {"test": {"text_to_image/R@1": r1, "blind": {"text_to_image/R@1": blind_r1}}},
        "speech_recognition": {"test": {"wer": wer, "blind": {"wer": blind_wer}}},
    }
    (root / "metrics" / "eval.json").write_text(json.dumps(eval_json))
    rows = ["step,loss"] + [f"{i + 1},{v}" for i, v in enumerate(losses)]
    (root / "metrics" / "pretrain_losses.csv").write_text("\n".join(rows) + "\n")
    (root / "runs" / "evaluate.yaml").write_text(
        yaml.safe_dump({"data": {"n": n}, "model": {"name": "tiny"}, "trainer": {"seed": seed}})
    )


def failures(root) -> list[str]:
    results = compare(REFERENCE, root / "metrics", OmegaConf.load(root / "runs" / "evaluate.yaml"))
    assert len(results) == 8
    return [r.name for r in results if not r.ok]


def test_a_run_within_tolerance_and_above_blind_passes(tmp_path):
    write_run(tmp_path)
    assert failures(tmp_path) == []


@pytest.mark.parametrize(
    "change,failed",
    [
        ({"r1": 0.26}, ["eval.json retrieval.test.text_to_image/R@1"]),  # drifted past 0.20 +- 0.05
        ({"r1": 0.14}, ["eval.json retrieval.test.text_to_image/R@1"]),  # either direction
        ({"losses": (10.5, 9.8, 9.9, 9.5)}, ["pre-training loss, steps 3-4"]),  # a slower loss curve
        ({"losses": (10.5, 9.8, 8.2)}, ["pre-training loss, steps 3-4"]),  # a run that stopped early
        ({"n": 60}, ["config data.n"]),  # another config: not comparable
        # within tolerance, yet no better than a model that ignores its input (WER: lower is better)
        ({"blind_r1": 0.21}, ["retrieval.test.text_to_image/R@1 above blind (0.21) by 0.02"]),
        ({"wer": 0.55, "blind_wer": 0.56}, ["speech_recognition.test.wer below blind (0.56) by 0.02"]),
    ],
)
def test_drift_another_config_or_a_blind_level_metric_fails(tmp_path, change, failed):
    write_run(tmp_path, **change)
    assert failures(tmp_path) == failed


def test_a_missing_metric_or_blind_baseline_fails(tmp_path):
    write_run(tmp_path)
    (tmp_path / "metrics" / "eval.json").write_text(
        json.dumps(
            {"retrieval": {"test": {"text_to_image/R@1": 0.2}}, "speech_recognition": {"test": {"blind": {"wer": 0.7}}}}
        )
    )
    assert failures(tmp_path) == [
        "retrieval.test.text_to_image/R@1 above blind (missing) by 0.02",
        "eval.json speech_recognition.test.wer",
        "speech_recognition.test.wer below blind (0.7) by 0.02",
    ]


def test_cli_exit_code_follows_the_checks_and_names_blind_metrics(tmp_path):
    reference = tmp_path / "reference.yaml"
    reference.write_text(yaml.safe_dump({**REFERENCE, "runs": {"seed 0": {"precision": "bf16"}}}))

    def opt_check(root):
        return subprocess.run(
            [sys.executable, "-m", "opt.cli", "check", "--reference", str(reference), f"paths.root={root}"],
            capture_output=True,
            text=True,
        )

    write_run(tmp_path / "good")
    write_run(tmp_path / "drifted", r1=0.3)
    write_run(tmp_path / "blind", r1=0.2, blind_r1=0.19)
    write_run(tmp_path / "fp32", precision="fp32")
    with ThreadPoolExecutor(max_workers=5) as pool:  # five processes at once: most of each is start-up
        good, drifted, blind, absent, fp32 = pool.map(
            opt_check, [tmp_path / name for name in ("good", "drifted", "blind", "none", "fp32")]
        )
    assert good.returncode == 0 and "8 of 8 checks within the reference" in good.stdout
    assert "note: this run pre-trained in" not in good.stdout
    # another precision (trainer.precision=auto on another machine) is named, and judged by its numbers
    assert fp32.returncode == 0 and "pre-trained in fp32, the reference's runs in bf16" in fp32.stdout
    assert drifted.returncode == 1 and "OUTSIDE" in drifted.stdout
    assert blind.returncode == 1 and "at their blind baseline" in blind.stdout and "text_to_image/R@1" in blind.stdout
    assert absent.returncode == 1 and "run the pipeline" in absent.stderr


def write_full_run(root, cfg, seed: int, r1: float) -> None:
    """A finished run of `cfg` with trainer.seed `seed`: every headline metric, every step logged."""
    eval_json: dict = {}
    for dotted in HEADLINE_PATHS:
        task, split, metric = dotted.split(".", 2)
        value = r1 if metric == "text_to_image/R@1" else 0.5
        eval_json.setdefault(task, {}).setdefault(split, {}).update({metric: value, "blind": {metric: 0.1}})
    (root / "metrics").mkdir(parents=True)
    (root / "metrics" / "eval.json").write_text(json.dumps(eval_json))
    (root / "metrics" / "pretrain.json").write_text(json.dumps({"precision": "fp32"}))
    rows = ["step,loss"] + [f"{i},{30 - i / 25}" for i in range(1, cfg.trainer.max_steps + 1)]
    (root / "metrics" / "pretrain_losses.csv").write_text("\n".join(rows) + "\n")
    saved = OmegaConf.to_container(cfg)
    saved["trainer"]["seed"] = seed
    (root / "runs").mkdir()
    (root / "runs" / "evaluate.yaml").write_text(yaml.safe_dump(saved))


@pytest.mark.parametrize("steps", [250, 350, 7])
def test_loss_windows_are_four_tenths_of_the_run_the_last_ending_at_its_last_step(steps):
    windows = [tuple(int(s) for s in w.split("-")) for w in loss_windows(steps)]
    assert len(windows) == 4 and windows[0][0] == 1 and windows[-1][1] == steps
    assert all(last - first + 1 == max(1, steps // 10) for first, last in windows)
    assert all(a[1] < b[0] for a, b in zip(windows, windows[1:]))


def test_write_reference_from_two_seeds(tmp_path):
    cfg = load_config(["model=tiny"])
    write_full_run(tmp_path / "s0", cfg, 0, 0.20)
    write_full_run(tmp_path / "s1", cfg, 1, 0.24)
    reference = write_reference(cfg, [tmp_path / "s0", tmp_path / "s1"], tmp_path / "ref.yaml")
    r1 = reference["metrics"]["eval.json: retrieval.test.text_to_image/R@1"]
    assert r1["expected"] == pytest.approx(0.22) and r1["tolerance"] == pytest.approx(3 * 0.04 / 2**0.5, abs=1e-4)
    assert r1["above_blind"] > 0 and set(reference["runs"]) == {"seed 0", "seed 1"}
    assert reference["runs"]["seed 0"]["precision"] == "fp32"  # what trainer.precision resolved to
    assert list(reference["loss_curve"]) == list(loss_windows(cfg.trainer.max_steps))
    assert "above_blind" not in reference["metrics"]["eval.json: text_to_image.test.frechet_distance"]
    written = OmegaConf.to_container(OmegaConf.load(tmp_path / "ref.yaml"))
    assert written["metrics"] == reference["metrics"] and written["config"]["model.name"] == "tiny"
    with pytest.raises(ValueError, match="another config"):  # a run of another config is no seed of this one
        write_reference(load_config(["model=small"]), [tmp_path / "s0", tmp_path / "s1"], tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="two different seeds"):
        write_reference(cfg, [tmp_path / "s0", tmp_path / "s0"], tmp_path / "bad.yaml")


def test_shipped_reference_holds_for_the_default_config_in_every_result_key():
    """Change a default that changes results and this fails until the reference is measured again."""
    reference = OmegaConf.to_container(OmegaConf.load(DEFAULT_REFERENCE))
    assert reference["config"] == result_config(load_config([]))
    assert len(reference["runs"]) >= 2
    for spec, entry in reference["metrics"].items():
        assert entry["tolerance"] > 0, spec
