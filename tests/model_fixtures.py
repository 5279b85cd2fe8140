"""Random batches and tiny models for model tests (no data on disk needed)."""

from __future__ import annotations

import torch

from opt.config import load_config
from opt.model.opt import OPT, Dims

DIMS = Dims(vocab_size=60, image_size=32, n_mels=16, codebook_size=32)


def tiny_model_config(**overrides):
    cfg = load_config(["model=tiny"]).model
    cfg.max_audio_patches = 8
    cfg.max_text_tokens = 12
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def tiny_model(seed: int = 0, **overrides) -> OPT:
    torch.manual_seed(seed)
    return OPT(tiny_model_config(**overrides), DIMS)


def random_batch(b: int = 6, seed: int = 0) -> dict:
    """tokens (B,12) with [CLS]=2 first and [SEP]=3 last, image (B,3,32,32), mel (B,16,128), codes (B,16)."""
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(4, 13, (b,), generator=g)
    tokens = torch.randint(7, DIMS.vocab_size, (b, 12), generator=g)
    positions = torch.arange(12)[None]
    tokens = torch.where(positions < count[:, None], tokens, torch.zeros_like(tokens))
    tokens[:, 0] = 2
    tokens[torch.arange(b), count - 1] = 3
    return {
        "tokens": tokens,
        "token_count": count,
        "image": torch.rand(b, 3, 32, 32, generator=g),
        "mel": torch.randn(b, 16, 128, generator=g),
        "mel_frames": torch.randint(20, 129, (b,), generator=g),
        "codes": torch.randint(0, DIMS.codebook_size, (b, 16), generator=g),
    }
