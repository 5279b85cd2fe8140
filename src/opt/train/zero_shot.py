"""Zero-shot cross-modal retrieval with the modality embeddings (CLS projections).

Item i of the query side matches item i of the gallery; R@k is the share of queries whose
match ranks in the top k."""

from __future__ import annotations

import torch

from opt.data.splits import batches
from opt.model.encoders import Modality, trim_to_content

DIRECTIONS = {
    "text_to_image": (Modality.TEXT, Modality.IMAGE),
    "image_to_text": (Modality.IMAGE, Modality.TEXT),
    "audio_to_image": (Modality.AUDIO, Modality.IMAGE),
    "text_to_audio": (Modality.TEXT, Modality.AUDIO),
}


def recall_at_k(similarity: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """similarity (Q,G), Q <= G, with the match of query i at gallery item i -> {"R@k": share of
    queries whose match ranks in the top k}.

    Ties earn nothing: a match ranks below every other gallery item scored greater than *or equal*
    to it (the pessimistic rank), so a constant model ranks every match last. Non-finite
    similarities (a diverged model) raise ValueError instead of scoring."""
    if similarity.ndim != 2 or similarity.shape[0] > similarity.shape[1]:
        raise ValueError(f"need a (Q,G) similarity with Q <= G, got {tuple(similarity.shape)}")
    if not bool(torch.isfinite(similarity).all()):
        raise ValueError(
            f"{int((~torch.isfinite(similarity)).sum())} non-finite similarities: the model's embeddings are not finite"
        )
    target = similarity.diagonal()[:, None]
    rank = (similarity >= target).sum(dim=1) - 1  # other gallery items scored at least the match
    return {f"R@{k}": float((rank < k).float().mean()) for k in ks}


def chance_recall(n: int, ks=(1, 5, 10)) -> dict:
    """R@k of a model that ranks a gallery of n items at random: k/n (blind baseline)."""
    return {f"R@{k}": min(k, n) / n for k in ks}


@torch.no_grad()
def embed_split(model, dataset, device, batch_size: int = 64) -> dict:
    """modality -> (N,D) unit embeddings of a whole split."""
    model.eval()
    out: dict = {m: [] for m in Modality}
    for batch in batches(dataset, batch_size):
        batch = trim_to_content(
            {k: v.to(device) for k, v in batch.items()}, model.cfg.audio_patch_frames, model.cfg.max_audio_patches
        )
        encoded = model.encode(batch)
        for m in Modality:
            out[m].append(model.embed(encoded[m], m).cpu())
    return {m: torch.cat(v) for m, v in out.items()}


def zero_shot_retrieval(model, dataset, device, directions=DIRECTIONS) -> dict:
    emb = embed_split(model, dataset, device)
    return {name: recall_at_k(emb[q] @ emb[g].t()) for name, (q, g) in directions.items()}
