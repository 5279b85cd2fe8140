"""Stage cache keys: what makes a stage rerun outside DVC (Prefect caches on these keys)."""

import os
import shutil

from opt import stage_cache
from opt.code_deps import code_digest, import_closure, stage_code
from opt.config import PROJECT_ROOT, load_config
from opt.stage_cache import _names, cache_key, dvc_stages, outputs_intact, record_run, resolve, uncovered
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


def test_every_stage_depends_on_all_the_code_it_imports():
    """dvc.yaml's deps of each stage cover its import closure, so a code change reruns it
    (`python -c "from opt.stage_cache import print_uncovered; print_uncovered()"` lists gaps)."""
    gaps = uncovered()
    assert not gaps, "dvc.yaml deps miss code the stage imports:\n" + "\n".join(
        f"  {name}: {' '.join(files)}" for name, files in gaps.items()
    )


def test_code_deps_exist():
    """A renamed or deleted module must leave dvc.yaml too (`dvc repro` refuses missing deps)."""
    missing = {
        f"{name}: {dep}"
        for name, stage in dvc_stages().items()
        for dep, _ in _names(stage.get("deps"))
        if dep.startswith("src/") and not (PROJECT_ROOT / dep).exists()
    }
    assert not missing, sorted(missing)


def test_import_closure_follows_every_kind_of_import(tmp_path):
    files = {
        "opt/__init__.py": "",
        "opt/cli.py": "import opt.unused_by_stages\n",
        "opt/stages.py": "",
        "opt/pkg/__init__.py": "from . import sibling\n",
        "opt/pkg/stage.py": (
            "import os\nfrom opt.stages import StageFailed\nfrom .helper import h\n"
            "def run():\n    from opt.lazy import x\n    return import_module('opt.dynamic')\n"
            "def task(name):\n    return import_module(f'opt.tasks.{name}')\n"
        ),
        "opt/pkg/helper.py": "from opt import other\nh = 1\n",
        "opt/pkg/sibling.py": "",
        "opt/other.py": "",
        "opt/lazy.py": "",
        "opt/dynamic.py": "",
        "opt/tasks/a.py": "",
        "opt/tasks/b.py": "",
        "opt/unused.py": "",
        "opt/unused_by_stages.py": "",
    }
    for name, text in files.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text(text)
    closure = {file.removeprefix("src/opt/") for file in import_closure("opt.pkg.stage", tmp_path)}
    assert closure == {
        "__init__.py",
        "pkg/__init__.py",
        "pkg/stage.py",
        "pkg/helper.py",
        "pkg/sibling.py",
        "other.py",
        "lazy.py",
        "dynamic.py",
        "tasks/a.py",
        "tasks/b.py",
    }  # not the harness (cli.py, stages.py) nor what only it imports


def test_editing_imported_code_changes_the_keys_of_the_stages_that_import_it(tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(PROJECT_ROOT / "dvc.yaml", project / "dvc.yaml")
    monkeypatch.setattr(stage_cache, "PROJECT_ROOT", project)
    edited = project / "src/opt/train/schedule.py"
    assert "src/opt/train/schedule.py" in stage_code("image_tokenizer", project)
    assert "src/opt/train/schedule.py" not in stage_code("ingest", project)
    cfg = load_config([f"paths.root={tmp_path / 'run'}"])
    before = {name: cache_key(name, cfg) for name in ("image_tokenizer", "pretrain", "ingest")}
    assert before == {name: cache_key(name, cfg) for name in before}  # stable while nothing changes

    text = edited.read_text()
    edited.write_text(text + "# a comment\n")
    after = {name: cache_key(name, cfg) for name in before}
    assert after["image_tokenizer"] != before["image_tokenizer"]
    assert after["pretrain"] != before["pretrain"]
    assert after["ingest"] == before["ingest"]

    # the same size and mtime, other bytes: still seen (the stat key alone cannot tell)
    stat = edited.stat()
    edited.write_text(edited.read_text().replace("# a comment", "# b comment"))
    os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache_key("image_tokenizer", cfg) not in (before["image_tokenizer"], after["image_tokenizer"])
    edited.write_text(text)
    assert cache_key("image_tokenizer", cfg) == before["image_tokenizer"]


def test_code_digest_follows_the_closure_of_a_module_and_nothing_else(tmp_path):
    files = {"opt/__init__.py": "", "opt/a.py": "from opt import b\n", "opt/b.py": "x = 1\n", "opt/c.py": "y = 1\n"}
    for name, text in files.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / name).write_text(text)
    before = code_digest("opt.a", tmp_path)
    (tmp_path / "src/opt/c.py").write_text("y = 2\n")  # not imported by opt.a
    assert code_digest("opt.a", tmp_path) == before
    (tmp_path / "src/opt/b.py").write_text("x = 2\n")  # imported by opt.a
    assert code_digest("opt.a", tmp_path) != before
    (tmp_path / "src/opt/b.py").write_text("x = 1\n")
    assert code_digest("opt.a", tmp_path) == before
