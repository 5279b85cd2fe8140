"""Masking as small pure functions; all randomness comes from an explicit `Draw`.

Token level: BERT-style text masking, random patch masks. Modality level: whole-modality
dropping, or setups that hold one modality out of the context for a decoder to generate. Sample
level: OPT's five tri-modal matching cases, with random or hard negatives.
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

    def first(self, n: int) -> Draw:
        """The draw for the first `n` rows of every process's batch: a global batch of
        world size x n, of which this process keeps its n (itself when not data-parallel)."""
        if self.rows is None:
            return self
        local = self.rows.stop - self.rows.start
        rank, world = self.rows.start // local, self.global_rows // local
        return Draw(self.generator, slice(rank * n, (rank + 1) * n), world * n)

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


ALL, TEXT_HELD_OUT, IMAGE_HELD_OUT = 0, 1, 2  # a sample's setup: what the context leaves out


def draw_setups(
    batch_size: int, hold_out_text: float, hold_out_image: float, use_audio: bool, draw: Draw, device="cpu"
) -> tuple[Tensor, dict]:
    """Modality-level masking: each sample's setup and which modalities its fused context holds.

    A share `hold_out_text` of samples leaves its text out (context image+audio, image or audio,
    equally likely; image alone without audio), so the text decoder writes a caption or a
    transcript; a share `hold_out_image` leaves its image out (context text+audio or text), so the
    image decoder draws it; the rest keep every modality (token-level objectives).
    Returns (setup (B,) in {ALL, TEXT_HELD_OUT, IMAGE_HELD_OUT}, modality -> (B,) bool present).
    """
    if hold_out_text + hold_out_image > 1:
        raise ValueError(f"hold_out_text + hold_out_image must be at most 1, got {hold_out_text} + {hold_out_image}")
    roll, context = draw.rand((batch_size,), device), draw.randint(0, 6, (batch_size,), device)
    setup = torch.full((batch_size,), ALL, dtype=torch.long, device=device)
    setup[roll < hold_out_text + hold_out_image] = IMAGE_HELD_OUT
    setup[roll < hold_out_text] = TEXT_HELD_OUT
    text_out, image_out = setup == TEXT_HELD_OUT, setup == IMAGE_HELD_OUT
    if use_audio:  # context % 3 for text held out: 0 image+audio, 1 image, 2 audio; % 2 for image held out
        image = ~image_out & ~(text_out & (context % 3 == 2))
        audio = ~(text_out & (context % 3 == 1)) & ~(image_out & (context % 2 == 1))
        return setup, {"text": ~text_out, "image": image, "audio": audio}
    return setup, {"text": ~text_out, "image": ~image_out}


def matching_cases(
    rows: int,
    draw: Draw,
    cases: int = 5,
    device: torch.device | str = "cpu",
    image_weights: Tensor | None = None,
    audio_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Draw one of OPT's matching cases for each of the first `rows` samples of a batch, and the
    sources of its image and audio.

    0 all matched; 1 image from another sample; 2 audio from another sample; 3 image and audio
    both from one other sample; 4 image and audio from two different other samples.
    Without weights the other samples are uniform over the `rows` samples. With hard negatives
    they come from a batch of P >= rows samples, drawn in proportion to row i of `image_weights`
    (rows,P) (the second one of case 4: `audio_weights`, uniform when None); weights that favour
    the samples most similar to sample i give hard negatives (ALBEF).
    Returns (case (rows,), image_source (rows,), audio_source (rows,)) as sample indices. Swaps
    stay within this process's batch, so matching draws from the local batch alone.
    """
    draw = Draw(draw.generator)
    pool = rows if image_weights is None else image_weights.shape[1]
    if pool < 3:
        raise ValueError("tri-modal matching needs a batch of at least 3 samples")
    case = draw.randint(0, cases, (rows,), device)
    index = torch.arange(rows, device=device)
    if image_weights is None:
        shift_a = draw.randint(1, rows, (rows,), device)
        shift_b = draw.randint(1, rows - 1, (rows,), device)
        shift_b = shift_b + (shift_b >= shift_a).long()  # in 1..B-1 and != shift_a
        other_a, other_b = (index + shift_a) % rows, (index + shift_b) % rows
    else:
        other_a = pick_other(image_weights, draw.generator).to(device)
        other_b = pick_other(audio_weights, draw.generator, other_a.cpu(), image_weights.shape).to(device)
    image_source = torch.where((case == 1) | (case == 3) | (case == 4), other_a, index)
    audio_source = torch.where((case == 2) | (case == 3), other_a, torch.where(case == 4, other_b, index))
    return case, image_source, audio_source


def pick_other(
    weights: Tensor | None, generator: torch.Generator, also_not: Tensor | None = None, shape: tuple | None = None
) -> Tensor:
    """(rows,) index of another sample for each row, drawn in proportion to `weights` (rows,P)
    (uniform over `shape` when None), never the row itself (column i) nor `also_not` (rows,)."""
    w = torch.ones(shape) if weights is None else weights.detach().float().cpu().clamp(min=0) + 1e-6
    rows, pool = w.shape
    w = w.masked_fill(torch.eye(rows, pool, dtype=torch.bool), 0.0)
    if also_not is not None:
        w[torch.arange(rows), also_not] = 0.0
    return torch.multinomial(w, 1, generator=generator)[:, 0]


def swap_words(tokens: Tensor, count: Tensor, groups: list[Tensor], draw: Draw) -> tuple[Tensor, Tensor]:
    """Captions with one word swapped for another of its group (NegCLIP's hard-negative captions:
    "a red circle" -> "a red star"). tokens (B,L), count (B,), groups: id sets (G_k,) of
    interchangeable words -> (swapped tokens (B,L), has (B,) bool: the row held a word to swap;
    rows without one come back unchanged). Each row swaps one of its group words, drawn uniformly,
    for a different member of the same group, drawn uniformly."""
    vocab = max(int(tokens.max()), max(int(g.max()) for g in groups)) + 1
    group_of = torch.full((vocab,), -1, dtype=torch.long)
    slot_of = torch.zeros(vocab, dtype=torch.long)
    for k, ids in enumerate(groups):
        group_of[ids], slot_of[ids] = k, torch.arange(len(ids))
    table = torch.nn.utils.rnn.pad_sequence(list(groups), batch_first=True)  # (K, max G_k)
    sizes = torch.tensor([len(g) for g in groups])
    cpu = tokens.cpu()
    real = torch.arange(cpu.shape[1])[None, :] < count.cpu()[:, None]
    group = torch.where(real, group_of[cpu], -1)  # (B,L)
    scores = draw.rand(cpu.shape).masked_fill(group < 0, -1.0)
    position = scores.argmax(1)  # (B,) a random swappable position of each row
    has = (group >= 0).any(1)
    rows = torch.arange(cpu.shape[0])
    word = cpu[rows, position]
    k = group_of[word].clamp(min=0)
    offset = 1 + (draw.rand((cpu.shape[0],)) * (sizes[k] - 1)).long()  # 1 .. G_k - 1: never itself
    new = table[k, (slot_of[word] + offset) % sizes[k]]
    swapped = cpu.clone()
    swapped[rows[has], position[has]] = new[has]
    return swapped.to(tokens.device), has.to(tokens.device)
