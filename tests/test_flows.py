"""The Prefect flows under `prefect_test_harness` (one temporary API for this module)."""

import pytest
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.testing.utilities import prefect_test_harness
from scratch import TINY, make_scratch_project, sh

from flows.data import data_flow
from flows.pipeline import opt_pipeline, stage_flow
from opt.files import file_hashes
from opt.stages import StageFailed, run_stage
from opt.tasks import TASK_NAMES

pytestmark = pytest.mark.timeout(1800)  # runs the whole tiny pipeline as Prefect flows


@pytest.fixture(scope="module", autouse=True)
def harness(tmp_path_factory):
    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("prefect-results")}):
        # Prefect's 30 s default for the temporary API server to come up timed out on a loaded
        # 2-core machine (CI beside a training run); the per-test limit still stops a real hang.
        with prefect_test_harness(server_startup_timeout=600):
            yield


def output_times(root):
    """mtime of every file the stages write (not runs/, where each run saves its config)."""
    folders = [root / name for name in ("data", "models", "metrics", "reports")]
    return {p: p.stat().st_mtime_ns for folder in folders for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow  # the whole tiny pipeline as Prefect flows (about 1 min on 2 cores)
def test_parent_flow_runs_the_pipeline_and_a_rerun_skips_every_stage(tmp_path, monkeypatch):
    root = make_scratch_project(tmp_path / "project")
    monkeypatch.chdir(root)  # as the served deployment runs: params.yaml of the project
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    result = opt_pipeline(config_file="params.yaml")
    assert set(result["data"]) == {"ingest", "validate", "version"}
    assert set(result["training"]) == {
        "prepare",
        "image_tokenizer",
        "probe",
        "pretrain",
        "evaluate",
        *(f"finetune@{task}" for task in TASK_NAMES),
    }
    assert set(result["training"]["evaluate"]) == set(TASK_NAMES)
    assert (root / "metrics/package.json").exists()
    assert "ingest" not in sh("dvc", "status", "ingest", cwd=root)  # `version` recorded the raw data in dvc.lock
    before = output_times(root)
    opt_pipeline(config_file="params.yaml")
    assert output_times(root) == before  # every stage came from the cache


def test_failed_validation_stops_the_flow_before_training(tmp_path):
    overrides = [f"paths.root={tmp_path}", *TINY, "validate.min_records=1000"]
    with pytest.raises(StageFailed, match="validation failed"):
        opt_pipeline(overrides)
    assert (tmp_path / "reports/validation.json").exists()
    assert not (tmp_path / "data/prepared").exists()
    assert not (tmp_path / "models").exists()


def test_data_flow_outside_a_dvc_project_needs_versioning_off(tmp_path):
    overrides = [f"paths.root={tmp_path}", *TINY]
    with pytest.raises(StageFailed, match="not a DVC project"):
        data_flow(overrides)
    result = data_flow([*overrides, "versioning.backend=none"])
    assert result["validate"]["failed"] == [] and result["version"] == {"backend": "none", "recorded": False}


def test_stage_reruns_only_when_inputs_or_outputs_change(tmp_path):
    overrides = [f"paths.root={tmp_path}", *TINY]
    stage_flow("ingest", overrides)
    stage_flow("validate", overrides)
    before = output_times(tmp_path)
    stage_flow("ingest", overrides)
    stage_flow("validate", overrides)
    assert output_times(tmp_path) == before  # both cached: nothing rewritten
    (tmp_path / "reports/validation.md").unlink()
    stage_flow("validate", overrides)  # its output was deleted: runs again
    assert (tmp_path / "reports/validation.md").exists()
    stage_flow("validate", [*overrides, "validate.min_caption_words=2"])  # a validate param changed
    assert (tmp_path / "reports/validation.json").stat().st_mtime_ns != before[tmp_path / "reports/validation.json"]


def test_generation_fans_out_through_a_prefect_task_runner_with_the_same_bytes(tmp_path):
    common = ["data.n=34", "data.workers=2", "data.seed=3"]
    run_stage("ingest", [f"paths.root={tmp_path / 'local'}", *common])
    stage_flow("ingest", [f"paths.root={tmp_path / 'fanned'}", *common, "data.executor=prefect"])
    local, fanned = file_hashes(tmp_path / "local/data/raw"), file_hashes(tmp_path / "fanned/data/raw")
    assert len(local) == 34 * 2 + 2 and fanned == local
