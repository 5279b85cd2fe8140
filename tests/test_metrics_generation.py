"""Generation metrics against hand-computed cases: BLEU-4, CIDEr, WER, Fréchet distance, label-set accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu

from opt.tasks.generation_metrics import (
    ConstantBleu,
    accuracy_by_field,
    best_constant,
    bleu4,
    blind_caption_scores,
    candidate_pool,
    cider,
    exact_match,
    frechet_distance,
    label_set_accuracy,
    normalise,
    wer,
)

CAPTIONS = ["a red circle on the left", "two blue squares at the top", "a small green star below the heart"]


def test_identical_captions_score_bleu_one_and_cider_ten():
    assert bleu4(CAPTIONS, CAPTIONS) == pytest.approx(1.0, abs=1e-6)
    # every caption has 4-grams, each in one document only: CIDEr-D = 10 (its x10 scale)
    assert cider(CAPTIONS, CAPTIONS) == pytest.approx(10.0, abs=1e-6)


def test_bleu_drops_without_shared_four_grams():
    assert bleu4(["a red circle on the right"], ["a red circle on the left"]) < 1.0
    assert bleu4(["blue squares"], ["a red circle on the left"]) == pytest.approx(0.0, abs=1e-6)
    assert cider(["x y z w", "p q r s", "k l m n"], CAPTIONS) == pytest.approx(0.0, abs=1e-9)


def test_wer_hand_computed():
    assert wer(["A red circle."], ["a red circle"]) == 0.0  # case and punctuation are normalised away
    assert wer(["a red big circle"], ["a red small circle"]) == 0.25  # one substitution in four words
    assert wer(["a red circle"], ["a red small circle"]) == 0.25  # one deletion in four words
    assert wer([""], ["a b"]) == 1.0
    assert normalise("  In THIS, image. ") == "in this image"


def test_frechet_distance_of_a_set_with_itself_and_a_mean_shift():
    x = np.random.default_rng(0).normal(size=(40, 5))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(x, x + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)
    one = x[:1]  # one sample: zero covariance, regularised; the distance is still the mean shift
    assert frechet_distance(one, one + shift) == pytest.approx(float((shift**2).sum()), rel=1e-6)


def test_label_set_accuracy_hand_computed():
    truth = np.array([[1, 1, 0], [0, 0, 1]], dtype=bool)
    assert label_set_accuracy(truth, truth) == 1.0 and exact_match(truth, truth) == 1.0
    pred = np.array([[1, 0, 0], [1, 0, 1]], dtype=bool)  # 1/2 and 1/2
    assert label_set_accuracy(pred, truth) == pytest.approx(0.5)
    assert exact_match(pred, truth) == 0.0


def test_accuracy_by_field_scores_each_field_on_its_own_labels():
    """Right colours, wrong shapes: colour 1, shape 0 (the overall accuracy hides which one failed)."""
    labels = ["color=red", "color=blue", "shape=circle", "shape=star"]
    truth = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], dtype=bool)
    pred = np.array([[1, 0, 0, 1], [0, 1, 1, 0]], dtype=bool)
    assert accuracy_by_field(pred, truth, labels) == {"color": 1.0, "shape": 0.0}
    assert label_set_accuracy(pred, truth) == pytest.approx(1 / 3)


def test_an_empty_hypothesis_scores_as_cocos_scorer_scores_it():
    hypotheses = [CAPTIONS[0], CAPTIONS[1], ""]
    coco, _ = Bleu(4).compute_score(
        {i: [c] for i, c in enumerate(CAPTIONS)}, {i: [h] for i, h in enumerate(hypotheses)}, verbose=0
    )
    assert bleu4(hypotheses, CAPTIONS) == pytest.approx(coco[3])
    assert bleu4(hypotheses, CAPTIONS) < bleu4([CAPTIONS[0], CAPTIONS[1], "a"], CAPTIONS)  # empty earns nothing
    assert bleu4([""] * 3, CAPTIONS) == pytest.approx(0.0, abs=1e-9) and cider([""] * 3, CAPTIONS) == 0.0
    with pytest.raises(ValueError, match="reference"):
        bleu4(["a red circle"], [""])


def test_constant_bleu_equals_cocos_score_of_a_constant_corpus():
    references = CAPTIONS + ["a red circle at the top", "two red circles on the left", "a blue star"]
    score = ConstantBleu(references)
    for candidate in ("a red circle on the left", "two blue circles at the top", "a blue star", "hexagon"):
        assert score(candidate) == pytest.approx(bleu4([candidate] * len(references), references), abs=1e-9)


def test_blind_caption_and_transcript_baselines_pick_the_best_single_train_text():
    train = [
        "a red circle on the left",
        "a red circle on the left",
        "two blue squares",
        "a star",
        "A red circle at the top.",
    ]
    references = ["a red circle on the right", "a red circle at the left", "a red circle on the left top"]
    assert candidate_pool(train) == sorted({normalise(t) for t in train})  # distinct, normalised
    blind = blind_caption_scores(train, references)
    every = [bleu4([c] * 3, references) for c in candidate_pool(train)]
    assert blind["bleu4"] == pytest.approx(max(every)) and blind["bleu4"] > 0
    best, value = best_constant(candidate_pool(train), references, wer, lower_is_better=True)
    assert best == "a red circle on the left" and value == pytest.approx(
        min(wer([c] * 3, references) for c in candidate_pool(train))
    )
