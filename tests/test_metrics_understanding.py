"""Ranking, mAP and accuracy metrics of the understanding tasks against hand-computed cases."""
from __future__ import annotations

import math

import pytest
import torch

from opt.tasks.metrics import accuracy_by_type, mean_average_precision, recall_at_k, rerank_top_k


def test_perfect_ranking_gives_recall_one():
    assert recall_at_k(torch.eye(20) + 0.01 * torch.rand(20, 20)) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}


def test_reversed_ranking_gives_recall_zero():
    # every match scored below every other item: rank 19 of 20
    assert recall_at_k(-torch.eye(20)) == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0}


def test_recall_known_small_case():
    # match ranks: query 0 -> 0, query 1 -> 1 (one above), query 2 -> 2 (two above)
    sim = torch.tensor([[0.9, 0.1, 0.2],
                        [0.8, 0.5, 0.1],
                        [0.7, 0.6, 0.3]])
    r = recall_at_k(sim, ks=(1, 2, 3))
    assert r == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": 1.0}


def test_rerank_reorders_only_the_top_k():
    sim = torch.tensor([[0.5, 0.9, 0.8, 0.1]])  # match (item 0) is third
    # re-score the top-2 candidates (items 1, 2): neither lifts the match in
    assert recall_at_k(rerank_top_k(sim, 2, lambda q, c: torch.zeros(len(c))), ks=(1, 3))["R@1"] == 0.0
    # re-score the top-3, preferring item 0: the match goes first
    out = rerank_top_k(sim, 3, lambda q, c: (c == 0).float())
    assert out[0].argsort(descending=True).tolist() == [0, 1, 2, 3]
    assert recall_at_k(out, ks=(1,))["R@1"] == 1.0


def test_map_of_a_perfect_scorer_is_one():
    labels = [[1, 0, 1], [0, 1, 1], [0, 0, 1], [1, 1, 0]]
    scores = [[0.9 if v else 0.1 for v in row] for row in labels]
    assert mean_average_precision(scores, labels) == 1.0


def test_map_known_case_and_labels_without_positives_skipped():
    # label 0: positives at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2; label 1 never positive: skipped
    labels = [[1, 0], [0, 0], [1, 0], [0, 0]]
    scores = [[0.9, 0.3], [0.8, 0.2], [0.7, 0.9], [0.1, 0.5]]
    assert mean_average_precision(scores, labels) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(mean_average_precision(scores, [[0, 0]] * 4))


def test_accuracy_by_type():
    kinds = ["colour", "count", "relation", "relation"]
    out = accuracy_by_type(["red", "2", "yes", "no"], ["red", "3", "yes", "yes"], kinds)
    assert out == {"accuracy": 0.5, "accuracy/colour": 1.0, "accuracy/count": 0.0, "accuracy/relation": 0.5}
