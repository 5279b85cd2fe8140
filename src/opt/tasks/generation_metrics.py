"""Metrics of the generation tasks, from maintained implementations where they exist.

BLEU-4 and CIDEr from pycocoevalcap (pure Python scorers; we normalise text ourselves instead of
its Java PTB tokenizer), WER from jiwer, and a Fréchet distance between two feature sets
(the FID formula, with a regularised covariance so a handful of samples still gives a number).
"""

from __future__ import annotations

import re
from collections import Counter

import jiwer
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from scipy import linalg

PUNCTUATION = re.compile(r"[^\w\s']")
BLIND_POOL = 200  # distinct train texts tried as the constant answer of a blind baseline
BLIND_SHORTLIST = 5  # of those, the ones with most n-gram overlap are scored by the COCO scorers


def normalise(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed (the tokenizer's decode lower-cases too)."""
    return " ".join(PUNCTUATION.sub(" ", text.lower()).split())


def _corpus(candidates: list[str], references: list[str]) -> tuple[dict, dict]:
    """Normalised {i: [reference]}, {i: [candidate]}. An empty candidate stays empty and scores
    as COCO's scorer scores it (no n-gram matches); an empty reference is an error."""
    if len(candidates) != len(references) or not candidates:
        raise ValueError(f"need as many candidates as references (> 0), got {len(candidates)} and {len(references)}")
    refs = {i: [normalise(r)] for i, r in enumerate(references)}
    if not all(r[0] for r in refs.values()):
        raise ValueError("a reference caption is empty")
    return refs, {i: [normalise(c)] for i, c in enumerate(candidates)}


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


def candidate_pool(texts: list[str], size: int = BLIND_POOL) -> list[str]:
    """Up to `size` distinct normalised texts, evenly spaced over the sorted distinct ones."""
    unique = sorted({normalise(t) for t in texts} - {""})
    return unique[:: max(1, len(unique) // size)][:size]


def ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


class ConstantBleu:
    """Corpus BLEU-4 of one candidate given as every hypothesis, from n-gram counts of the
    references made once, with pycocoevalcap's formula (its tiny smoothing and brevity penalty):
    a fast ranking of constant captions before the best few are scored by the scorers themselves."""

    def __init__(self, references: list[str]):
        refs = [normalise(r).split() for r in references]
        self.counts = [[ngrams(ref, n) for ref in refs] for n in range(1, 5)]
        self.ref_words = sum(map(len, refs))

    def __call__(self, candidate: str) -> float:
        words, n_refs, product = candidate.split(), len(self.counts[0]), 1.0
        for n, ref_counts in enumerate(self.counts, start=1):
            hyp = ngrams(words, n)
            correct = sum(min(c, ref[g]) for ref in ref_counts for g, c in hyp.items())
            product *= (correct + 1e-15) / (max(0, len(words) - n + 1) * n_refs + 1e-9)
        ratio = (len(words) * n_refs + 1e-15) / (self.ref_words + 1e-9)
        return float(product**0.25 * (np.exp(1 - 1 / ratio) if ratio < 1 else 1.0))


def best_constant(
    candidates: list[str], references: list[str], score, lower_is_better: bool = False
) -> tuple[str, float]:
    """The candidate that, given as every hypothesis, scores best against `references` -> (it, score)."""
    scored = [(score([c] * len(references), references), c) for c in candidates]
    value, best = (min if lower_is_better else max)(scored, key=lambda t: t[0])
    return best, value


def blind_caption_scores(train_texts: list[str], references: list[str]) -> dict:
    """BLEU-4 and CIDEr of the best single train text given for every item (blind baseline):
    the BLIND_SHORTLIST texts of the pool with the highest constant BLEU, scored exactly."""
    pool = candidate_pool(train_texts)
    shortlist = sorted(pool, key=ConstantBleu(references), reverse=True)[:BLIND_SHORTLIST]
    return {
        "bleu4": best_constant(shortlist, references, bleu4)[1],
        "cider": best_constant(shortlist, references, cider)[1],
    }


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


def accuracy_by_field(predicted: np.ndarray, truth: np.ndarray, labels: list[str]) -> dict[str, float]:
    """label_set_accuracy over the columns of each field of `labels` ("color=red" is field
    "color"): where a generator loses, colour, shape or size ((N,K) bool)."""
    fields = sorted({label.split("=")[0] for label in labels})
    columns = {f: [k for k, label in enumerate(labels) if label.split("=")[0] == f] for f in fields}
    return {f: label_set_accuracy(np.asarray(predicted)[:, c], np.asarray(truth)[:, c]) for f, c in columns.items()}


def exact_match(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of samples whose whole predicted label set is right ((N,K) bool)."""
    return float((np.asarray(predicted, dtype=bool) == np.asarray(truth, dtype=bool)).all(axis=1).mean())
