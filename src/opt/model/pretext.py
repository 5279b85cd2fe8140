"""One pre-training forward: mask, encode, fuse, and sum the weighted pretext losses.

Token-level objectives (MLM, MVM, MAM, denoising) read the pass that masks text tokens and image
and audio patches. Sample-level objectives (contrastive, matching) compare whole samples, so
they read a second, clean encoding of the same batch, as retrieval sees it: on the masked pass
about one attribute word per caption is hidden and positive pairs become ambiguous (issue 14:
100 steps, zero-shot text->image R@1 0.010 on masked encodings, 0.139 on clean ones).

`pretext_losses(model, batch, objectives, special, generator)` returns a dict of every active
`*_loss` plus `loss` (their weighted sum). `batch` holds tokens, token_count, image, mel,
mel_frames and codes (B,N) from the VQ image tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from opt.model import masking
from opt.model import objectives as obj
from opt.model.encoders import Encoded, Modality, mel_patches, trim_to_content
from opt.model.masking import IGNORE

TEXT, IMAGE, AUDIO = Modality.TEXT, Modality.IMAGE, Modality.AUDIO


@dataclass
class SpecialTokens:
    """Ids the pretext tasks need, read from the caption tokenizer (opt.train.pretrain.special_tokens)."""

    pad: int
    mask: int
    count: int  # ids below this are special tokens


def weighted_total(losses: dict, weights: dict) -> Tensor:
    """Sum of each `*_loss` times the weight of its objective (the name's first word)."""
    return sum(weights[name.split("_")[0]] * value for name, value in losses.items())


def modalities_of(objectives) -> tuple:
    return (TEXT, IMAGE, AUDIO) if objectives.use_audio else (TEXT, IMAGE)


def mask_batch(model, batch: dict, o, special: SpecialTokens, g: masking.Draw) -> tuple[dict, dict, Tensor]:
    """Masked copy of the batch, modality -> (B,N) masked patches, and MLM labels (B,L)."""
    tokens, labels = masking.mask_text(
        batch["tokens"], batch["token_count"], o.text_mask_ratio, special.mask, model.dims.vocab_size, special.count, g
    )
    grid = (model.dims.image_size // model.cfg.patch_size) ** 2
    image_valid = torch.ones(tokens.shape[0], grid, dtype=torch.bool, device=tokens.device)
    masks = {IMAGE: masking.mask_patches(image_valid, o.image_mask_ratio, g)}
    if o.use_audio:
        _, audio_valid = mel_patches(
            batch["mel"], batch["mel_frames"], model.cfg.audio_patch_frames, model.cfg.max_audio_patches
        )
        masks[AUDIO] = masking.mask_patches(audio_valid, o.audio_mask_ratio, g)
    pf, max_patches = model.cfg.audio_patch_frames, model.cfg.max_audio_patches
    trimmed = trim_to_content({**batch, "tokens": tokens}, pf, max_patches)
    length = trimmed["tokens"].shape[1]
    if AUDIO in masks:
        masks[AUDIO] = masks[AUDIO][:, : trimmed["mel"].shape[2] // pf]
    return trimmed, masks, labels[:, :length]


def token_level(model, fused, batch, masks, labels, present, o) -> dict:
    """MLM, MVM, MAM on the fused tokens, for samples whose modality is present."""
    losses = {}
    if o.mlm:
        losses["mlm_loss"] = obj.mlm_loss(
            model, fused.tokens[:, fused.spans[TEXT]], labels.masked_fill(~present[TEXT][:, None], IGNORE)
        )
    if o.mvm and present[IMAGE].any():
        keep = present[IMAGE]
        losses.update(
            obj.mvm_loss(
                model,
                fused.tokens[keep][:, fused.spans[IMAGE]],
                batch["image"][keep],
                batch["codes"][keep],
                masks[IMAGE][keep],
            )
        )
    if o.mam and o.use_audio and present[AUDIO].any():
        keep = present[AUDIO]
        losses.update(
            obj.mam_loss(
                model,
                fused.tokens[keep][:, fused.spans[AUDIO]],
                batch["mel"][keep],
                batch["mel_frames"][keep],
                masks[AUDIO][keep],
            )
        )
    return losses


def denoising(model, fused, batch, o, special: SpecialTokens) -> dict:
    """Text decoder rebuilds the caption and image decoder the VQ codes, from the masked fusion."""
    losses = {}
    if o.text_denoise:
        pad = batch["tokens"] == special.pad
        losses["text_denoise_loss"] = obj.decoder_loss(
            model.text_decoder, batch["tokens"], fused.tokens, fused.valid, pad
        )
    if o.image_denoise:
        losses["image_denoise_loss"] = obj.decoder_loss(model.image_decoder, batch["codes"], fused.tokens, fused.valid)
    return losses


def sample_level(model, encoded: dict, o, g: masking.Draw) -> dict:
    """Contrastive alignment of modality embeddings and tri-modal matching over swapped inputs,
    on the clean (unmasked) encodings `encoded` (modality -> Encoded)."""
    losses = {}
    if o.contrastive:
        emb = {m: model.embed(e, m) for m, e in encoded.items()}
        pairs = [(TEXT, IMAGE), (TEXT, AUDIO), (IMAGE, AUDIO)] if o.use_audio else [(TEXT, IMAGE)]
        losses["contrastive_loss"] = sum(
            obj.contrastive_loss(emb[a], emb[b], model.logit_scale) for a, b in pairs
        ) / len(pairs)
    if o.matching:
        b = encoded[TEXT].tokens.shape[0]
        cases, image_src, audio_src = masking.matching_cases(b, g, 5 if o.use_audio else 2, encoded[TEXT].tokens.device)
        swapped = {TEXT: encoded[TEXT], IMAGE: take(encoded[IMAGE], image_src)}
        if o.use_audio:
            swapped[AUDIO] = take(encoded[AUDIO], audio_src)
        fused = model.fuse(swapped)
        losses["matching_loss"] = obj.matching_loss(model, fused.tokens[:, 0], cases)
    return losses


def take(encoded: Encoded, index: Tensor) -> Encoded:
    return Encoded(encoded.tokens[index], encoded.valid[index])


def pretext_losses(model, batch: dict, o, special: SpecialTokens, g: masking.Draw) -> dict:
    """Every active pretext loss and their weighted sum under `loss`."""
    b, device = batch["tokens"].shape[0], batch["tokens"].device
    masked_batch, masks, labels = mask_batch(model, batch, o, special, g)
    batch = {**trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)}
    modalities = modalities_of(o)
    encoded = model.encode(masked_batch, modalities, masks)
    drop = {TEXT: o.drop_text, IMAGE: o.drop_image, AUDIO: o.drop_audio}
    present = masking.drop_modalities(b, {m: drop[m] for m in modalities}, g, device)
    fused = model.fuse(encoded, present)
    clean = model.encode(batch, modalities) if o.contrastive or o.matching else {}
    losses = {
        **token_level(model, fused, batch, masks, labels, present, o),
        **denoising(model, fused, batch, o, special),
        **sample_level(model, clean, o, g),
    }
    weights = {
        "mlm": o.mlm,
        "mvm": o.mvm,
        "mam": o.mam,
        "text": o.text_denoise,
        "image": o.image_denoise,
        "contrastive": o.contrastive,
        "matching": o.matching,
    }
    losses = {k: v for k, v in losses.items() if weights[k.split("_")[0]] > 0}
    return {**losses, "loss": weighted_total(losses, weights)}
