"""The pipeline's stages: name -> `stage(cfg) -> result`, shared by CLI, DVC, Prefect and tests."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path

# name -> ("module:function", one-line help). Imported lazily so `opt --help` stays fast.
STAGES: dict[str, tuple[str, str]] = {
    "ingest": ("opt.data.ingest:ingest", "build data/raw from the built-in generator or Localized Narratives"),
    "validate": ("opt.data.validate:validate", "check data/raw with a Great Expectations suite"),
    "prepare": ("opt.data.prepare:prepare", "tokenizer, image tensors and log-mel shards in data/prepared"),
    "image_tokenizer": (
        "opt.train.image_tokenizer:image_tokenizer",
        "train the VQ-VAE image tokenizer, write VQ codes",
    ),
    "probe": ("opt.probe:probe", "train the attribute probe that judges text-to-image (models/probe/)"),
    "pretrain": ("opt.train.pretrain:pretrain", "pre-train OPT with the configured pretext tasks"),
    "finetune": ("opt.tasks.run:finetune", "fine-tune the pre-trained model on one downstream task (task=NAME)"),
    "evaluate": ("opt.tasks.run:evaluate", "evaluate every downstream task on test and test_compositional"),
    "compare": ("opt.tasks.compare:compare", "the paper's comparisons: pre-training variants x every task"),
    "package": ("opt.serving.package:package", "best evaluated model -> BentoML model store -> Bento (bentofile.yaml)"),
    "version": ("opt.versions:version", "record data/raw (and data/sources) as a data version (DVC or lakeFS)"),
}


class StageFailed(RuntimeError):
    """A stage finished and judged its result bad (e.g. validation failed); exit non-zero."""


def get_stage(name: str) -> Callable:
    module, function = STAGES[name][0].split(":")
    return getattr(import_module(module), function)


def run_stage(name: str, overrides: list[str] | None = None, config_file: str | Path | None = None):
    """Compose the config (or read `config_file`), save it resolved, and run one stage."""
    from opt.config import load_config, save_resolved

    cfg = load_config(overrides, config_file)
    save_resolved(cfg, name)
    return get_stage(name)(cfg)
