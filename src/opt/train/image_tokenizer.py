"""`opt image_tokenizer`: train the VQ-VAE on the prepared train images, then write the code
grid of every image of every split, the weights, and reconstruction/codebook-usage metrics."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from opt.artifacts import prepared_dir, prepared_identity, save_image_tokenizer, training_split
from opt.config import path
from opt.data.manifest import SPLITS
from opt.data.splits import batches
from opt.files import write_metrics
from opt.model.vq import VQVAE, build_vq
from opt.train.seeding import seed_everything
from opt.train.trainer import Trainer, fingerprint


class VQObjective(nn.Module):
    def __init__(self, model: VQVAE):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, draw=None) -> dict:
        out = self.model(batch["image"])
        return {k: v for k, v in out.items() if k.endswith("loss")}


@torch.no_grad()
def encode_split(vq: VQVAE, dataset, batch_size: int = 128) -> tuple[np.ndarray, float]:
    """Codes (N, G) int16 of a split and its mean reconstruction MSE."""
    vq.eval()
    codes, errors = [], []
    for batch in batches(dataset, batch_size):
        index = vq.encode_codes(batch["image"])
        errors.append(((vq.decode_codes(index) - batch["image"]) ** 2).mean(dim=(1, 2, 3)))
        codes.append(index.to(torch.int16).numpy())
    return np.concatenate(codes), float(torch.cat(errors).mean())


def usage(codes: np.ndarray, size: int) -> dict:
    """Share of the codebook used and the perplexity of code frequencies."""
    counts = np.bincount(codes.reshape(-1).astype(np.int64), minlength=size)
    p = counts / counts.sum()
    nz = p[p > 0]
    return {"codebook_used": float((counts > 0).mean()), "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}


def image_tokenizer(cfg) -> dict:
    run_dir = path(cfg, "checkpoints") / "image_tokenizer"
    v = cfg.image_tokenizer
    train = training_split(cfg, "train", with_codes=False)
    batch_size = min(v.batch_size, len(train))  # a small dataset still trains
    tcfg = {
        **cfg.trainer,
        "max_steps": v.steps,
        "batch_size": batch_size,
        "lr": v.lr,
        "warmup_steps": min(20, v.steps),
        "weight_decay": 0.0,
        "compile": False,
        "checkpoint_every": v.steps,
        "grad_accum": 1,
        "length_buckets": 0,  # images have one size
    }
    seed_everything(cfg.trainer.seed, cfg.trainer.deterministic)
    vq = build_vq(cfg)
    tcfg = as_config(tcfg)
    Trainer(
        VQObjective(vq),
        train,
        tcfg,
        run_dir,
        fingerprint=fingerprint(cfg, ("image_tokenizer", "prepare", "data"), tcfg, prepared_identity(cfg)),
    ).fit()
    metrics, codes = {}, {}
    for split in SPLITS:
        if (prepared_dir(cfg) / split).exists():
            codes[split], mse = encode_split(vq, training_split(cfg, split, with_codes=False))
            metrics[split] = {"reconstruction_mse": mse, **usage(codes[split], v.codebook_size)}
    save_image_tokenizer(cfg, vq, codes)
    write_metrics(cfg, "image_tokenizer", metrics)
    print(
        f"image_tokenizer: test reconstruction MSE {metrics.get('test', {}).get('reconstruction_mse', float('nan')):.4f}, "
        f"codebook used {metrics['train']['codebook_used']:.0%}"
    )
    return metrics


def as_config(d: dict):
    from omegaconf import OmegaConf

    return OmegaConf.create(d)
