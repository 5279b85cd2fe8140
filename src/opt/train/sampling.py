"""Deterministic, resumable batch order: epoch e is a permutation drawn from (seed, e).

A position (epoch, batch index) says exactly which samples come next, so a resumed run
continues with the same batches. Under data parallelism every process takes its slice of
each global batch (a distributed sampler with no padding: the last partial batch is dropped).

With `lengths`, batches are length-bucketed: each run of `bucket` consecutive batches of the
permutation is sorted by length before it is cut into batches, and the batches are then shuffled,
so a batch holds samples of similar length and is padded little (as fairseq and ESPnet do).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass
class Position:
    epoch: int = 0
    batch: int = 0


class BatchOrder:
    def __init__(
        self,
        size: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        lengths: torch.Tensor | None = None,
        bucket: int = 16,
    ):
        """lengths (size,): bucket batches by them (None: plain shuffling); bucket: batches sorted together."""
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} must divide evenly over {world} processes")
        if size < global_batch:
            raise ValueError(f"dataset of {size} samples is smaller than one batch of {global_batch}")
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"{len(lengths)} lengths for a dataset of {size} samples")
        self.size, self.global_batch, self.seed, self.rank, self.world = size, global_batch, seed, rank, world
        self.lengths, self.bucket = lengths, bucket
        self.batches_per_epoch = size // global_batch
        self.position = Position()
        self._epoch, self._perm = -1, None

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            perm = torch.randperm(self.size, generator=g)
            self._epoch, self._perm = epoch, perm if self.lengths is None else self.bucketed(perm, g)
        return self._perm

    def bucketed(self, perm: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The epoch's permutation with every `bucket` batches sorted by length, then batches shuffled."""
        n = self.batches_per_epoch * self.global_batch
        pool = self.bucket * self.global_batch
        chunks = [perm[i : i + pool] for i in range(0, n, pool)]
        chunks[-1] = chunks[-1][: n - (len(chunks) - 1) * pool]
        ordered = torch.cat([c[torch.argsort(self.lengths[c], stable=True)] for c in chunks])
        batches = ordered.view(self.batches_per_epoch, self.global_batch)
        return batches[torch.randperm(self.batches_per_epoch, generator=g)].reshape(-1)

    def next_indices(self) -> list[int]:
        """This process's sample indices of the next global batch; advances the position."""
        p = self.position
        start = p.batch * self.global_batch
        batch = self.permutation(p.epoch)[start : start + self.global_batch]
        local = self.global_batch // self.world
        self.position = (
            Position(p.epoch + 1, 0) if p.batch + 1 == self.batches_per_epoch else Position(p.epoch, p.batch + 1)
        )
        return batch[self.rank * local : (self.rank + 1) * local].tolist()

    def state(self) -> dict:
        return asdict(self.position)

    def restore(self, state: dict) -> None:
        self.position = Position(**state)
