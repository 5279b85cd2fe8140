"""`opt pretrain`: pre-train OPT on the prepared train split with the configured pretext tasks.

From scratch by default; `trainer.init_from=PATH` starts from saved weights instead.
Writes checkpoints under checkpoints/pretrain/, the final weights and their config under
models/pretrain/, per-step losses to metrics/pretrain_losses.csv and the summary (with
zero-shot text->image retrieval on the test split) to metrics/pretrain.json.
"""

from __future__ import annotations

import json
import os
import shutil

from omegaconf import OmegaConf
from torch import nn

from opt.config import path
from opt.data.dataset import read_params
from opt.data.text import SPECIAL_TOKENS, TOKENIZER_FILE, CaptionTokenizer
from opt.files import sha256_file, write_metrics
from opt.model.masking import Draw
from opt.model.opt import OPT, Dims
from opt.model.pretrain import SpecialTokens, pretext_losses
from opt.train.checkpoint import load_weights, save_weights
from opt.train.data import CODES_DIR, image_tokenizer_dir, prepared_identity, training_split
from opt.train.image_tokenizer import image_tokenizer
from opt.train.retrieval import zero_shot_retrieval
from opt.train.seeding import seed_everything
from opt.train.trainer import Trainer, fingerprint


class PretrainObjective(nn.Module):
    """forward(batch, draw) -> every active pretext loss and `loss`."""

    def __init__(self, model: OPT, objectives, special: SpecialTokens):
        super().__init__()
        self.model, self.objectives, self.special = model, objectives, special

    def forward(self, batch: dict, draw: Draw) -> dict:
        return pretext_losses(self.model, batch, self.objectives, self.special, draw)


def model_dims(cfg) -> Dims:
    params = read_params(path(cfg, "prepared"))
    tokenizer = CaptionTokenizer.load(path(cfg, "prepared") / TOKENIZER_FILE)
    return Dims(
        tokenizer.vocab_size, params["image"]["size"], params["mel"]["n_mels"], cfg.image_tokenizer.codebook_size
    )


def build_model(cfg) -> OPT:
    """A fresh OPT with weights drawn from `trainer.seed` (or loaded from `trainer.init_from`)."""
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    model = OPT(cfg.model, model_dims(cfg))
    if cfg.trainer.init_from:
        model.load_state_dict(load_weights(cfg.trainer.init_from))
    return model


def save_model(cfg, model: OPT, name: str) -> None:
    """models/<name>/model.safetensors plus config.json (model config and dims) for reloading."""
    out = path(cfg, "models") / name
    save_weights(model.state_dict(), out / "model.safetensors")
    config = {"model": OmegaConf.to_container(cfg.model), "dims": vars(model.dims)}
    (out / "config.json").write_text(json.dumps(config, indent=1, sort_keys=True))


def ensure_image_tokenizer(cfg) -> None:
    """Pre-training needs VQ codes (MVM targets, image decoder); train the tokenizer if absent."""
    if not (image_tokenizer_dir(cfg) / CODES_DIR / "train.npy").exists():
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise FileNotFoundError("no image tokenizer: run `opt image_tokenizer` once before a torchrun pre-training")
        print("pretrain: no image tokenizer yet, training it first (as `opt image_tokenizer`)")
        image_tokenizer(cfg)


def pretrain(cfg, stop_at: int | None = None) -> dict:
    ensure_image_tokenizer(cfg)
    model = build_model(cfg)
    special = SpecialTokens(pad=0, mask=SPECIAL_TOKENS.index("[MASK]"), count=len(SPECIAL_TOKENS))
    run_dir = path(cfg, "checkpoints") / "pretrain"
    trainer = Trainer(
        PretrainObjective(model, cfg.objectives, special),
        training_split(cfg, "train"),
        cfg.trainer,
        run_dir,
        fingerprint=fingerprint(
            cfg,
            ("model", "objectives", "image_tokenizer", "prepare", "data"),
            cfg.trainer,
            {**prepared_identity(cfg), "image_tokenizer": sha256_file(image_tokenizer_dir(cfg) / "vq.safetensors")},
        ),
    )
    result = trainer.fit(stop_at=stop_at)
    if not trainer.world.main or trainer.step < cfg.trainer.max_steps:
        return result
    save_model(cfg, model, "pretrain")
    result["zero_shot"] = zero_shot_retrieval(model, training_split(cfg, "test"), trainer.device)
    write_metrics(cfg, "pretrain", result)
    if (run_dir / "losses.csv").exists():  # absent after 0 steps (the no-pre-training baseline)
        shutil.copy(run_dir / "losses.csv", path(cfg, "metrics") / "pretrain_losses.csv")
    print(
        f"pretrain: {result['step']} steps, final loss {result['final'].get('loss', float('nan')):.3f}, "
        f"zero-shot text->image R@1 {result['zero_shot']['text_to_image']['R@1']:.3f}"
    )
    return result
