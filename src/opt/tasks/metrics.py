"""Ranking and classification metrics of the understanding tasks, checked by hand in tests.

Retrieval: R@k from a (Q,G) similarity with query i matching gallery item i (the pretrain
`recall_at_k`, reused), plus re-ranking the top-k. Classification: macro mAP over labels
with at least one positive (scikit-learn). VQA: accuracy overall and per question type.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from opt.train.zero_shot import chance_recall, recall_at_k

BLIND = "blind"  # eval.json: task -> split -> {metric: value, BLIND: {metric: blind baseline}}
LOWER_IS_BETTER = ("wer", "frechet_distance")  # every other metric: higher is better
HEADLINE = {
    # prompt_to_image and prompt_audio_to_image (built-in data only) are reported, not gated: the
    # default run's prompt_to_image sits near chance (the model does not yet tell shapes apart, issue
    # 15), prompt_audio_to_image clears it through the narration (README: the main job's table)
    "retrieval": ("text_to_image/R@1", "image_to_text/R@1", "audio_to_image/R@1", "text_audio_to_image/R@1"),
    "classification": ("mAP",),
    "vqa": ("accuracy",),
    "captioning": ("bleu4", "cider"),
    "speech_recognition": ("wer",),
    "text_to_image": ("attribute_accuracy", "frechet_distance"),
}
# task -> the metrics `opt check` and `opt compare` report


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` ("wer", "frechet_distance", also as the end of a dotted
    path like "speech_recognition.test.wer") is the better one."""
    return metric.split("/")[-1].split(".")[-1].startswith(LOWER_IS_BETTER)


__all__ = [
    "BLIND",
    "HEADLINE",
    "lower_is_better",
    "recall_at_k",
    "chance_recall",
    "rerank_top_k",
    "mean_average_precision",
    "accuracy_by_type",
]


def rerank_top_k(similarity: torch.Tensor, k: int, rescore) -> torch.Tensor:
    """similarity (Q,G) -> the same with each query's top-k reordered by `rescore(q, cands) -> (k,)`.

    Re-ranked candidates keep the top-k places (their scores are lifted above every other
    item), ordered among themselves by the new scores; the rest keep their order."""
    k = min(k, similarity.shape[1])
    out = similarity.clone().float()
    top = similarity.topk(k, dim=1).indices  # (Q,k)
    for q in range(similarity.shape[0]):
        scores = torch.as_tensor(rescore(q, top[q]), dtype=torch.float32)
        order = scores.argsort(descending=True)
        ranked = top[q][order]
        out[q, ranked] = float(similarity.max()) + torch.arange(k, 0, -1, dtype=torch.float32)
    return out


def mean_average_precision(scores, labels) -> float:
    """scores (N,C) float, labels (N,C) {0,1} -> mean over labels with >= 1 positive of the AP.

    NaN when no label has a positive."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(int)
    keep = labels.sum(axis=0) > 0
    if not keep.any():
        return float("nan")
    aps = [average_precision_score(labels[:, c], scores[:, c]) for c in np.flatnonzero(keep)]
    return float(np.mean(aps))


def accuracy_by_type(predicted: list, gold: list, types: list) -> dict:
    """Parallel lists -> {"accuracy": share correct, "accuracy/<type>": share correct of that type}."""
    correct = np.array([p == g for p, g in zip(predicted, gold)], dtype=float)
    out = {"accuracy": float(correct.mean()) if len(correct) else float("nan")}
    types = np.asarray(types)
    for t in sorted(set(types.tolist())):
        out[f"accuracy/{t}"] = float(correct[types == t].mean())
    return out
