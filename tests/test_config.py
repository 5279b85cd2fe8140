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
