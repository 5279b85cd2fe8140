"""VQ-VAE image tokenizer with an EMA codebook: images (B,3,H,W) <-> codes (B, H/p * W/p).

The image decoder of OPT generates these codes; `decode_codes` renders them back to pixels.
The grid matches the ViT patch grid (one code per patch), so MVM can predict a patch's code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class EMACodebook(nn.Module):
    """Nearest-neighbour quantiser whose codebook follows an exponential moving average of the
    vectors assigned to each code (no codebook gradient). The codebook starts from encoder
    outputs of the first batch, and a code whose EMA usage falls under `dead_below`
    assignments per batch restarts on a random encoder output (as in Jukebox), so the
    codebook stays in use even when most patches are plain background."""

    def __init__(self, size: int, dim: int, decay: float = 0.99, eps: float = 1e-5, dead_below: float = 1.0):
        super().__init__()
        self.decay, self.eps, self.dead_below = decay, eps, dead_below
        self.register_buffer("codebook", torch.randn(size, dim) * 0.1)
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("initialised", torch.tensor(False))

    def indices(self, z: Tensor) -> Tensor:
        """(N,C) -> (N,) index of the nearest code."""
        distance = z.pow(2).sum(1, keepdim=True) - 2 * z @ self.codebook.t() + self.codebook.pow(2).sum(1)[None]
        return distance.argmin(dim=1)

    @torch.no_grad()
    def initialise(self, z: Tensor) -> None:
        pick = torch.randint(0, z.shape[0], (self.codebook.shape[0],), device=z.device)
        self.codebook.copy_(z[pick])
        self.embed_sum.copy_(z[pick])
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def update(self, z: Tensor, index: Tensor) -> None:
        onehot = F.one_hot(index, self.codebook.shape[0]).type(z.dtype)  # (N,K)
        self.cluster_size.mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(onehot.t() @ z, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        size = (self.cluster_size + self.eps) / (n + self.codebook.shape[0] * self.eps) * n
        self.codebook.copy_(self.embed_sum / size[:, None])
        dead = self.cluster_size < self.dead_below
        if dead.any():  # restart rarely used codes on random encoder outputs
            pick = torch.randint(0, z.shape[0], (int(dead.sum()),), device=z.device)
            self.codebook[dead] = z[pick]
            self.embed_sum[dead] = z[pick]
            self.cluster_size[dead] = 1.0

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(N,C) -> quantised (N,C) with straight-through gradient, indices (N,)."""
        if self.training and not bool(self.initialised):
            self.initialise(z.detach())
        index = self.indices(z)
        if self.training:
            self.update(z.detach(), index)
        quantised = self.codebook[index]
        return z + (quantised - z).detach(), index


def conv_stack(channels: list[int], transpose: bool) -> nn.Sequential:
    layers = []
    for i, (cin, cout) in enumerate(zip(channels, channels[1:])):
        conv = nn.ConvTranspose2d if transpose else nn.Conv2d
        layers.append(conv(cin, cout, 4, stride=2, padding=1))
        if i < len(channels) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class VQVAE(nn.Module):
    def __init__(
        self,
        image_size: int,
        patch_size: int,
        codebook_size: int,
        code_dim: int,
        hidden: int,
        commitment: float = 0.25,
        decay: float = 0.99,
    ):
        super().__init__()
        downs = int(math.log2(patch_size))
        if 2**downs != patch_size:
            raise ValueError(f"patch_size must be a power of two, got {patch_size}")
        self.grid, self.commitment = image_size // patch_size, commitment
        self.encoder = conv_stack([3] + [hidden] * (downs - 1) + [code_dim], transpose=False)
        self.decoder = conv_stack([code_dim] + [hidden] * (downs - 1) + [3], transpose=True)
        self.codebook = EMACodebook(codebook_size, code_dim, decay)

    def quantise(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B,3,H,W) in [0,1] -> latents (B,C,g,g), quantised (B,C,g,g), codes (B,g*g)."""
        z = self.encoder(images * 2 - 1)
        b, c, g, _ = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        with torch.autocast(images.device.type, enabled=False):  # nearest codes and EMA in fp32
            q, index = self.codebook(flat)
        return z.float(), q.reshape(b, g, g, c).permute(0, 3, 1, 2), index.reshape(b, g * g)

    def forward(self, images: Tensor) -> dict:
        """Reconstruction, codes and losses (`reconstruction_loss`, `commitment_loss`, `loss`)."""
        z, q, codes = self.quantise(images)
        recon = self.render(q)
        rec = F.mse_loss(recon, images)
        commit = F.mse_loss(z, q.detach())
        return {
            "reconstruction": recon,
            "codes": codes,
            "reconstruction_loss": rec,
            "commitment_loss": commit,
            "loss": rec + self.commitment * commit,
        }

    def render(self, quantised: Tensor) -> Tensor:
        return (self.decoder(quantised).float() + 1) / 2  # (B,3,H,W), roughly [0,1]

    @torch.no_grad()
    def encode_codes(self, images: Tensor) -> Tensor:
        return self.quantise(images)[2]

    @torch.no_grad()
    def decode_codes(self, codes: Tensor) -> Tensor:
        """(B, g*g) codes -> images (B,3,H,W) clamped to [0,1]."""
        b = codes.shape[0]
        q = self.codebook.codebook[codes].reshape(b, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        return self.render(q).clamp(0, 1)


def build_vq(cfg) -> VQVAE:
    """A fresh VQ-VAE of the run's `image_tokenizer` config (images of `prepare.image_size`)."""
    v = cfg.image_tokenizer
    return VQVAE(
        cfg.prepare.image_size, cfg.model.patch_size, v.codebook_size, v.code_dim, v.hidden, v.commitment, v.ema_decay
    )
