"""The `opt` console script: subcommands, help and errors, run as a user would."""

import subprocess
import sys

import yaml

from opt.stages import STAGES


def run_opt(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "opt.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_every_stage():
    out = run_opt("--help")
    assert out.returncode == 0
    for name in [*STAGES, "config"]:
        assert name in out.stdout


def test_bad_override_is_a_clear_error_not_a_traceback(tmp_path):
    out = run_opt("ingest", "data.nope=1", f"paths.root={tmp_path}")
    assert out.returncode == 2
    assert "bad configuration" in out.stderr and "Traceback" not in out.stderr


def test_unknown_source_is_rejected(tmp_path):
    out = run_opt("ingest", "data.source=webdataset", f"paths.root={tmp_path}")
    assert out.returncode != 0
    assert "data.source" in out.stderr


def test_config_prints_resolved_overrides():
    out = run_opt("config", "data.n=5", "prepare.n_mels=32")
    assert out.returncode == 0
    cfg = yaml.safe_load(out.stdout)
    assert (cfg["data"]["n"], cfg["prepare"]["n_mels"]) == (5, 32)
