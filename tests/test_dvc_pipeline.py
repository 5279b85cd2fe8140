"""`dvc repro` runs every stage of dvc.yaml in a scratch copy of the project on a tiny
configuration, a second `dvc repro` changes nothing, a code edit dirties the stages that import it,
and `dvc exp run -S` sweeps a parameter."""

import csv
import io
import json
import time

import pytest
from scratch import ENV, TINY, make_scratch_project, sh

# Each runs the whole tiny pipeline (the sweep twice); 600 s fired on a loaded 2-core machine.
pytestmark = pytest.mark.timeout(2400)

STAGES = (
    "ingest",
    "validate",
    "prepare",
    "image_tokenizer",
    "probe",
    "pretrain",
    "finetune@retrieval",
    "finetune@text_to_image",
    "evaluate",
    "package",
)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = make_scratch_project(tmp_path_factory.mktemp("dvc") / "project")
    env = {**ENV, "BENTOML_HOME": str(root.parent / "bentoml")}  # the model store lives outside the project
    return root, env


@pytest.mark.slow  # the whole tiny pipeline through dvc (2 min on 2 cores); the sweep below reuses its run
def test_repro_runs_every_stage_then_is_a_no_op(project):
    root, env = project
    started = time.perf_counter()
    first = sh("dvc", "repro", cwd=root, env=env)
    print(f"dvc repro (tiny): {time.perf_counter() - started:.1f} s")
    for stage in STAGES:
        assert f"Running stage '{stage}'" in first
    for output in (
        "data/prepared/params.json",
        "models/pretrain/model.safetensors",
        "metrics/eval.json",
        "metrics/package.json",
        "dvc.lock",
    ):
        assert (root / output).exists(), output
    started = time.perf_counter()
    second = sh("dvc", "repro", cwd=root, env=env)
    print(f"dvc repro (no-op): {time.perf_counter() - started:.1f} s")
    assert "Running stage" not in second
    assert "up to date" in sh("dvc", "status", cwd=root, env=env)

    # Editing code dirties the stages whose code imports the file, not the stages before them.
    schedule = root / "src/opt/train/schedule.py"
    original = schedule.read_text()
    schedule.write_text(original + "# edited\n")
    changed = set(json.loads(sh("dvc", "status", "--json", cwd=root, env=env)))
    assert {"image_tokenizer", "pretrain", "finetune@retrieval", "evaluate", "package"} <= changed, changed
    assert not changed & {"ingest", "validate", "prepare"}, changed
    schedule.write_text(original)
    assert "up to date" in sh("dvc", "status", cwd=root, env=env)


@pytest.mark.slow
def test_exp_run_sweeps_a_parameter(project):
    root, env = project
    sh("git", "add", "-A", cwd=root, env=env)
    sh("git", "commit", "-q", "-m", "tiny pipeline", cwd=root, env=env)
    overrides = [arg for item in TINY for arg in ("-S", item)]
    # An evaluate-only parameter: the sweep reruns evaluate and package, not the six fine-tunings.
    sh("dvc", "exp", "run", "--queue", *overrides, "-S", "task.image_temperature=0.7,1.0", cwd=root, env=env)
    sh("dvc", "exp", "run", "--run-all", cwd=root, env=env)
    table = list(csv.DictReader(io.StringIO(sh("dvc", "exp", "show", "--csv", cwd=root, env=env))))
    experiments = [row for row in table if row["typ"].startswith("branch")]
    assert sorted(float(row["task.image_temperature"]) for row in experiments) == [0.7, 1.0]
    assert all(row["State"] == "Success" for row in experiments), experiments
