"""The Hydra configs, the typed schema and DVC's params.yaml agree."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from opt.config import CONFIG_DIR, OPTConfig, load_config, root_dir, to_yaml

GROUPS = [
    ("paths", "default"),
    ("data", "synth"),
    ("ingest", "default"),
    ("validate", "default"),
    ("prepare", "default"),
    ("model", "tiny"),
    ("model", "small"),
    ("model", "base"),
    ("image_tokenizer", "default"),
    ("objectives", "all"),
    ("trainer", "default"),
    ("task", "default"),
    ("versioning", "default"),
    ("serve", "default"),
]


@pytest.mark.parametrize("group,option", GROUPS)
def test_each_group_file_spells_out_every_schema_key(group, option):
    schema = OmegaConf.structured(OPTConfig)[group]
    assert key_paths(OmegaConf.load(CONFIG_DIR / group / f"{option}.yaml")) == key_paths(schema)


def key_paths(node, prefix="") -> set[str]:
    """Every key of a config, nested ones as dotted paths."""
    keys = set()
    for key in node.keys():
        keys.add(prefix + str(key))
        if OmegaConf.is_dict(node._get_node(key)):
            keys |= key_paths(node[key], f"{prefix}{key}.")
    return keys


def leaves(node, prefix="") -> dict:
    """Every leaf of a plain (to_container) config by dotted path; lists are leaves."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[prefix + str(key)] = value
    return out


def test_schema_defaults_are_the_default_composition():
    """A default lives in the schema (what code gets without Hydra) and in the group file configs/config.yaml
    picks; the two must be the same value, so the composed default run is also what `OPTConfig()` holds."""
    schema = leaves(OmegaConf.to_container(OmegaConf.structured(OPTConfig)))
    composed = leaves(OmegaConf.to_container(load_config([])))
    differ = []
    for key in sorted(schema.keys() | composed.keys()):
        ours, theirs = schema.get(key, "<absent>"), composed.get(key, "<absent>")
        if type(ours) is not type(theirs) or ours != theirs:  # 1 == 1.0 == True: the type counts too
            differ.append(f"{key}: schema {ours!r}, configs/ {theirs!r}")
    assert not differ, f"{len(differ)} defaults declared twice with different values:\n" + "\n".join(differ)


def test_the_service_checks_requests_against_the_schema_limits():
    """One dataclass of request limits: the service's is `ServeLimits`, filled from `serve.limits`."""
    from opt.config import ServeLimits
    from opt.serving.inputs import limits_from_config

    node = load_config(["serve.limits.max_text_chars=5", "serve.limits.max_top_k=3"]).serve.limits
    limits = limits_from_config(node)
    assert type(limits) is ServeLimits and limits == ServeLimits(max_text_chars=5, max_top_k=3)


def test_params_yaml_is_the_default_composition():
    """DVC stages read params.yaml; it must hold what `opt <stage>` composes by default."""
    params = Path(CONFIG_DIR).parent / "params.yaml"
    assert load_config([], params) == load_config([]), "run `opt config -o params.yaml`"
    assert to_yaml(load_config([])) in params.read_text()


def test_overrides_are_typed_and_unknown_keys_rejected():
    cfg = load_config(["data.n=7", "prepare.n_mels=40"])
    assert (cfg.data.n, cfg.prepare.n_mels) == (7, 40)
    with pytest.raises(Exception, match="data.nope"):
        load_config(["data.nope=1"])
    with pytest.raises(ValueError, match="data.n"):
        load_config(["data.n=seven"])


def test_config_file_and_composition_agree_on_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(to_yaml(load_config([])))
    overrides = ["data.n=11", f"paths.root={tmp_path}"]
    assert load_config(overrides, params) == load_config(overrides)


def test_paths_root_moves_everything(tmp_path, monkeypatch):
    cfg = load_config([f"paths.root={tmp_path}"])
    assert root_dir(cfg) == tmp_path
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert root_dir(load_config([])) == tmp_path  # the project you are in, as DVC runs stages


TINY_BUDGETS = ("data.n", "image_tokenizer.steps", "trainer.max_steps", "task.steps", "task.probe_steps", "model.dim")


def test_the_tiny_experiment_scales_every_budget_down():
    """`experiment=tiny` shrinks every stage's budget (a stage left at its default would take minutes)."""
    default, tiny = load_config([]), load_config(["experiment=tiny"])
    for key in TINY_BUDGETS:
        assert OmegaConf.select(tiny, key) < OmegaConf.select(default, key), key
    assert tiny.model.name == "tiny"
    assert load_config(["experiment=tiny", "trainer.max_steps=7"]).trainer.max_steps == 7  # overrides still win


def test_wide_contrastive_fuses_as_many_as_the_default_and_contrasts_a_wider_batch():
    from opt.model.pretext import fused_count

    default, wide = load_config([]), load_config(["experiment=wide_contrastive"])
    assert wide.trainer.batch_size > default.trainer.batch_size
    fused = fused_count(default.trainer.batch_size, default.objectives.fused_share)
    assert fused < default.trainer.batch_size  # the default already contrasts more samples than it fuses
    assert fused_count(wide.trainer.batch_size, wide.objectives.fused_share) == fused


def test_the_long_experiment_only_raises_budgets():
    """`experiment=long` changes nothing but training budgets, and raises each of them."""
    from opt.check import result_config

    default, long = result_config(load_config([])), result_config(load_config(["experiment=long"]))
    changed = {k for k in default if default[k] != long.get(k)}
    assert changed == {"trainer.max_steps", "task.step_factors.captioning"}
    assert all(long[k] > default[k] for k in changed)


def test_a_batch_factor_scales_the_tasks_batch_and_lr_together():
    """A task's entry in task.batch_factors multiplies its batch and its lr; other tasks keep the shared ones."""
    from opt.tasks.run import task_trainer_config

    overrides = ["task.batch_size=8", "task.lr=0.001", "task.batch_factors={retrieval: 3}"]
    retrieval = task_trainer_config(load_config([*overrides, "task.name=retrieval"]))
    vqa = task_trainer_config(load_config([*overrides, "task.name=vqa"]))
    assert (retrieval.batch_size, retrieval.lr) == (24, pytest.approx(0.003))
    assert (vqa.batch_size, vqa.lr) == (8, pytest.approx(0.001))
