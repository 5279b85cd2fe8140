"""Masking as small pure functions; all randomness comes from an explicit `Draw`.

Token level: BERT-style text masking, random patch masks. Modality level: whole-modality
dropping. Sample level: OPT's five tri-modal matching cases.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -100  # label of positions that carry no loss


@dataclass
class Draw:
    """Random numbers for one batch from a CPU generator. Under data parallelism every process
    holds the same generator state, draws for the `global_rows` of the global batch and keeps
    its `rows`, so a sample's masks do not depend on how the batch is split across processes."""

    generator: torch.Generator
    rows: slice | None = None
    global_rows: int | None = None

    def _local(self, full: Tensor, device) -> Tensor:
        return (full if self.rows is None else full[self.rows]).to(device)

    def _shape(self, shape: tuple) -> tuple:
        return shape if self.rows is None else (self.global_rows, *shape[1:])

    def rand(self, shape: tuple, device="cpu") -> Tensor:
        return self._local(torch.rand(self._shape(shape), generator=self.generator), device)

    def randint(self, low: int, high: int, shape: tuple, device="cpu") -> Tensor:
        return self._local(torch.randint(low, high, self._shape(shape), generator=self.generator), device)


def choose_positions(valid: Tensor, ratio: float, draw: Draw) -> Tensor:
    """(B,N) bool of candidates -> (B,N) bool: round(ratio * count) of them per row, at least one."""
    scores = draw.rand(valid.shape, valid.device).masked_fill(~valid, 2.0)
    count = valid.sum(1, keepdim=True)
    k = torch.clamp((count.float() * ratio).round().long(), min=1).minimum(count)
    rank = scores.argsort(dim=1).argsort(dim=1)  # rank of each position among its row
    return (rank < k) & valid


def mask_text(
    tokens: Tensor, count: Tensor, ratio: float, mask_id: int, vocab_size: int, n_special: int, draw: Draw
) -> tuple[Tensor, Tensor]:
    """BERT masking of real, non-special tokens: of the chosen ones 80% -> [MASK], 10% -> a random
    token, 10% unchanged. tokens (B,L) -> (inputs (B,L), labels (B,L) with IGNORE where unchosen)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
    candidates = (positions < count[:, None]) & (tokens >= n_special)
    chosen = choose_positions(candidates, ratio, draw)
    labels = torch.where(chosen, tokens, torch.full_like(tokens, IGNORE))
    roll = draw.rand(tokens.shape, tokens.device)
    random_tokens = draw.randint(n_special, vocab_size, tokens.shape, tokens.device)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_tokens, inputs)
    return inputs, labels


def mask_patches(valid: Tensor, ratio: float, draw: Draw) -> Tensor:
    """(B,N) bool of real patches -> (B,N) bool of patches to hide."""
    return choose_positions(valid, ratio, draw)


def drop_modalities(batch_size: int, probabilities: dict, draw: Draw, device: torch.device | str = "cpu") -> dict:
    """modality -> drop probability  =>  modality -> (B,) bool present; never drops all of a sample's."""
    names = list(probabilities)
    p = torch.tensor([probabilities[m] for m in names], device=device)
    present = draw.rand((batch_size, len(names)), device) >= p  # (B,M)
    none_left = ~present.any(dim=1)
    keep = draw.randint(0, len(names), (batch_size,), device)
    present[none_left, keep[none_left]] = True
    return {m: present[:, i] for i, m in enumerate(names)}


def matching_cases(
    batch_size: int, draw: Draw, cases: int = 5, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw one of OPT's matching cases per sample and the sources of its image and audio.

    0 all matched; 1 image from another sample; 2 audio from another sample; 3 image and audio
    both from one other sample; 4 image and audio from two different other samples.
    Returns (case (B,), image_source (B,), audio_source (B,)) as sample indices. Swaps stay
    within this process's batch, so matching draws from the local batch alone.
    """
    draw = Draw(draw.generator)
    if batch_size < 3:
        raise ValueError("tri-modal matching needs a batch of at least 3 samples")
    case = draw.randint(0, cases, (batch_size,), device)
    index = torch.arange(batch_size, device=device)
    shift_a = draw.randint(1, batch_size, (batch_size,), device)
    shift_b = draw.randint(1, batch_size - 1, (batch_size,), device)
    shift_b = shift_b + (shift_b >= shift_a).long()  # in 1..B-1 and != shift_a
    other_a, other_b = (index + shift_a) % batch_size, (index + shift_b) % batch_size
    image_source = torch.where((case == 1) | (case == 3) | (case == 4), other_a, index)
    audio_source = torch.where((case == 2) | (case == 3), other_a, torch.where(case == 4, other_b, index))
    return case, image_source, audio_source
