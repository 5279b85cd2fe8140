"""Transformer building blocks: pre-norm attention blocks over scaled_dot_product_attention.

Shapes: B batch, T query tokens, S key tokens, D width, H heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# On CPU, PyTorch's flash-attention backward in bf16 is ~9x slower than in fp32, so under
# autocast we run attention itself in fp32 (the matrix products around it stay bf16).
ATTENTION_IN_FP32_ON_CPU = True


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool) -> Tensor:
    """(B,H,T,Dh), (B,H,S,Dh) x2, mask (B,1,T|1,S) bool (True = attend) -> (B,H,T,Dh)."""
    if q.device.type == "cpu" and torch.is_autocast_enabled("cpu") and ATTENTION_IN_FP32_ON_CPU:
        with torch.autocast("cpu", enabled=False):
            out = attend(q.float(), k.float(), v.float(), mask, causal)
        return out.to(torch.get_autocast_dtype("cpu"))
    t, s = q.shape[-2], k.shape[-2]
    if causal and mask is None and t == s:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if causal:  # queries are the last t of s positions (KV cache): bottom-right aligned
        tril = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
        mask = tril if mask is None else mask & tril
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Attention(nn.Module):
    """Multi-head attention; self-attention when `context` is None. Optional KV cache (dict)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def split(self, x: Tensor) -> Tensor:  # (B,T,D) -> (B,H,T,Dh)
        b, t, d = x.shape
        return x.view(b, t, self.heads, d // self.heads).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        causal: bool = False,
        cache: dict | None = None,
    ) -> Tensor:
        q = self.split(self.q(x))  # (B,H,T,Dh)
        if cache is not None and context is not None and "k" in cache:
            k, v = cache["k"], cache["v"]  # cross-attention: the context never changes
        else:
            k, v = (self.split(t) for t in self.kv(x if context is None else context).chunk(2, dim=-1))
            if cache is not None and context is None and "k" in cache:  # self-attention: append
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            if cache is not None:
                cache["k"], cache["v"] = k, v
        y = attend(q, k, v, mask, causal and context is None)  # (B,H,T,Dh)
        y = y.transpose(1, 2).reshape(x.shape)  # (B,T,D)
        return F.dropout(self.out(y), self.dropout, self.training)


class MLP(nn.Module):
    def __init__(self, dim: int, ratio: float, dropout: float):
        super().__init__()
        self.fc = nn.Linear(dim, int(dim * ratio))
        self.proj = nn.Linear(int(dim * ratio), dim)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(self.proj(F.gelu(self.fc(x))), self.dropout, self.training)


class Block(nn.Module):
    """Pre-norm Transformer block; with `cross=True` it also cross-attends a context (decoder)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, cross: bool = False):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads, dropout)
        self.cross = Attention(dim, heads, dropout) if cross else None
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.norm2, self.mlp = nn.LayerNorm(dim), MLP(dim, mlp_ratio, dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: dict | None = None,
    ) -> Tensor:
        self_cache = cache.setdefault("self", {}) if cache is not None else None
        x = x + self.attn(self.norm1(x), mask=mask, causal=causal, cache=self_cache)
        if self.cross is not None:
            cross_cache = cache.setdefault("cross", {}) if cache is not None else None
            x = x + self.cross(self.norm_cross(x), context=context, mask=context_mask, cache=cross_cache)
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    """`layers` blocks then a final norm."""

    def __init__(self, layers: int, dim: int, heads: int, mlp_ratio: float, dropout: float, cross: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, cross) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        causal: bool = False,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        cache: list | None = None,
    ) -> Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, mask, causal, context, context_mask, None if cache is None else cache[i])
        return self.norm(x)


def key_mask(valid: Tensor) -> Tensor:
    """(B,S) bool of real tokens -> (B,1,1,S) attention mask broadcast over heads and queries."""
    return valid[:, None, None, :]
