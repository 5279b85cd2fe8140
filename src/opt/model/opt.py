"""OPT: three single-modal encoders, a cross-modal encoder over their concatenated tokens
(with modality-type embeddings, any subset of modalities), a text decoder and an image decoder.

A batch is a dict of tensors: tokens (B,L) int, token_count (B,), image (B,3,H,W) in [0,1],
mel (B,M,F) log-mel, mel_frames (B,), and for image generation codes (B,G) VQ codes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opt.model.config import ModelConfig
from opt.model.decoders import Decoder
from opt.model.encoders import AudioEncoder, Encoded, ImageEncoder, Modality, TextEncoder
from opt.model.layers import Stack, key_mask

MODALITIES = tuple(Modality)
IMAGE_POOLS = ("cls", "max")
MATCHING_CASES = 5  # all matched; image swapped; audio swapped; both from one other; from two others


@dataclass
class Fused:
    tokens: Tensor  # (B, 1+N_text+N_image+N_audio, D); position 0 is the fused CLS
    valid: Tensor  # (B, same) bool
    spans: dict  # modality -> slice of its tokens (its CLS first)


@dataclass
class Dims:
    """Sizes the model takes from the prepared data and the VQ tokenizer."""

    vocab_size: int
    image_size: int
    n_mels: int
    codebook_size: int


class OPT(nn.Module):
    def __init__(self, cfg: ModelConfig, dims: Dims):
        super().__init__()
        if cfg.image_pool not in IMAGE_POOLS:
            raise ValueError(f"model.image_pool={cfg.image_pool!r}: expected one of {IMAGE_POOLS}")
        self.cfg, self.dims = cfg, dims
        d, grid = cfg.dim, dims.image_size // cfg.patch_size
        self.encoders = nn.ModuleDict(
            {
                Modality.TEXT: TextEncoder(cfg, dims.vocab_size),
                Modality.IMAGE: ImageEncoder(cfg, dims.image_size),
                Modality.AUDIO: AudioEncoder(cfg, dims.n_mels),
            }
        )
        self.type_embed = nn.Embedding(len(MODALITIES), d)
        self.fused_cls = nn.Parameter(torch.zeros(1, 1, d))
        self.fusion = Stack(cfg.fusion_layers, d, cfg.heads, cfg.mlp_ratio, cfg.dropout)
        self.text_decoder = Decoder(cfg, dims.vocab_size, cfg.max_text_tokens, cfg.text_decoder_layers)
        self.image_decoder = Decoder(cfg, dims.codebook_size, grid * grid, cfg.image_decoder_layers)
        self.heads = nn.ModuleDict(
            {
                "mlm": nn.Linear(d, dims.vocab_size),
                "mvm_code": nn.Linear(d, dims.codebook_size),
                "mvm_pixels": nn.Linear(d, 3 * cfg.patch_size**2),
                "mam": nn.Linear(d, dims.n_mels * cfg.audio_patch_frames),
                "matching": nn.Linear(d, MATCHING_CASES),
            }
        )
        self.project = nn.ModuleDict({m: nn.Linear(d, d) for m in MODALITIES})
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.apply(init_weights)

    def encode(self, batch: dict, modalities=MODALITIES, masks: dict | None = None) -> dict[Modality, Encoded]:
        """Run the single-modal encoders of `modalities`; masks: modality -> (B,N) bool."""
        masks = masks or {}
        out = {}
        for m in map(Modality, modalities):
            if m is Modality.TEXT:
                out[m] = self.encoders[m](batch["tokens"], batch["token_count"])
            elif m is Modality.IMAGE:
                out[m] = self.encoders[m](batch["image"], masks.get(m))
            else:
                out[m] = self.encoders[m](batch["mel"], batch["mel_frames"], masks.get(m))
        return out

    def fuse(self, encoded: dict[Modality, Encoded], present: dict | None = None) -> Fused:
        """Cross-modal encoder over the concatenated tokens; present: modality -> (B,) bool."""
        b = next(iter(encoded.values())).tokens.shape[0]
        parts, valids, spans, start = [self.fused_cls.expand(b, -1, -1)], [], {}, 1
        valids.append(torch.ones(b, 1, dtype=torch.bool, device=parts[0].device))
        for m, enc in encoded.items():
            kind = torch.tensor(MODALITIES.index(Modality(m)), device=enc.tokens.device)
            parts.append(enc.tokens + self.type_embed(kind))
            keep = enc.valid if present is None or m not in present else enc.valid & present[m][:, None]
            valids.append(keep)
            spans[m] = slice(start, start + enc.tokens.shape[1])
            start += enc.tokens.shape[1]
        tokens, valid = torch.cat(parts, dim=1), torch.cat(valids, dim=1)
        return Fused(self.fusion(tokens, key_mask(valid)), valid, spans)

    def summary(self, encoded: Encoded, modality: Modality) -> Tensor:
        """One vector (B,D) per sample of one modality: its encoder's CLS, or for images with
        `image_pool: max` the max over its patch tokens (an object a few patches wide stays visible)."""
        if Modality(modality) is Modality.IMAGE and self.cfg.image_pool == "max":
            return encoded.tokens[:, 1:].amax(dim=1)
        return encoded.tokens[:, 0]

    def embed(self, encoded: Encoded, modality: Modality) -> Tensor:
        """Unit-norm embedding (B,D) of one modality, from its summary, for retrieval."""
        return F.normalize(self.project[Modality(modality)](self.summary(encoded, modality)).float(), dim=-1)

    def forward(self, batch: dict, modalities=MODALITIES) -> Fused:
        return self.fuse(self.encode(batch, modalities))


def init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
