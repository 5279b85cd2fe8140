"""Where a run keeps what one stage hands to the next, and the one save and load of each.

Under the run's folders (`opt.config.PathsConfig`; a serving bundle is a run root holding a
subset, see opt.serving.bundle):

    data/prepared/                  prepare: params.json, tokenizer.json, <split>/ shards
    models/image_tokenizer/         vq.safetensors; codes/<split>.npy (int16 (N, grid*grid))
    models/pretrain/                model.safetensors; config.json (model config and dims)
    models/finetune/<task>/         model.safetensors (body + heads); state.json (the task's
                                    vocabularies, the tokenizer's sha256): loads never recompute it
    models/probe/                   probe.safetensors; probe.json (what it was trained on)

Every weight file goes through `opt.train.checkpoint.save_weights`, which refuses non-finite
tensors. A missing artifact raises `MissingArtifact`, naming the command that makes it.
Resumable training checkpoints (checkpoints/) belong to the trainer (opt.train.checkpoint).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from opt.config import path
from opt.data.dataset import PARAMS
from opt.data.splits import TrainingSplit
from opt.data.text import TOKENIZER_FILE, CaptionTokenizer
from opt.files import sha256_file
from opt.train.checkpoint import load_weights, save_weights

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "config.json"
TASK_STATE = "state.json"
VQ_WEIGHTS = "vq.safetensors"
CODES_DIR = "codes"
PROBE_WEIGHTS, PROBE_META = "probe.safetensors", "probe.json"


class MissingArtifact(FileNotFoundError):
    """An input stage has not run (or ran with other data); the message names its command."""

    def __init__(self, what: str, where: Path, command: str):
        super().__init__(f"no {what} at {where}: run `{command}` first")


def require(file: Path, what: str, command: str) -> Path:
    if not file.exists():
        raise MissingArtifact(what, file, command)
    return file


# ---- prepared data ---------------------------------------------------------------------------
def prepared_dir(cfg) -> Path:
    return path(cfg, "prepared")


def load_tokenizer(cfg) -> CaptionTokenizer:
    return CaptionTokenizer.load(require(prepared_dir(cfg) / TOKENIZER_FILE, "tokenizer", "opt prepare"))


def tokenizer_identity(cfg) -> str:
    """sha256 of the run's tokenizer.json: fine-tuned text heads are only valid with this one."""
    return sha256_file(require(prepared_dir(cfg) / TOKENIZER_FILE, "tokenizer", "opt prepare"))


def prepared_identity(cfg) -> dict:
    """Content hash of the prepared features' params.json (it holds the manifest's sha256)."""
    return {"prepared": sha256_file(require(prepared_dir(cfg) / PARAMS, "prepared data", "opt prepare"))}


def training_split(cfg, split: str, with_codes: bool = True) -> TrainingSplit:
    """A prepared split; with the VQ codes of its images unless `with_codes` is False."""
    require(prepared_dir(cfg) / split, f"prepared split {split!r}", "opt prepare")
    codes = codes_file(cfg, split) if with_codes else None
    if codes is not None:
        require(codes, "VQ codes", "opt image_tokenizer")
    return TrainingSplit(prepared_dir(cfg), split, codes)


# ---- image tokenizer -------------------------------------------------------------------------
def image_tokenizer_dir(cfg) -> Path:
    return path(cfg, "models") / "image_tokenizer"


def codes_file(cfg, split: str) -> Path:
    return image_tokenizer_dir(cfg) / CODES_DIR / f"{split}.npy"


def vq_file(cfg) -> Path:
    return require(image_tokenizer_dir(cfg) / VQ_WEIGHTS, "image tokenizer", "opt image_tokenizer")


def vq_identity(cfg) -> str:
    return sha256_file(vq_file(cfg))


def save_image_tokenizer(cfg, vq, codes: dict[str, np.ndarray]) -> Path:
    """The VQ weights and the code grid of every split (replacing what was there)."""
    out = image_tokenizer_dir(cfg)
    shutil.rmtree(out, ignore_errors=True)
    (out / CODES_DIR).mkdir(parents=True)
    save_weights(vq.state_dict(), out / VQ_WEIGHTS)
    for split, grid in codes.items():
        np.save(out / CODES_DIR / f"{split}.npy", grid)
    return out


def load_vq(cfg):
    """The trained VQ image tokenizer, in eval mode."""
    from opt.model.vq import build_vq

    vq = build_vq(cfg)
    vq.load_state_dict(load_weights(vq_file(cfg)))
    return vq.eval()


# ---- pre-trained model -----------------------------------------------------------------------
def pretrained_dir(cfg) -> Path:
    return path(cfg, "models") / "pretrain"


def pretrained_identity(cfg) -> str:
    return sha256_file(require(pretrained_dir(cfg) / WEIGHTS, "pre-trained model", "opt pretrain"))


def save_pretrained(cfg, model) -> Path:
    """The weights plus config.json (model config and dims) to rebuild the model."""
    out = pretrained_dir(cfg)
    save_weights(model.state_dict(), out / WEIGHTS)
    config = {"model": OmegaConf.to_container(cfg.model), "dims": vars(model.dims)}
    (out / MODEL_CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True))
    return out


def load_pretrained(cfg, from_scratch: bool = False):
    """The pre-trained OPT (or, with `from_scratch`, a fresh one of the same shape and seed state).
    A model key its config.json lacks (saved before the key existed) takes the schema default,
    which new keys hold at the behaviour from before them."""
    from opt.model.config import ModelConfig
    from opt.model.opt import OPT, Dims

    saved = pretrained_dir(cfg)
    config = json.loads(require(saved / MODEL_CONFIG, "pre-trained model", "opt pretrain").read_text())
    model = OPT(OmegaConf.merge(OmegaConf.structured(ModelConfig), config["model"]), Dims(**config["dims"]))
    if not from_scratch:
        model.load_state_dict(load_weights(require(saved / WEIGHTS, "pre-trained model", "opt pretrain")))
    return model


# ---- fine-tuned tasks ------------------------------------------------------------------------
def finetuned_dir(cfg, task: str) -> Path:
    return path(cfg, "models") / "finetune" / task


def is_finetuned(cfg, task: str) -> bool:
    return (finetuned_dir(cfg, task) / WEIGHTS).exists()


def save_finetuned(cfg, task: str, weights: dict, state: dict) -> Path:
    """A task's weights and its state (vocabularies...), stamped with the tokenizer it used."""
    out = finetuned_dir(cfg, task)
    save_weights(weights, out / WEIGHTS)  # first: weights without a state fail to load, never the reverse
    save_task_state(out, stamped(cfg, state))
    return out


def stamped(cfg, state: dict) -> dict:
    """A task state with the identity of the tokenizer its text heads were made with."""
    return {**state, "tokenizer": tokenizer_identity(cfg)}


def save_task_state(folder: Path, state: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / TASK_STATE).write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")


def task_state(cfg, task: str) -> dict | None:
    """The saved state of a task (None when the run has none), checked against the run's tokenizer."""
    file = finetuned_dir(cfg, task) / TASK_STATE
    if not file.exists():
        return None
    state = json.loads(file.read_text())
    if state.get("tokenizer") != tokenizer_identity(cfg):
        raise ValueError(
            f"{file}: made with another tokenizer than {prepared_dir(cfg) / TOKENIZER_FILE}; "
            f"run `opt finetune task.name={task}` again"
        )
    return state


def load_finetuned_weights(cfg, task: str) -> dict:
    return load_weights(
        require(finetuned_dir(cfg, task) / WEIGHTS, f"fine-tuned {task}", f"opt finetune task.name={task}")
    )


# ---- text-to-image probe ---------------------------------------------------------------------
def probe_dir(cfg) -> Path:
    return path(cfg, "models") / "probe"


def saved_probe(cfg, meta: dict) -> dict | None:
    """The probe's weights when one was saved for exactly `meta` (its data and design), else None."""
    folder = probe_dir(cfg)
    if not (folder / PROBE_META).exists() or json.loads((folder / PROBE_META).read_text()) != meta:
        return None
    return load_weights(folder / PROBE_WEIGHTS)


def save_probe(cfg, weights: dict, meta: dict) -> Path:
    folder = probe_dir(cfg)
    save_weights(weights, folder / PROBE_WEIGHTS)
    (folder / PROBE_META).write_text(json.dumps(meta, indent=1))
    return folder
