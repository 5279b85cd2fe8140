"""Autoregressive decoders that cross-attend the fused tokens, with a KV cache for generation.

The text decoder emits caption tokens; the image decoder emits the VQ codes of an image grid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from opt.model.config import ModelConfig
from opt.model.layers import Stack, key_mask

Generators = torch.Generator | list[torch.Generator] | None  # one for a batch, or one per row


class Decoder(nn.Module):
    """Causal Transformer over `vocab` symbols (+1 BOS), cross-attending a context (B,S,D)."""

    def __init__(self, cfg: ModelConfig, vocab: int, length: int, layers: int):
        super().__init__()
        self.bos = vocab  # the extra symbol that starts every sequence
        self.length = length
        self.embed = nn.Embedding(vocab + 1, cfg.dim)
        self.pos = nn.Parameter(torch.randn(1, length, cfg.dim) * 0.02)
        self.stack = Stack(layers, cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, cross=True)
        self.head = nn.Linear(cfg.dim, vocab)

    def forward(self, targets: Tensor, context: Tensor, context_valid: Tensor) -> Tensor:
        """Teacher forcing: targets (B,T) -> logits (B,T,V) predicting targets[:, t] from targets[:, :t]."""
        inputs = torch.cat([torch.full_like(targets[:, :1], self.bos), targets[:, :-1]], dim=1)
        x = self.embed(inputs) + self.pos[:, : inputs.shape[1]]
        return self.head(self.stack(x, causal=True, context=context, context_mask=key_mask(context_valid)))

    @torch.no_grad()
    def generate(
        self,
        context: Tensor,
        context_valid: Tensor,
        steps: int | None = None,
        use_cache: bool = True,
        temperature: float = 0.0,
        top_k: int = 0,
        generator: Generators = None,
        null_context: tuple[Tensor, Tensor] | None = None,
        guidance: float = 1.0,
    ) -> Tensor:
        """Greedy (temperature 0) or sampled decoding -> symbols (B, steps).

        Classifier-free guidance: with `null_context` (tokens and valid shaped like the context) the
        logits are null + guidance * (conditional - null), both halves decoded as one batch of 2B rows.
        `generator`: one for the batch, or one per row (each row's draws then depend on its own only)."""
        steps = steps or self.length
        b = context.shape[0]
        guided = null_context is not None and guidance != 1.0
        if guided:
            context, context_valid = torch.cat([context, null_context[0]]), torch.cat([context_valid, null_context[1]])
        out = torch.full((b, 1), self.bos, dtype=torch.long, device=context.device)
        cache = [{} for _ in self.stack.blocks] if use_cache else None
        cmask = key_mask(context_valid)
        for t in range(steps):
            inputs = out[:, -1:] if use_cache else out  # (B,1) with a cache, else the whole prefix
            inputs = inputs.repeat(2, 1) if guided else inputs
            x = self.embed(inputs) + self.pos[:, t + 1 - inputs.shape[1] : t + 1]
            logits = self.head(self.stack(x, causal=True, context=context, context_mask=cmask, cache=cache))[:, -1]
            if guided:
                conditional, null = logits.float().chunk(2)
                logits = null + guidance * (conditional - null)
            out = torch.cat([out, sample(logits, temperature, top_k, generator)[:, None]], dim=1)
        return out[:, 1:]


def sample(logits: Tensor, temperature: float, top_k: int = 0, generator: Generators = None) -> Tensor:
    """(B,V) -> (B,) argmax at temperature 0, else a draw from softmax(logits / temperature),
    restricted to the `top_k` most likely symbols when top_k > 0; `generator` may be a list of B,
    one per row."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if isinstance(generator, (list, tuple)):
        return torch.cat(
            [torch.multinomial(p[None], 1, generator=g)[:, 0] for p, g in zip(probs, generator, strict=True)]
        )
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
