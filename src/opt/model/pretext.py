"""One pre-training forward: mask, encode, fuse, and sum the weighted pretext losses.

Token-level objectives (MLM, MVM, MAM, denoising) read the pass that masks text tokens and image
and audio patches. Sample-level objectives (contrastive, matching) compare whole samples, so
they read a second, clean encoding of the same batch, as retrieval sees it: on the masked pass
about one attribute word per caption is hidden and positive pairs become ambiguous (issue 14:
100 steps, zero-shot text->image R@1 0.010 on masked encodings, 0.139 on clean ones).

Modality level, two designs. By default (`drop_*`) whole modalities drop out of a sample's fused
context independently and the decoders rebuild the caption and the image codes from the masked
fusion, which still holds most of their target. With `hold_out_text`/`hold_out_image` > 0
(`objectives=hold_out`) each sample draws a setup instead (masking.draw_setups): every modality,
text held out (the text decoder writes it from image and/or audio) or image held out (the image
decoder draws it from text with or without audio), and a decoder's loss is computed only where
its target is absent from the context. `clean_context` leaves the samples with a held-out
modality unmasked.

Batches can be wider for contrastive than for the rest (`fused_share` < 1,
`experiment=wide_contrastive`): the first part of the batch goes through the masked pass, the
fusion and the decoders; contrastive compares the clean encodings of the whole batch.

`pretext_losses(model, batch, objectives, special, generator)` returns a dict of every active
`*_loss` plus `loss` (their weighted sum). `batch` holds tokens, token_count, image, mel,
mel_frames and codes (B,N) from the VQ image tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
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
    swap_groups: tuple = ()  # (G_k,) id sets of interchangeable words, for `objectives.swap_negatives`


def loss_weights(o) -> dict:
    """Loss name -> its weight: its objective's; MVM's pixel and MAM's regression parts also
    carry their own factor (`mvm_pixel`, `mam_regression`), so either can go without the other."""
    return {
        "mlm_loss": o.mlm,
        "mvm_code_loss": o.mvm,
        "mvm_pixel_loss": o.mvm * o.mvm_pixel,
        "mam_contrastive_loss": o.mam,
        "mam_regression_loss": o.mam * o.mam_regression,
        "text_denoise_loss": o.text_denoise,
        "image_denoise_loss": o.image_denoise,
        "contrastive_loss": o.contrastive,
        "matching_loss": o.matching,
    }


def weighted_total(losses: dict, weights: dict) -> Tensor:
    """Sum of each `*_loss` times its weight (`loss_weights`)."""
    return sum(weights[name] * value for name, value in losses.items())


def modalities_of(objectives) -> tuple:
    return (TEXT, IMAGE, AUDIO) if objectives.use_audio else (TEXT, IMAGE)


def mask_batch(
    model, batch: dict, o, special: SpecialTokens, g: masking.Draw, rows: Tensor | None = None
) -> tuple[dict, dict, Tensor]:
    """Masked copy of the batch, modality -> (B,N) masked patches, and MLM labels (B,L); only the
    samples in `rows` (B,) bool are masked (None: all), the others stay clean."""
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
    if rows is not None:
        tokens = torch.where(rows[:, None], tokens, batch["tokens"])
        labels = labels.masked_fill(~rows[:, None], IGNORE)
        masks = {m: mask & rows[:, None] for m, mask in masks.items()}
    pf, max_patches = model.cfg.audio_patch_frames, model.cfg.max_audio_patches
    trimmed = trim_to_content({**batch, "tokens": tokens}, pf, max_patches)
    length = trimmed["tokens"].shape[1]
    if AUDIO in masks:
        masks[AUDIO] = masks[AUDIO][:, : trimmed["mel"].shape[2] // pf]
    return trimmed, masks, labels[:, :length]


def token_level(model, fused, batch, masks, labels, present, o) -> dict:
    """MLM, MVM, MAM on the fused tokens; present: modality -> (B,) bool samples that hold the
    modality and carry its masks."""
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


def decoders(model, fused, batch, setup: Tensor | None, o, special: SpecialTokens) -> dict:
    """The text decoder writes the caption and the image decoder the VQ codes: of every sample
    from its (masked) fusion when `setup` is None, else of the samples whose text / image is held
    out of their context."""
    losses = {}
    text_rows = image_rows = slice(None)
    if setup is not None:
        text_rows, image_rows = setup == masking.TEXT_HELD_OUT, setup == masking.IMAGE_HELD_OUT
    if o.text_denoise and (setup is None or text_rows.any()):
        tokens = batch["tokens"][text_rows]
        losses["text_denoise_loss"] = obj.decoder_loss(
            model.text_decoder, tokens, fused.tokens[text_rows], fused.valid[text_rows], tokens == special.pad
        )
    if o.image_denoise and (setup is None or image_rows.any()):
        losses["image_denoise_loss"] = obj.decoder_loss(
            model.image_decoder, batch["codes"][image_rows], fused.tokens[image_rows], fused.valid[image_rows]
        )
    return losses


def sample_level(model, encoded: dict, o, g: masking.Draw, swapped: tuple | None = None) -> dict:
    """Contrastive alignment of modality embeddings, and tri-modal matching of the first
    `matching_share` of the batch (against hard negatives drawn from the whole batch by embedding
    similarity when `matching_hard_negatives`), on the clean encodings `encoded` (modality -> Encoded).
    `swapped` (Encoded (B,..) of captions with a word swapped, has (B,) bool): more negative
    captions for every image (NegCLIP)."""
    losses = {}
    emb = {m: model.embed(e, m) for m, e in encoded.items()} if o.contrastive or o.matching_hard_negatives else {}
    if o.contrastive:
        pairs = [(TEXT, IMAGE), (TEXT, AUDIO), (IMAGE, AUDIO)] if o.use_audio else [(TEXT, IMAGE)]
        extra = {(TEXT, IMAGE): (model.embed(swapped[0], TEXT), swapped[1])} if swapped else {}
        losses["contrastive_loss"] = sum(
            obj.contrastive_loss(
                emb[a], emb[b], model.logit_scale, o.contrastive_hard_negatives, *extra.get((a, b), (None, None))
            )
            for a, b in pairs
        ) / len(pairs)
    if o.matching:
        b, device = encoded[TEXT].tokens.shape[0], encoded[TEXT].tokens.device
        k = min(b, max(3, round(o.matching_share * b)))
        weights = {}
        if o.matching_hard_negatives:
            scale = model.logit_scale.exp().clamp(max=100).detach()
            weights = {m: (scale * emb[TEXT][:k] @ emb[m].t()).softmax(-1) for m in emb if m != TEXT}  # (k,B)
        cases, image_src, audio_src = masking.matching_cases(
            k, g, 5 if o.use_audio else 2, device, weights.get(IMAGE), weights.get(AUDIO)
        )
        text = encoded[TEXT] if k == b else take(encoded[TEXT], torch.arange(k, device=device))
        swapped = {TEXT: text, IMAGE: take(encoded[IMAGE], image_src)}
        if o.use_audio:
            swapped[AUDIO] = take(encoded[AUDIO], audio_src)
        fused = model.fuse(swapped)
        losses["matching_loss"] = obj.matching_loss(model, fused.tokens[:, 0], cases)
    return losses


def clean_encodings(model, batch: dict, modalities, encoded: dict, masked_rows: Tensor | None) -> dict:
    """Encodings of the unmasked batch: a second pass over the masked samples `masked_rows` (B,)
    (None: all); the others reuse the masked pass, which left them unmasked."""
    if masked_rows is None:
        return model.encode(batch, modalities)
    if not masked_rows.any():
        return encoded
    again = model.encode({k: v[masked_rows] for k, v in batch.items()}, modalities)
    out = {}
    for m, e in encoded.items():
        tokens = e.tokens.clone()
        tokens[masked_rows] = again[m].tokens.to(tokens.dtype)
        out[m] = Encoded(tokens, e.valid)
    return out


def encode_by_length(model, batch: dict, modalities, chunk: int) -> dict:
    """Clean encodings of a batch, `chunk` samples at a time in order of clip length (caption
    length without audio), each chunk trimmed to its own content: the encodings of one pass over
    the whole batch (padding is masked out of attention) at a fraction of the padding.
    -> modality -> Encoded (B, 1+N, D), N the longest over the batch."""
    pf, max_patches = model.cfg.audio_patch_frames, model.cfg.max_audio_patches
    order = batch["mel_frames" if AUDIO in modalities else "token_count"].argsort()
    parts = [
        model.encode(trim_to_content({k: v[rows] for k, v in batch.items()}, pf, max_patches), modalities)
        for rows in order.split(chunk)
    ]
    inverse = order.argsort()
    out = {}
    for m in parts[0]:
        n = max(p[m].tokens.shape[1] for p in parts)
        tokens = torch.cat([F.pad(p[m].tokens, (0, 0, 0, n - p[m].tokens.shape[1])) for p in parts])
        valid = torch.cat([F.pad(p[m].valid, (0, n - p[m].valid.shape[1]), value=False) for p in parts])
        out[m] = Encoded(tokens[inverse], valid[inverse])
    return out


def swapped_captions(model, batch: dict, groups: tuple, g: masking.Draw) -> tuple[Encoded, Tensor]:
    """(clean text encodings (B,1+L',D) of the captions with one word swapped (masking.swap_words),
    has (B,) bool: the caption held a word to swap)."""
    if not groups:
        raise ValueError("objectives.swap_negatives names no word group the captions' tokenizer spells as one token")
    tokens, has = masking.swap_words(
        batch["tokens"], batch["token_count"], list(groups), g
    )  # untrimmed: same draws in every process
    tokens = tokens[:, : int(batch["token_count"].max())]
    return model.encode({"tokens": tokens, "token_count": batch["token_count"]}, (TEXT,))[TEXT], has


def take(encoded: Encoded, index: Tensor) -> Encoded:
    return Encoded(encoded.tokens[index], encoded.valid[index])


def modality_level(b: int, o, g: masking.Draw, device) -> tuple[Tensor, dict]:
    """(setup (B,), modality -> (B,) bool present) of the held-out design."""
    if o.drop_text or o.drop_image or o.drop_audio:
        raise ValueError(
            "objectives.hold_out_text/hold_out_image replace drop_text/drop_image/drop_audio: set those to 0 "
            "(objectives=hold_out does)"
        )
    return masking.draw_setups(b, o.hold_out_text, o.hold_out_image, o.use_audio, g, device)


def fused_count(b: int, share: float) -> int:
    """How many of a batch's `b` samples the masked pass, fusion and decoders see: the first
    `share` of them (at least one); contrastive reads the clean encodings of all `b`, and matching
    fuses `matching_share` of all `b`."""
    if not 0 < share <= 1:
        raise ValueError(f"objectives.fused_share={share}: expected a share in (0, 1]")
    return max(1, round(share * b))


def pretext_losses(model, batch: dict, o, special: SpecialTokens, g: masking.Draw) -> dict:
    """Every active pretext loss and their weighted sum under `loss`. With `fused_share` < 1 only
    the first part of the batch is masked, fused and decoded (token and modality level), while
    contrastive (and matching) read the clean encodings of the whole batch: the cheap
    single-modal encoders see more samples and more negatives per step than the fusion."""
    if not reads_fusion(o):  # sample-level objectives only (experiment=contrastive_peer): no masked pass, no fusion
        return sample_level_only(model, batch, o, special, g)
    whole, whole_g = batch, g
    b = fused_count(whole["tokens"].shape[0], o.fused_share)
    batch, g = {k: v[:b] for k, v in whole.items()}, g.first(b)
    device, modalities, setup, masked_rows = batch["tokens"].device, modalities_of(o), None, None
    if o.hold_out_text or o.hold_out_image:
        setup, present = modality_level(b, o, g, device)
        masked_rows = setup == masking.ALL if o.clean_context else None
    masked_batch, masks, labels = mask_batch(model, batch, o, special, g, masked_rows)
    batch = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    encoded = model.encode(masked_batch, modalities, masks)
    if setup is None:
        drop = {TEXT: o.drop_text, IMAGE: o.drop_image, AUDIO: o.drop_audio}
        present = masking.drop_modalities(b, {m: drop[m] for m in modalities}, g, device)
    fused = model.fuse(encoded, present)
    rows = present if masked_rows is None else {m: present[m] & masked_rows for m in modalities}
    clean = {}
    if (o.contrastive or o.matching) and b < whole["tokens"].shape[0]:
        clean = encode_by_length(model, whole, modalities, chunk=b)  # the whole batch, for more negatives
    elif o.contrastive or o.matching:
        clean = clean_encodings(model, batch, modalities, encoded, masked_rows)
    swapped = (
        swapped_captions(model, whole, special.swap_groups, whole_g) if o.contrastive and o.swap_negatives else None
    )
    losses = {
        **token_level(model, fused, batch, masks, labels, rows, o),
        **decoders(model, fused, batch, setup, o, special),
        **sample_level(model, clean, o, g, swapped),
    }
    return with_total(losses, o)


def with_total(losses: dict, o) -> dict:
    """The losses whose weight is above 0, and their weighted sum under `loss`."""
    weights = loss_weights(o)
    losses = {k: v for k, v in losses.items() if weights[k] > 0}
    return {**losses, "loss": weighted_total(losses, weights)}


def reads_fusion(o) -> bool:
    """Whether any active objective reads the masked pass and the fusion (token and modality level)."""
    return any((o.mlm, o.mvm, o.mam, o.text_denoise, o.image_denoise))


def sample_level_only(model, batch: dict, o, special: SpecialTokens, g: masking.Draw) -> dict:
    """`pretext_losses` when only contrastive (and matching) are active: one clean encoding of the
    whole batch, trimmed to its content, and nothing masked or fused for token-level objectives."""
    trimmed = trim_to_content(batch, model.cfg.audio_patch_frames, model.cfg.max_audio_patches)
    clean = model.encode(trimmed, modalities_of(o))
    swapped = swapped_captions(model, batch, special.swap_groups, g) if o.contrastive and o.swap_negatives else None
    losses = sample_level(model, clean, o, g, swapped)
    return with_total(losses, o)
