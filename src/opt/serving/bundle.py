"""A self-contained copy of one evaluated run: everything inference needs, nothing else.

The bundle mirrors a run root, so the library's own loaders read it unchanged
(`load_task_model`, `load_vq`, `TaskContext.tokenizer`, `training_split`):

    config.yaml                      the run's resolved config, paths reset to the defaults
    bundle.json                      tasks with fine-tuned weights, label/answer vocabularies, gallery split
    models/pretrain/                 config.json + model.safetensors
    models/finetune/<task>/          model.safetensors of each fine-tuned task
    models/image_tokenizer/          vq.safetensors (VQ decoder for text-to-image)
    data/prepared/                   params.json (mel settings and stats), tokenizer.json, <gallery split>/
    metrics/eval.json                the metrics that chose this run

Vocabularies that tasks derive from the train split (classification labels, VQA answers) are
computed here, so the bundle never carries the train split.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from opt.config import PathsConfig, path, to_yaml, typed
from opt.data.dataset import PARAMS
from opt.data.text import TOKENIZER_FILE
from opt.tasks import TASK_NAMES

BUNDLE_FILE = "bundle.json"
CONFIG_FILE = "config.yaml"
FORMAT_VERSION = 1


@dataclass
class Candidate:
    """One evaluated run: its name, its models folder and its metrics/eval.json."""

    name: str
    models: Path
    metrics: Path

    def eval_results(self) -> dict:
        return json.loads(self.metrics.read_text())


def train_vocabularies(cfg) -> dict:
    """Classification labels and VQA scene/answer vocabularies, from the run's train split."""
    from opt.tasks.classification import record_labels
    from opt.tasks.questions import answer_vocab, scene_vocab
    from opt.train.data import training_split

    records = training_split(cfg, "train", with_codes=False).records()
    scene = scene_vocab(records)
    return {
        "classification": sorted({lb for r in records for lb in record_labels(r)}),
        "vqa": {"scene": scene, "answers": answer_vocab(records, scene)},
    }


def copy_models(models: Path, out: Path) -> list[str]:
    """Pre-trained weights, fine-tuned task weights and the VQ tokenizer -> out/models; returns fine-tuned tasks."""
    pretrain = models / "pretrain"
    for name in ("config.json", "model.safetensors"):
        if not (pretrain / name).exists():
            raise FileNotFoundError(f"no pre-trained model at {pretrain}: run `opt pretrain` first")
    target = out / "models"
    (target / "pretrain").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(pretrain / name, target / "pretrain" / name)
    vq = models / "image_tokenizer" / "vq.safetensors"
    if not vq.exists():
        raise FileNotFoundError(f"no image tokenizer at {vq}: run `opt image_tokenizer` first")
    (target / "image_tokenizer").mkdir()
    shutil.copy2(vq, target / "image_tokenizer" / "vq.safetensors")
    tuned = [t for t in TASK_NAMES if (models / "finetune" / t / "model.safetensors").exists()]
    for task in tuned:
        (target / "finetune" / task).mkdir(parents=True)
        shutil.copy2(models / "finetune" / task / "model.safetensors", target / "finetune" / task / "model.safetensors")
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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tuned = copy_models(candidate.models, out)
    split = str(cfg.serve.gallery_split)
    items = copy_prepared(path(cfg, "prepared"), split, out)
    (out / CONFIG_FILE).write_text(to_yaml(bundled_config(cfg)))
    (out / "metrics").mkdir()
    shutil.copy2(candidate.metrics, out / "metrics" / "eval.json")
    info = {
        "format_version": FORMAT_VERSION,
        "candidate": candidate.name,
        "finetuned": tuned,
        "gallery": {"split": split, "items": items},
        "vocab": train_vocabularies(cfg),
    }
    (out / BUNDLE_FILE).write_text(json.dumps(info, indent=1) + "\n")
    return info


def read_bundle(root: Path) -> tuple[object, dict]:
    """(config with paths.root = the bundle, bundle.json) of a bundle folder."""
    root = Path(root).resolve()
    cfg = typed(OmegaConf.load(root / CONFIG_FILE))
    cfg.paths.root = str(root)
    return cfg, json.loads((root / BUNDLE_FILE).read_text())
