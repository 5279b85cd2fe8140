"""What each pretext loss scores when the model ignores its input: the floor to end clearly below.

From the train split: the entropy of the targets for the cross-entropy losses (text tokens for
MLM and text denoising, VQ codes for MVM and image denoising), the variance of the targets for
the regressions (image patches for MVM pixels, normalised mel patches for MAM), ln(choices) for
the losses that pick one item among several (ln B for contrastive, ln K masked patches for MAM's
contrast, ln(cases) for matching). `pretrain_report` puts each loss's first and last values
beside its floor in reports/pretrain.md, so an objective that does not learn shows at once.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from opt.data.splits import batches
from opt.model.encoders import mel_patches, patchify
from opt.model.pretext import fused_count

CLEARLY_BELOW = 0.9  # a loss "learns" when its last value is under 90% of its floor
EDGE_ROWS = 10  # first and last values: the mean of this many logged steps


def entropy(counts: np.ndarray) -> float:
    """Entropy (nats) of a distribution given by counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def split_statistics(train, model_cfg, special_count: int, pad_id: int) -> dict:
    """Token and code counts, and mean per-dimension variances of image and mel patches."""
    tokens, codes, pixels, mels, audio_patches = [], [], [], [], []
    for batch in batches(train, 256):
        tokens.append(batch["tokens"].flatten())
        codes.append(batch["codes"].flatten())
        pixels.append(patchify(batch["image"] * 2 - 1, model_cfg.patch_size).flatten(0, 1))
        patches, valid = mel_patches(
            batch["mel"], batch["mel_frames"], model_cfg.audio_patch_frames, model_cfg.max_audio_patches
        )
        mels.append(patches[valid])
        audio_patches.append(valid.sum(1).float())
    tokens, codes = torch.cat(tokens).numpy(), torch.cat(codes).numpy()
    return {
        "masked_token_entropy": entropy(np.bincount(tokens[tokens >= special_count])),
        "token_entropy": entropy(np.bincount(tokens[tokens != pad_id])),
        "code_entropy": entropy(np.bincount(codes)),
        "pixel_variance": float(torch.cat(pixels).var(0).mean()),
        "mel_variance": float(torch.cat(mels).var(0).mean()),
        "audio_patches": float(torch.cat(audio_patches).mean()),
    }


def loss_floors(stats: dict, objectives, batch_size: int) -> dict:
    """Loss name -> its floor, for every pretext loss (opt.model.pretext names them)."""
    fused = fused_count(batch_size, objectives.fused_share)  # MAM contrasts the masked patches of the fused part
    masked_audio = max(2.0, objectives.audio_mask_ratio * stats["audio_patches"] * fused)
    # swap_negatives: image->text also ranks a swapped caption per sample (2B candidates), 1 of 3 pairs' 2 directions
    swapped = math.log(2) / (2 * (3 if objectives.use_audio else 1)) if objectives.swap_negatives else 0.0
    return {
        "mlm_loss": stats["masked_token_entropy"],
        "text_denoise_loss": stats["token_entropy"],
        "mvm_code_loss": stats["code_entropy"],
        "image_denoise_loss": stats["code_entropy"],
        "mvm_pixel_loss": stats["pixel_variance"],
        "mam_regression_loss": stats["mel_variance"],
        "mam_contrastive_loss": math.log(masked_audio),
        "contrastive_loss": math.log(batch_size) + swapped,
        "matching_loss": math.log(5 if objectives.use_audio else 2),
    }


def loss_edges(losses_csv: Path) -> dict:
    """Loss name -> (mean of the first EDGE_ROWS logged values, mean of the last EDGE_ROWS)."""
    with Path(losses_csv).open() as f:
        rows = list(csv.DictReader(f))
    names = [k for k in (rows[0] if rows else {}) if k.endswith("_loss")]
    mean = lambda part, k: float(np.mean([float(r[k]) for r in part if r[k] != ""]))  # noqa: E731
    return {k: (mean(rows[:EDGE_ROWS], k), mean(rows[-EDGE_ROWS:], k)) for k in names}


def floor_table(edges: dict, floors: dict) -> list[dict]:
    """One row a logged loss: first, last, floor, last/floor and whether it ended clearly below."""
    rows = []
    for name, (first, last) in edges.items():
        if floors.get(name):
            ratio = last / floors[name]
            rows.append(
                {
                    "loss": name,
                    "first": first,
                    "last": last,
                    "floor": floors[name],
                    "ratio": ratio,
                    "learned": ratio < CLEARLY_BELOW,
                }
            )
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Pre-training losses against their floors",
        "",
        f"Floor: what a model that ignores its input scores. Learned: last < {CLEARLY_BELOW} x floor.",
        "",
        "| loss | first | last | floor | last / floor | learned |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['loss']} | {r['first']:.3f} | {r['last']:.3f} | {r['floor']:.3f} | "
            f"{r['ratio']:.2f} | {'yes' if r['learned'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def pretrain_report(cfg, losses_csv: Path, special_count: int, pad_id: int) -> list[dict]:
    """metrics/pretrain_floors.json and reports/pretrain.md of a finished pre-training run."""
    import json

    from opt.artifacts import training_split
    from opt.config import path

    stats = split_statistics(training_split(cfg, "train"), cfg.model, special_count, pad_id)
    rows = floor_table(loss_edges(losses_csv), loss_floors(stats, cfg.objectives, int(cfg.trainer.batch_size)))
    (path(cfg, "metrics") / "pretrain_floors.json").write_text(json.dumps(rows, indent=1) + "\n")
    report = path(cfg, "reports") / "pretrain.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(markdown(rows))
    return rows
