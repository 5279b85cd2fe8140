"""Batch order: every sample once per epoch, reproducible, resumable, and length-bucketed."""

import torch

from opt.train.sampling import BatchOrder


def epoch(order: BatchOrder) -> list[list[int]]:
    return [order.next_indices() for _ in range(order.batches_per_epoch)]


def padding_share(batches: list[list[int]], lengths: torch.Tensor) -> float:
    """Share of a padded batch (each padded to its longest sample) that is padding."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1 - sum(int(lengths[b].sum()) for b in batches) / padded


def test_bucketed_batches_cover_the_epoch_once_and_pad_far_less():
    lengths = torch.randint(10, 200, (1000,), generator=torch.Generator().manual_seed(0))
    plain = epoch(BatchOrder(1000, 32, seed=0))
    bucketed = epoch(BatchOrder(1000, 32, seed=0, lengths=lengths, bucket=16))
    seen = [i for b in bucketed for i in b]
    assert len(seen) == len(set(seen)) == 31 * 32  # the partial last batch is dropped, nothing repeats
    assert padding_share(bucketed, lengths) < 0.25 * padding_share(plain, lengths)


def test_bucketed_order_is_shuffled_reproducible_and_resumes_where_it_stopped():
    lengths = torch.arange(640).flip(0)  # sorted data: without the batch shuffle batches would come longest first
    order = BatchOrder(640, 32, seed=3, lengths=lengths, bucket=4)
    first = epoch(order)
    again = epoch(BatchOrder(640, 32, seed=3, lengths=lengths, bucket=4))
    assert first == again
    longest = [int(lengths[b].max()) for b in first]
    assert longest != sorted(longest, reverse=True) and longest != sorted(longest)
    resumed = BatchOrder(640, 32, seed=3, lengths=lengths, bucket=4)
    resumed.restore({"epoch": 0, "batch": 7})
    assert resumed.next_indices() == first[7]
    assert epoch(order) != first  # the next epoch is another order
