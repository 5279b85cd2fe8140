"""Single-modal encoders: each turns raw inputs into tokens (B, 1+N, D) with a leading CLS.

Text: token ids (B,L). Image: pixels (B,3,H,W) cut into ViT patches. Audio: log-mel
(B,M,F) cut into patches of `audio_patch_frames` frames spanning all M mel bins.
Masked positions (MLM/MVM/MAM) are replaced by a learned mask embedding before the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor, nn

from opt.model.config import ModelConfig
from opt.model.layers import Stack, key_mask


class Modality(str, Enum):
    TEXT = "text"
    IMAGE = "image"
    AUDIO = "audio"


@dataclass
class Encoded:
    tokens: Tensor  # (B, 1+N, D); position 0 is the modality's CLS
    valid: Tensor  # (B, 1+N) bool: real (non-padding) tokens


def patchify(images: Tensor, p: int) -> Tensor:
    """(B,3,H,W) -> (B, H/p * W/p, 3*p*p), patches in row-major grid order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(patches: Tensor, p: int, size: int) -> Tensor:
    """(B, N, 3*p*p) -> (B,3,size,size); inverse of `patchify`."""
    b, g = patches.shape[0], size // p
    x = patches.reshape(b, g, g, 3, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, size, size)


def mel_patches(mel: Tensor, frames: Tensor, pf: int, max_patches: int) -> tuple[Tensor, Tensor]:
    """(B,M,F) log-mel, (B,) true frame counts -> patches (B,P,M*pf), valid (B,P) bool, where
    P = ceil(F / pf) up to max_patches (trim F to the batch's longest clip to save compute)."""
    b, m, f = mel.shape
    n = min(max_patches, -(-f // pf))
    mel = nn.functional.pad(mel, (0, max(0, n * pf - f)))[:, :, : n * pf]
    patches = mel.reshape(b, m, n, pf).permute(0, 2, 1, 3).reshape(b, n, m * pf)
    count = torch.clamp((frames + pf - 1) // pf, 1, n)  # at least one patch
    return patches, torch.arange(n, device=mel.device)[None, :] < count[:, None]


def trim_to_content(batch: dict, pf: int, max_patches: int) -> dict:
    """Drop the padding every sample shares: text past the longest caption, mel frames past
    the longest clip's last patch. Results do not change (padding is masked), compute shrinks."""
    out = dict(batch)
    if "tokens" in batch:
        out["tokens"] = batch["tokens"][:, : int(batch["token_count"].max())]
    if "mel" in batch:
        patches = min(max_patches, -(-int(batch["mel_frames"].max()) // pf))
        out["mel"] = batch["mel"][:, :, : patches * pf]
    return out


class Tower(nn.Module):
    """Embedded inputs (B,N,D) -> CLS + positions + mask embedding -> Transformer."""

    def __init__(self, cfg: ModelConfig, layers: int, positions: int):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.mask_embedding = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + positions, cfg.dim) * 0.02)
        self.stack = Stack(layers, cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout)

    def forward(self, x: Tensor, valid: Tensor, masked: Tensor | None = None) -> Encoded:
        if masked is not None:  # (B,N) bool
            x = torch.where(masked[..., None], self.mask_embedding.to(x.dtype), x)
        b, n, _ = x.shape
        x = torch.cat([self.cls.expand(b, -1, -1), x], dim=1) + self.pos[:, : n + 1]  # (B,1+N,D)
        valid = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        return Encoded(self.stack(x, key_mask(valid)), valid)


class TextEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.dim)
        self.tower = Tower(cfg, cfg.text_layers, cfg.max_text_tokens)

    def forward(self, tokens: Tensor, count: Tensor, masked: Tensor | None = None) -> Encoded:
        """tokens (B,L) int, count (B,) real tokens; masked tokens were already replaced by [MASK]."""
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None, :] < count[:, None]
        return self.tower(self.embed(tokens), valid)


IMAGE_STEMS = ("linear", "conv")


def conv_stem(dim: int, patch_size: int) -> nn.Sequential:
    """ViT-C's stem (Xiao et al. 2021, "Early convolutions help transformers see better"): log2(p)
    3x3 stride-2 convolutions (GroupNorm, GELU) widening to dim/2, then a 1x1 to dim.
    (B,3,H,W) -> (B,D,H/p,W/p)."""
    downs = patch_size.bit_length() - 1
    if 2**downs != patch_size:
        raise ValueError(f"model.image_stem=conv needs a power-of-two patch_size, got {patch_size}")
    widths = [3] + [dim >> (downs - i) for i in range(downs)]
    layers: list[nn.Module] = []
    for cin, cout in zip(widths, widths[1:]):
        layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.GroupNorm(8 if cout % 8 == 0 else 1, cout), nn.GELU()]
    return nn.Sequential(*layers, nn.Conv2d(widths[-1], dim, 1))


class ImageEncoder(nn.Module):
    """Pixels -> one token per p x p patch: a linear projection of the patch (ViT), or with
    `model.image_stem: conv` a convolutional stem, whose tokens see a few pixels of their
    neighbours; masked patches are blanked before it so no token sees their pixels."""

    def __init__(self, cfg: ModelConfig, image_size: int):
        super().__init__()
        if cfg.image_stem not in IMAGE_STEMS:
            raise ValueError(f"model.image_stem={cfg.image_stem!r}: expected one of {IMAGE_STEMS}")
        self.p, self.stem = cfg.patch_size, cfg.image_stem
        if self.stem == "conv":
            self.conv = conv_stem(cfg.dim, self.p)
        else:
            self.proj = nn.Linear(3 * self.p**2, cfg.dim)
        self.tower = Tower(cfg, cfg.image_layers, (image_size // self.p) ** 2)

    def forward(self, images: Tensor, masked: Tensor | None = None) -> Encoded:
        """images (B,3,H,W) in [0,1]; masked (B,N) patches to hide."""
        pixels = images * 2 - 1
        if self.stem == "conv":
            if masked is not None:  # blank the hidden patches: (B,g,g) -> (B,1,H,W)
                g = images.shape[-1] // self.p
                keep = ~masked.reshape(-1, 1, g, g).repeat_interleave(self.p, 2).repeat_interleave(self.p, 3)
                pixels = pixels * keep.to(pixels.dtype)
            x = self.conv(pixels).flatten(2).transpose(1, 2)  # (B,N,D), row-major like patchify
        else:
            x = self.proj(patchify(pixels, self.p))  # (B,N,D)
        return self.tower(x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device), masked)


class AudioEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig, n_mels: int):
        super().__init__()
        self.pf, self.max_patches = cfg.audio_patch_frames, cfg.max_audio_patches
        self.proj = nn.Linear(n_mels * self.pf, cfg.dim)
        self.tower = Tower(cfg, cfg.audio_layers, self.max_patches)

    def forward(self, mel: Tensor, frames: Tensor, masked: Tensor | None = None) -> Encoded:
        """mel (B,M,F) normalised log-mel, frames (B,) true lengths; masked (B,P) patches."""
        patches, valid = mel_patches(mel, frames, self.pf, self.max_patches)
        return self.tower(self.proj(patches), valid, masked)
