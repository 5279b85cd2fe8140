"""A self-contained copy of one evaluated run: everything inference needs, nothing else.

The bundle is a run root (the layout of opt.artifacts), so the library's own loaders read it
unchanged (`load_task_model`, `load_vq`, `TaskContext.tokenizer`, `training_split`):

    config.yaml                      the run's resolved config, paths reset to the defaults
    bundle.json                      candidate, fine-tuned tasks, gallery split
    models/pretrain/                 copied: config.json + model.safetensors
    models/finetune/<task>/          copied: model.safetensors + state.json of each fine-tuned task;
                                     state.json alone for a task that was not (fresh heads)
    models/image_tokenizer/          vq.safetensors (VQ decoder for text-to-image)
    data/prepared/                   params.json (mel settings and stats), tokenizer.json, <gallery split>/
    metrics/eval.json                the metrics that chose this run

Fine-tuned tasks keep the state (vocabularies) they were trained with: nothing is recomputed
from the current data. Only a task without fine-tuned weights gets its state fitted here.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from opt import artifacts
from opt.config import PathsConfig, to_yaml, typed
from opt.data.dataset import PARAMS
from opt.data.text import TOKENIZER_FILE
from opt.tasks import TASK_NAMES

BUNDLE_FILE = "bundle.json"
CONFIG_FILE = "config.yaml"
FORMAT_VERSION = 2


@dataclass
class Candidate:
    """One evaluated run: its name, its models folder and its metrics/eval.json."""

    name: str
    models: Path
    metrics: Path

    def eval_results(self) -> dict:
        return json.loads(self.metrics.read_text())


def candidate_config(cfg, candidate: Candidate):
    """The run's config reading its models from the candidate's folder (data stay the run's)."""
    out = typed(OmegaConf.to_container(cfg, resolve=True))
    out.paths.models = str(Path(candidate.models).resolve())
    return out


def copy_models(cfg, source, target) -> list[str]:
    """Pre-trained model, VQ weights and every task folder, from `source` to `target` configs'
    folders; returns the fine-tuned tasks."""
    from opt.tasks import get_task
    from opt.tasks.base import TaskContext

    artifacts.require(artifacts.pretrained_dir(source) / artifacts.WEIGHTS, "pre-trained model", "opt pretrain")
    shutil.copytree(artifacts.pretrained_dir(source), artifacts.pretrained_dir(target))
    artifacts.image_tokenizer_dir(target).mkdir(parents=True)
    shutil.copy2(artifacts.vq_file(source), artifacts.image_tokenizer_dir(target) / artifacts.VQ_WEIGHTS)
    tuned = [t for t in TASK_NAMES if artifacts.is_finetuned(source, t)]
    for task in TASK_NAMES:
        if task in tuned:
            artifacts.task_state(source, task)  # it loads: saved, and made with this run's tokenizer
            shutil.copytree(artifacts.finetuned_dir(source, task), artifacts.finetuned_dir(target, task))
        else:
            state = get_task(task).fit_state(TaskContext(cfg))
            artifacts.save_task_state(artifacts.finetuned_dir(target, task), artifacts.stamped(cfg, state))
    return tuned


def copy_prepared(prepared: Path, split: str, out: Path) -> int:
    """params.json, tokenizer.json and the gallery split's shards -> out/data/prepared; returns its items."""
    if not (prepared / split).is_dir():
        raise FileNotFoundError(f"no prepared split {split!r} at {prepared}: set serve.gallery_split")
    target = out / PathsConfig.prepared
    target.mkdir(parents=True)
    for name in (PARAMS, TOKENIZER_FILE):
        shutil.copy2(prepared / name, target / name)
    shutil.copytree(prepared / split, target / split)
    return int(json.loads((prepared / split / "shards.json").read_text())["count"])


def bundled_config(cfg):
    """The run's config with every path back at its default (the bundle is the root)."""
    out = typed(OmegaConf.to_container(cfg, resolve=True))
    out.paths = OmegaConf.structured(PathsConfig)
    return out


def write_bundle(cfg, candidate: Candidate, out: Path) -> dict:
    """Copy what inference needs from `candidate` (data from the run of `cfg`) into `out` (new or empty)."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    target = bundled_config(cfg)
    target.paths.root = str(out)
    tuned = copy_models(cfg, candidate_config(cfg, candidate), target)
    split = str(cfg.serve.gallery_split)
    items = copy_prepared(artifacts.prepared_dir(cfg), split, out)
    (out / CONFIG_FILE).write_text(to_yaml(bundled_config(cfg)))
    (out / "metrics").mkdir()
    shutil.copy2(candidate.metrics, out / "metrics" / "eval.json")
    info = {
        "format_version": FORMAT_VERSION,
        "candidate": candidate.name,
        "finetuned": tuned,
        "gallery": {"split": split, "items": items},
    }
    (out / BUNDLE_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


def read_bundle(root: Path) -> tuple[object, dict]:
    """(config with paths.root = the bundle, bundle.json) of a bundle folder."""
    root = Path(root).resolve()
    cfg = typed(OmegaConf.load(root / CONFIG_FILE))
    cfg.paths.root = str(root)
    return cfg, json.loads((root / BUNDLE_FILE).read_text())
