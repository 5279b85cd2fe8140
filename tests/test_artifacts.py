"""opt.artifacts owns every saved thing: a fine-tuned task's state (here the VQA answer list) goes
from fine-tuning to disk to the bundle to a served answer, and is never recomputed from data."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from opt.artifacts import MissingArtifact, finetuned_dir, load_pretrained, task_state
from opt.config import load_config, path
from opt.serving.bundle import Candidate, write_bundle
from opt.serving.runtime import Runtime
from opt.stages import run_stage
from opt.tasks import get_task
from opt.tasks.base import TaskContext
from opt.tasks.run import load_task_model

QUESTION = "what colour is the circle?"


@pytest.fixture(scope="module")
def vqa_run(pretrained_synth, tmp_path_factory):
    """A copy of the session's pre-trained run with VQA fine-tuned: (cfg, overrides)."""
    source, overrides = pretrained_synth
    root = tmp_path_factory.mktemp("vqa_run")
    for part in ("data/prepared", "models/pretrain", "models/image_tokenizer"):
        shutil.copytree(source / part, root / part)
    overrides = [o for o in overrides if not o.startswith("paths.root=")] + [f"paths.root={root}", "task.name=vqa"]
    run_stage("finetune", overrides)
    return load_config(overrides), overrides


def write_state(cfg, state: dict) -> None:
    (finetuned_dir(cfg, "vqa") / "state.json").write_text(json.dumps(state))


def served_answer(cfg, out) -> tuple[str, list[str]]:
    """Bundle the run into `out`, load it as the service does, answer one question about test item 0."""
    eval_json = out.parent / f"{out.name}-eval.json"
    eval_json.write_text("{}")
    write_bundle(cfg, Candidate("run", path(cfg, "models"), eval_json), out)
    runtime = Runtime(out)
    image = TaskContext(cfg).split("test")[0]["image"].numpy()
    return runtime.answer([(image, QUESTION)])[0]["answer"], runtime.tasks["vqa"].answers


def test_the_answer_list_travels_from_finetuning_to_the_served_answer(vqa_run, tmp_path):
    cfg, _ = vqa_run
    context = TaskContext(cfg)
    saved = task_state(cfg, "vqa")
    assert saved["answers"] == get_task("vqa").fit_state(context)["answers"]  # fitted once, at fine-tuning
    task = get_task("vqa")
    load_task_model(cfg, task, context)
    assert task.answers == saved["answers"]

    answer, served_list = served_answer(cfg, tmp_path / "bundle")
    assert served_list == saved["answers"] and answer in saved["answers"]

    # The same weights with the saved list reversed: were the list refitted from the data, nothing
    # would change; read from disk, the served answer is the reversed list's entry at the same class.
    try:
        write_state(cfg, {**saved, "answers": saved["answers"][::-1]})
        reversed_answer, reversed_list = served_answer(cfg, tmp_path / "bundle_reversed")
    finally:
        write_state(cfg, saved)
    assert reversed_list == saved["answers"][::-1]
    assert reversed_answer == reversed_list[saved["answers"].index(answer)]


def test_a_state_made_with_another_tokenizer_or_missing_does_not_load(vqa_run):
    cfg, _ = vqa_run
    saved = task_state(cfg, "vqa")
    try:
        write_state(cfg, {**saved, "tokenizer": "0" * 64})
        with pytest.raises(ValueError, match="another tokenizer"):
            load_task_model(cfg, get_task("vqa"), TaskContext(cfg))
        (finetuned_dir(cfg, "vqa") / "state.json").unlink()
        with pytest.raises(ValueError, match="no saved state"):
            load_task_model(cfg, get_task("vqa"), TaskContext(cfg))
    finally:
        write_state(cfg, saved)


def test_a_model_saved_before_a_model_key_existed_loads_with_its_default(pretrained_synth, tmp_path):
    """config.json of an older run lacks `model.image_stem`: it loads as the linear stem it was."""
    source, overrides = pretrained_synth
    shutil.copytree(Path(source) / "models" / "pretrain", tmp_path / "models" / "pretrain")
    saved = tmp_path / "models" / "pretrain" / "config.json"
    config = json.loads(saved.read_text())
    assert config["model"].pop("image_stem") == "linear"
    saved.write_text(json.dumps(config))
    cfg = load_config([o for o in overrides if not o.startswith("paths.root=")] + [f"paths.root={tmp_path}"])
    older, current = load_pretrained(cfg), load_pretrained(load_config(list(overrides)))
    assert older.cfg.image_stem == "linear"
    assert all(
        torch.equal(a, b) for a, b in zip(older.state_dict().values(), current.state_dict().values(), strict=True)
    )


def test_a_missing_input_names_the_command_that_makes_it(prepared_synth, tmp_path):
    """Pre-training a prepared run without an image tokenizer fails; it does not train one at a hidden budget."""
    source, overrides = prepared_synth
    shutil.copytree(source / "data" / "prepared", tmp_path / "data" / "prepared")
    overrides = [o for o in overrides if not o.startswith("paths.root=")] + [f"paths.root={tmp_path}"]
    with pytest.raises(MissingArtifact, match="run `opt image_tokenizer` first"):
        run_stage("pretrain", [*overrides, "trainer.max_steps=1"])
    assert not (tmp_path / "models" / "image_tokenizer").exists()


def test_untuned_tasks_fit_their_state_and_tuned_ones_read_it(vqa_run):
    cfg, _ = vqa_run
    context = TaskContext(cfg)
    task = get_task("classification")
    model = load_task_model(cfg, task, context)
    assert task_state(cfg, "classification") is None  # not fine-tuned here: fresh heads, state fitted now
    assert task.vocab == get_task("classification").fit_state(context)["labels"]
    assert model.heads["image"].out_features == len(task.vocab) > 0
