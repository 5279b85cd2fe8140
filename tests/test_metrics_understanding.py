"""Ranking, mAP and accuracy metrics of the understanding tasks against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from opt.data.questions import Question, prior_answers
from opt.tasks.metrics import (
    accuracy_by_type,
    chance_recall,
    lower_is_better,
    mean_average_precision,
    recall_at_k,
    rerank_top_k,
)


def test_perfect_ranking_gives_recall_one():
    assert recall_at_k(torch.eye(20) + 0.01 * torch.rand(20, 20)) == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}


def test_reversed_ranking_gives_recall_zero():
    # every match scored below every other item: rank 19 of 20
    assert recall_at_k(-torch.eye(20)) == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0}


def test_recall_known_small_case():
    # match ranks: query 0 -> 0, query 1 -> 1 (one above), query 2 -> 2 (two above)
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.8, 0.5, 0.1], [0.7, 0.6, 0.3]])
    r = recall_at_k(sim, ks=(1, 2, 3))
    assert r == {"R@1": pytest.approx(1 / 3), "R@2": pytest.approx(2 / 3), "R@3": 1.0}


def test_ties_earn_no_credit_a_constant_model_ranks_every_match_last():
    constant = torch.zeros(5, 5)  # every embedding equal: every item ties with the match
    assert recall_at_k(constant, ks=(1, 4, 5)) == {"R@1": 0.0, "R@4": 0.0, "R@5": 1.0}
    assert recall_at_k(constant)["R@1"] < chance_recall(5)["R@1"]
    tie = torch.tensor([[0.5, 0.5, 0.1], [0.2, 0.9, 0.0], [0.0, 0.0, 1.0]])  # query 0 ties with item 1
    assert recall_at_k(tie, ks=(1, 2)) == {"R@1": pytest.approx(2 / 3), "R@2": 1.0}


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_similarities_are_an_error_not_a_score(bad):
    sim = torch.eye(4)
    sim[2, 1] = bad
    with pytest.raises(ValueError, match="non-finite"):
        recall_at_k(sim)
    with pytest.raises(ValueError, match="non-finite"):
        recall_at_k(torch.full((4, 4), float("nan")))


def test_recall_reads_rows_as_queries_a_transposed_similarity_scores_otherwise():
    # rows are queries: each row's match (the diagonal) is its best item, but not each column's
    sim = torch.tensor([[0.9, 0.8, 0.7], [0.0, 0.5, 0.4], [0.0, 0.0, 0.3]])
    assert recall_at_k(sim, ks=(1,))["R@1"] == 1.0
    assert recall_at_k(sim.t(), ks=(1,))["R@1"] == pytest.approx(1 / 3)  # the other direction: two matches lose


def test_chance_recall_is_k_over_n_and_a_random_model_scores_about_it():
    assert chance_recall(200) == {"R@1": 0.005, "R@5": 0.025, "R@10": 0.05}
    assert chance_recall(3, ks=(1, 5)) == {"R@1": pytest.approx(1 / 3), "R@5": 1.0}
    g = torch.Generator().manual_seed(0)
    random_r10 = sum(recall_at_k(torch.rand(200, 200, generator=g))["R@10"] for _ in range(20)) / 20
    assert random_r10 == pytest.approx(0.05, abs=0.015)


def test_lower_is_better_only_for_error_and_distance():
    assert lower_is_better("wer") and lower_is_better("speech_recognition.test.wer")
    assert lower_is_better("frechet_distance") and not lower_is_better("text_to_image/R@1")
    assert not lower_is_better("accuracy") and not lower_is_better("cider_image_audio")


def test_blind_vqa_answers_with_the_most_common_train_answer_of_the_question():
    train = [Question("colour", "what colour is the circle?", a) for a in ("red", "red", "blue")]
    train += [
        Question("count", "how many objects are there?", "2"),
        Question("colour", "what colour is the star?", "pink"),
    ]
    asked = [
        Question("colour", "what colour is the circle?", "blue"),
        Question("count", "how many objects are there?", "2"),
        Question("colour", "what colour is the heart?", "red"),
    ]  # never asked in train: its type's answer
    assert prior_answers(train, asked) == ["red", "2", "red"]


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
