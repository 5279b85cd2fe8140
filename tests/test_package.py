"""`opt package`: best-model selection, the bundle it imports into the BentoML store, the Bento."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from serving_fixtures import PROJECT, TEST_LIMITS, package_tiny, start_server, stop_server

from opt.config import load_config
from opt.files import metric_value
from opt.serving.bundle import Candidate
from opt.serving.package import bentoml_home, finite_candidates, select_best


def candidate(name: str) -> Candidate:
    return Candidate(name, Path(name), Path(name) / "eval.json")


def test_service_binds_to_loopback_by_default():
    # that configs/serve/default.yaml spells out every key (limits.*, batching.* too): tests/test_config.py
    assert load_config([]).serve.host == "127.0.0.1"


def test_metric_value_walks_dotted_paths_with_slashed_keys():
    results = {"retrieval": {"test": {"text_to_image/R@1": 0.5, "nan": math.nan}}, "a.b": {"c": 2}}
    assert metric_value(results, "retrieval.test.text_to_image/R@1") == 0.5
    assert metric_value(results, "a.b.c") == 2.0
    assert metric_value(results, "retrieval.test.missing") is None
    assert metric_value(results, "retrieval.test.nan") is None  # not a usable number
    assert metric_value(results, "retrieval.test") is None  # a dict, not a number


def write_candidate(root: Path, weight: float, r1: float) -> None:
    """A run at `root` with one-tensor pre-trained weights and an eval.json."""
    import torch
    from safetensors.torch import save_file

    (root / "models" / "pretrain").mkdir(parents=True)
    save_file({"w": torch.full((3,), weight)}, str(root / "models" / "pretrain" / "model.safetensors"))
    (root / "metrics").mkdir()
    (root / "metrics" / "eval.json").write_text(json.dumps({"retrieval": {"test": {"text_to_image/R@1": r1}}}))


@pytest.mark.parametrize("weight,r1", [(math.nan, 0.3), (1.0, math.inf)])
def test_package_refuses_a_model_whose_weights_or_metrics_are_not_finite(tmp_path, capsys, weight, r1):
    from opt.stages import StageFailed

    write_candidate(tmp_path, weight, r1)
    cfg = load_config([f"paths.root={tmp_path}"])
    with pytest.raises(StageFailed, match="finite"):
        finite_candidates(cfg)
    assert "refusing run" in capsys.readouterr().out
    write_candidate(tmp_path / "compare" / "full", 1.0, 0.2)  # a finite variant beside it is packaged instead
    assert [c.name for c, _ in finite_candidates(cfg)] == ["compare/full"]


def test_select_best_by_metric_and_mode():
    scored = [
        (candidate("a"), {"t": {"s": {"m": 0.2}}}),
        (candidate("b"), {"t": {"s": {"m": 0.7}}}),
        (candidate("c"), {"t": {"s": {}}}),
        (candidate("d"), {"t": {"s": {"m": 0.1}}}),
    ]
    best, value = select_best(scored, "t.s.m", "max")
    assert (best.name, value) == ("b", 0.7)
    best, value = select_best(scored, "t.s.m", "min")  # e.g. WER: lower is better
    assert (best.name, value) == ("d", 0.1)
    with pytest.raises(ValueError, match="no evaluated model"):
        select_best(scored, "t.s.other", "max")
    with pytest.raises(ValueError, match="max or min"):
        select_best(scored, "t.s.m", "best")


def test_bentoml_home_must_lie_outside_the_project(tmp_path, monkeypatch):
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "elsewhere"))  # bentoml_home() sets it
    cfg = load_config([f"paths.root={tmp_path}", f"serve.bentoml_home={tmp_path / 'bentoml'}"])
    with pytest.raises(ValueError, match="inside the project"):
        bentoml_home(cfg)


@pytest.fixture(scope="module")
def packaged(pretrained_synth, tmp_path_factory):
    return package_tiny(pretrained_synth, tmp_path_factory)


def test_package_imports_a_self_contained_model_and_builds_a_bento(packaged):
    result = packaged["result"]
    assert result["candidate"] == "run" and result["metric_value"] == 0.25
    assert result["model"].startswith("opt:") and result["bento"].startswith("opt_service:")
    script = (
        "import bentoml, json, sys; m = bentoml.models.get(sys.argv[1]); b = bentoml.bentos.get(sys.argv[2]);"
        "print(json.dumps({'path': m.path, 'meta': m.info.metadata, 'bento': b.path}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, result["model"], result["bento"]],
        env=packaged["env"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(out.stdout)
    meta, model = info["meta"], Path(info["path"])
    assert meta["metric"] == "retrieval.test.text_to_image/R@1" and meta["metrics"]["retrieval"]
    assert meta["data_version"].startswith(("dvc-md5:", "manifest-sha256:"))
    assert meta["git_revision"] and "model:" in meta["config"]
    for part in (
        "config.yaml",
        "bundle.json",
        "models/pretrain/model.safetensors",
        "models/pretrain/config.json",
        "models/finetune/retrieval/model.safetensors",
        "models/image_tokenizer/vq.safetensors",
        "data/prepared/params.json",
        "data/prepared/tokenizer.json",
        "data/prepared/train/shards.json",
    ):
        assert (model / part).exists(), part
    bundle = json.loads((model / "bundle.json").read_text())
    assert bundle["finetuned"] == ["retrieval"] and bundle["gallery"]["split"] == "train"
    run_state = packaged["root"] / "models" / "finetune" / "retrieval" / "state.json"
    assert (
        model / "models/finetune/retrieval/state.json"
    ).read_bytes() == run_state.read_bytes()  # copied, not refitted
    for task in ("classification", "vqa"):  # not fine-tuned: fresh heads, their state fitted once, at packaging
        state = json.loads((model / "models" / "finetune" / task / "state.json").read_text())
        assert state["labels" if task == "classification" else "answers"] and state["tokenizer"]
        assert not (model / "models" / "finetune" / task / "model.safetensors").exists()
    assert not (model / "data" / "prepared" / "test").exists()  # only the gallery split travels
    assert str(PROJECT) not in str(model)  # the store lives outside the project
    code = Path(info["bento"]) / "src"  # BentoML imports the service with this folder first on sys.path
    assert (code / "opt" / "serving" / "service.py").exists() and not (code / "src").exists()
    imported = subprocess.run(
        [sys.executable, "-c", "import opt; print(opt.__file__)"], cwd=code, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(imported).resolve() == (code / "opt" / "__init__.py").resolve()  # its own code, not the checkout's


def test_the_bento_serves_its_own_code_and_pinned_model(packaged, tmp_path):
    """`bentoml serve <bento>` from a folder outside the project: the Bento alone is enough."""
    import httpx

    bento, model = packaged["result"]["bento"], packaged["result"]["model"]
    proc, url = start_server(packaged["env"], tmp_path / "serve.log", target=bento, cwd=tmp_path)
    try:
        health = httpx.post(f"{url}/health", timeout=60)
        assert health.status_code == 200 and health.json()["model"] == model
        assert httpx.get(f"{url}/ui/", timeout=60).status_code == 200  # the demo page travels with the Bento
    finally:
        stop_server(proc)


def test_package_prefers_a_better_compare_variant(packaged, tmp_path):
    """A variant under compare/ with a higher metric wins; its own models are bundled."""
    root = packaged["root"]
    variant = root / "compare" / "full"
    try:
        (variant / "metrics").mkdir(parents=True)
        (variant / "models").symlink_to(root / "models", target_is_directory=True)
        (variant / "metrics" / "eval.json").write_text(json.dumps({"retrieval": {"test": {"text_to_image/R@1": 0.9}}}))
        out = subprocess.run(
            ["opt", "package", *packaged["overrides"], *TEST_LIMITS, "serve.build_bento=false"],
            cwd=PROJECT,
            env=packaged["env"],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        result = json.loads((root / "metrics" / "package.json").read_text())
        assert (result["candidate"], result["metric_value"], result["bento"]) == ("compare/full", 0.9, None)
    finally:
        import shutil

        shutil.rmtree(root / "compare", ignore_errors=True)
        (root / "metrics" / "package.json").write_text(json.dumps(packaged["result"]))
