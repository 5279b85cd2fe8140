"""Generation metrics against hand-computed cases: BLEU-4, CIDEr, WER, Fréchet distance, label-set accuracy."""
from __future__ import annotations

import numpy as np
import pytest

from opt.tasks.generation_metrics import (bleu4, cider, exact_match, frechet_distance, label_set_accuracy,
                                          normalise, wer)

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
