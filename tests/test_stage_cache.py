"""Stage cache keys: what makes a stage rerun outside DVC (Prefect caches on these keys)."""

from opt.config import PROJECT_ROOT, load_config
from opt.stage_cache import cache_key, dvc_stages, outputs_intact, record_run, resolve
from opt.stages import STAGES


def test_dvc_yaml_declares_every_pipeline_stage():
    stages = dvc_stages()
    assert stages["finetune@vqa"]["cmd"] == "opt finetune --config params.yaml task.name=vqa"
    for name, stage in stages.items():
        command = name.split("@")[0]
        assert command in STAGES, f"dvc.yaml stage {name} has no `opt {command}`"
        assert stage["cmd"].startswith(f"opt {command} --config params.yaml")


def test_paths_follow_the_run_config(tmp_path):
    cfg = load_config([f"paths.root={tmp_path}", "paths.raw=elsewhere/raw"])
    assert resolve("data/raw", cfg) == tmp_path / "elsewhere/raw"
    assert resolve("metrics/eval.json", cfg) == tmp_path / "metrics/eval.json"
    assert resolve("src/opt/data/ingest.py", cfg) == PROJECT_ROOT / "src/opt/data/ingest.py"


def test_key_changes_with_stage_params_and_inputs_only(tmp_path):
    base = [f"paths.root={tmp_path}", "data.n=12"]
    raw = tmp_path / "data/raw"
    raw.mkdir(parents=True)
    (raw / "manifest.jsonl").write_text("{}\n")
    key = cache_key("validate", load_config(base))
    assert key == cache_key("validate", load_config(base))
    assert key == cache_key("validate", load_config([*base, "trainer.lr=0.5"]))  # not a validate param
    assert key != cache_key("validate", load_config([*base, "validate.min_records=3"]))
    (raw / "manifest.jsonl").write_text("{}\n{}\n")
    assert key != cache_key("validate", load_config(base))
    assert cache_key("finetune", load_config([*base, "task.name=vqa"])) != cache_key(
        "finetune", load_config([*base, "task.name=captioning"])
    )
    assert cache_key("compare", load_config(base)) is None  # not a dvc.yaml stage: never cached


def test_outputs_intact_until_an_output_changes(tmp_path):
    cfg = load_config([f"paths.root={tmp_path}"])
    assert not outputs_intact("validate", cfg)  # never ran here
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "validation.md").write_text("ok")
    (reports / "validation.json").write_text("{}")
    record_run("validate", cfg)
    assert outputs_intact("validate", cfg)
    (reports / "validation.json").write_text('{"edited": true}')
    assert not outputs_intact("validate", cfg)
    record_run("validate", cfg)
    (reports / "validation.md").unlink()
    assert not outputs_intact("validate", cfg)
