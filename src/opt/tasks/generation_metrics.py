"""Metrics of the generation tasks, from maintained implementations where they exist.

BLEU-4 and CIDEr from pycocoevalcap (pure Python scorers; we normalise text ourselves instead of
its Java PTB tokenizer), WER from jiwer, and a Fréchet distance between two feature sets
(the FID formula, with a regularised covariance so a handful of samples still gives a number).
"""
from __future__ import annotations

import re

import jiwer
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from scipy import linalg

PUNCTUATION = re.compile(r"[^\w\s']")
EMPTY = "<empty>"  # stands in for an empty hypothesis, which the scorers reject


def normalise(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed (the tokenizer's decode lower-cases too)."""
    return " ".join(PUNCTUATION.sub(" ", text.lower()).split())


def _corpus(candidates: list[str], references: list[str]) -> tuple[dict, dict]:
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need as many candidates as references (> 0), got {len(candidates)} and {len(references)}")
    hyps = {i: [normalise(c) or EMPTY] for i, c in enumerate(candidates)}
    refs = {i: [normalise(r) or EMPTY] for i, r in enumerate(references)}
    return refs, hyps


def bleu4(candidates: list[str], references: list[str]) -> float:
    """Corpus BLEU-4 of candidates against one reference each (pycocoevalcap's Bleu(4))."""
    refs, hyps = _corpus(candidates, references)
    scores, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
    return float(scores[3])


def cider(candidates: list[str], references: list[str]) -> float:
    """CIDEr-D of candidates against one reference each; idf comes from the references, so a
    single-sample corpus always scores 0."""
    refs, hyps = _corpus(candidates, references)
    score, _ = Cider().compute_score(refs, hyps)
    return float(score)


def wer(hypotheses: list[str], references: list[str]) -> float:
    """Word error rate over the corpus (jiwer), both sides normalised."""
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    if len(refs) != len(hyps) or not refs or not all(refs):
        raise ValueError("need as many hypotheses as references, and no empty reference")
    return float(jiwer.wer(refs, hyps))


def moments(features: np.ndarray, eps: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """(N,D) -> mean (D,), covariance (D,D) + eps*I (zero covariance when N < 2)."""
    x = np.asarray(features, dtype=np.float64)
    mu = x.mean(axis=0)
    sigma = np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]) if len(x) > 1 else np.zeros((x.shape[1],) * 2)
    return mu, sigma + eps * np.eye(x.shape[1])


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) between feature sets (N,D), (M,D)."""
    mu_a, s_a = moments(a, eps)
    mu_b, s_b = moments(b, eps)
    root = linalg.sqrtm(s_a @ s_b)
    root = np.real(root)
    distance = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root))
    return max(distance, 0.0)


def label_set_accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Multi-label accuracy: mean over samples of |pred & true| / |pred | true| ((N,K) bool; 1 if both empty)."""
    pred, true = np.asarray(predicted, dtype=bool), np.asarray(truth, dtype=bool)
    union = (pred | true).sum(axis=1)
    inter = (pred & true).sum(axis=1)
    return float(np.where(union > 0, inter / np.maximum(union, 1), 1.0).mean())


def exact_match(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of samples whose whole predicted label set is right ((N,K) bool)."""
    return float((np.asarray(predicted, dtype=bool) == np.asarray(truth, dtype=bool)).all(axis=1).mean())
