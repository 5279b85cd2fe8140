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
        for _ in range(steps):
            inputs = out.repeat(2, 1) if guided else out
            logits = self.next_logits(inputs, context, cmask, cache)
            if guided:
                conditional, null = logits.float().chunk(2)
                logits = null + guidance * (conditional - null)
            out = torch.cat([out, sample(logits, temperature, top_k, generator)[:, None]], dim=1)
        return out[:, 1:]

    def next_logits(self, prefix: Tensor, context: Tensor, context_mask: Tensor, cache: list | None) -> Tensor:
        """Logits (N,V) of the symbol after `prefix` (N,t+1) (BOS first); with a KV cache only its
        last symbol is run (the cache holds the rest)."""
        t = prefix.shape[1] - 1
        inputs = prefix[:, -1:] if cache is not None else prefix
        x = self.embed(inputs) + self.pos[:, t + 1 - inputs.shape[1] : t + 1]
        return self.head(self.stack(x, causal=True, context=context, context_mask=context_mask, cache=cache))[:, -1]

    @torch.no_grad()
    def beam_search(
        self, context: Tensor, context_valid: Tensor, steps: int, width: int, end: int, length_penalty: float = 1.0
    ) -> Tensor:
        """Beam search with a KV cache -> symbols (B, steps), each row the best of its `width`
        final hypotheses by log-probability / length**length_penalty (length up to and including
        the first `end`; after it the row holds `end`). A hypothesis that has emitted `end` keeps
        its score and its place in the beam; width 1 is greedy decoding."""
        b, device = context.shape[0], context.device
        context, cmask = context.repeat_interleave(width, 0), key_mask(context_valid.repeat_interleave(width, 0))
        seqs = torch.full((b * width, 1), self.bos, dtype=torch.long, device=device)
        scores = torch.full((b, width), float("-inf"), device=device)
        scores[:, 0] = 0.0  # one live hypothesis to start from
        done = torch.zeros(b * width, dtype=torch.bool, device=device)
        lengths = torch.zeros(b * width, device=device)
        cache = [{} for _ in self.stack.blocks]
        for _ in range(steps):
            logp = self.next_logits(seqs, context, cmask, cache).float().log_softmax(-1)  # (BW,V)
            v = logp.shape[1]
            logp[done] = float("-inf")
            logp[done, end] = 0.0  # a finished hypothesis only continues with `end`, at no cost
            top, flat = (scores.reshape(-1, 1) + logp).view(b, width * v).topk(width, dim=1)  # (B,W)
            source = (torch.arange(b, device=device)[:, None] * width + flat // v).reshape(-1)
            symbol = (flat % v).reshape(-1, 1)
            seqs, scores = torch.cat([seqs[source], symbol], dim=1), top
            lengths = lengths[source] + (~done[source]).float()
            done = done[source] | (symbol[:, 0] == end)
            for block in cache:  # each hypothesis continues from its source's keys and values
                block["self"] = {k: x[source] for k, x in block.get("self", {}).items()}
            if done.all():
                break
        best = (scores / lengths.view(b, width).clamp(min=1) ** length_penalty).argmax(dim=1)
        out = seqs.view(b, width, -1)[torch.arange(b, device=device), best, 1:]
        return torch.nn.functional.pad(out, (0, steps - out.shape[1]), value=end)


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
