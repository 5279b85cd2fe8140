"""Pretext objectives, each a small function returning `{name_loss: scalar}`.

Token level: mlm, mvm (VQ code + pixels of masked patches), mam (masked mel patches +
contrast among them), text/image denoising through the decoders. Modality level: whole
modalities dropped (masking.drop_modalities). Sample level: tri-modal matching, contrastive.
Losses are computed only on masked positions (MAE) and only for samples whose modality is present.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from opt.model.encoders import mel_patches, patchify
from opt.model.masking import IGNORE


def masked_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """(…,V) logits, (…) labels with IGNORE -> mean CE over labelled positions (0 if none)."""
    labels = labels.reshape(-1)
    if not (labels != IGNORE).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels, ignore_index=IGNORE)


def contrastive_loss(
    a: Tensor,
    b: Tensor,
    logit_scale: Tensor,
    hard_negatives: float = 0.0,
    extra_a: Tensor | None = None,
    extra_valid: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE between unit embeddings a, b (B,D): row i of a matches row i of b.

    Higher cosine for the positive pair gives a LOWER loss (the official OPT code had it reversed).
    `hard_negatives` = beta > 0: HN-NCE (Radenovic et al. 2023), see `hard_negative_logits`.
    `extra_a` (M,D): more candidates of a that every row of b must rank below its positive (NegCLIP's
    captions with a word swapped), those with `extra_valid` (M,) False left out.
    """
    scale = logit_scale.exp().clamp(max=100)
    logits = scale * a @ b.t()  # (B,B)
    target = torch.arange(a.shape[0], device=a.device)
    rows, cols = logits, logits.t()
    if hard_negatives > 0 and a.shape[0] > 1:
        rows, cols = hard_negative_logits(rows, hard_negatives), hard_negative_logits(cols, hard_negatives)
    if extra_a is not None:
        extra = (scale * b @ extra_a.t()).masked_fill(~extra_valid[None, :], float("-inf"))  # (B,M)
        cols = torch.cat([cols, extra], dim=1)
    return (F.cross_entropy(rows, target) + F.cross_entropy(cols, target)) / 2


def hard_negative_logits(logits: Tensor, beta: float) -> Tensor:
    """(B,B) logits, positives on the diagonal -> logits + log w: each row's negatives weighted by
    w = exp(beta * logit), normalised to mean 1 over the row's negatives (weights held constant),
    so negatives that look like the positive count more; the positive keeps weight 1."""
    n = logits.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=logits.device)
    scaled = (beta * logits.detach().float()).masked_fill(eye, float("-inf"))
    log_w = scaled - (torch.logsumexp(scaled, dim=1, keepdim=True) - math.log(n - 1))
    return logits + log_w.masked_fill(eye, 0.0).to(logits.dtype)


def mlm_logits(model, text_tokens: Tensor) -> Tensor:
    """Fused text tokens (B,1+L,D) (encoder CLS first) -> MLM logits (B,L,V), aligned with the token ids."""
    return model.heads["mlm"](text_tokens[:, 1:])


def mlm_loss(model, text_tokens: Tensor, labels: Tensor) -> Tensor:
    """Fused text tokens (B,1+L,D) (encoder CLS first), labels (B,L) -> CE on masked tokens."""
    return masked_cross_entropy(mlm_logits(model, text_tokens), labels)


def mvm_loss(model, image_tokens: Tensor, images: Tensor, codes: Tensor, masked: Tensor) -> dict:
    """Fused image tokens (B,1+N,D), images (B,3,H,W), VQ codes (B,N), masked (B,N) bool."""
    x = image_tokens[:, 1:]
    code_labels = torch.where(masked, codes, torch.full_like(codes, IGNORE))
    target = patchify(images * 2 - 1, model.cfg.patch_size)  # (B,N,3p²)
    pixels = F.mse_loss(model.heads["mvm_pixels"](x)[masked].float(), target[masked].float())
    return {"mvm_code_loss": masked_cross_entropy(model.heads["mvm_code"](x), code_labels), "mvm_pixel_loss": pixels}


def mam_loss(
    model, audio_tokens: Tensor, mel: Tensor, frames: Tensor, masked: Tensor, logit_scale: float = 10.0
) -> dict:
    """Fused audio tokens (B,1+P,D), mel (B,M,F), masked (B,P): regress masked mel patches, and
    pick each masked patch's true content among all masked patches of the batch (InfoNCE)."""
    target, _ = mel_patches(mel, frames, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    predicted = model.heads["mam"](audio_tokens[:, 1:])[masked].float()  # (K, M*pf)
    target = target[masked].float()
    regression = F.mse_loss(predicted, target)
    logits = logit_scale * F.normalize(predicted, dim=-1) @ F.normalize(target - target.mean(0), dim=-1).t()
    contrast = F.cross_entropy(logits, torch.arange(len(target), device=logits.device))
    return {"mam_regression_loss": regression, "mam_contrastive_loss": contrast}


def decoder_loss(
    decoder, targets: Tensor, context: Tensor, context_valid: Tensor, ignore: Tensor | None = None
) -> Tensor:
    """Teacher-forced CE of a decoder; positions where `ignore` (B,T) is True carry no loss."""
    logits = decoder(targets, context, context_valid)
    labels = targets if ignore is None else targets.masked_fill(ignore, IGNORE)
    return masked_cross_entropy(logits, labels)


def matching_loss(model, fused_cls: Tensor, cases: Tensor) -> Tensor:
    """Fused CLS (B,D) -> 5-way classification of the matching case (B,)."""
    return F.cross_entropy(model.heads["matching"](fused_cls).float(), cases)
