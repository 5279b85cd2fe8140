"""What the service answers: response models and the small functions that fill them."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from pydantic import BaseModel

from opt.config import ServeLimits
from opt.serving.inputs import BadInput, check_top_k
from opt.serving.runtime import DEFAULT_TARGETS, search


class Caption(BaseModel):
    caption: str


class Transcript(BaseModel):
    text: str


class Item(BaseModel):
    rank: int
    index: int  # position in the gallery split
    image_id: str | None = None
    caption: str | None = None
    score: float  # cosine similarity


class Retrieved(BaseModel):
    query: str  # text | audio | image | text_audio
    target: str  # gallery modality searched
    items: list[Item]


class Label(BaseModel):
    label: str
    score: float


class Classified(BaseModel):
    predicted: list[str]  # labels with score >= threshold
    labels: list[Label]  # every label, highest score first


class Answer(BaseModel):
    answer: str
    score: float


class Embedding(BaseModel):
    modality: str
    dim: int
    embedding: list[float]


class Health(BaseModel):
    status: str
    model: str
    finetuned: list[str]
    gallery_items: int
    dim: int


def png_bytes(image: np.ndarray) -> bytes:
    """(H,W,3) uint8 -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def finite_list(vector) -> list[float]:
    """A (D,) array as floats; a non-finite value is a model fault, never sent as JSON."""
    out = [float(v) for v in np.asarray(vector).reshape(-1)]
    if not all(math.isfinite(v) for v in out):
        raise FloatingPointError("the model produced a non-finite vector")
    return out


def retrieved(gallery: dict, kind: str, vector, target: str | None, k: int, limits: ServeLimits) -> Retrieved:
    """Top-k gallery items of `target` (default: by query kind) for one query vector (D,)."""
    k = check_top_k(k, limits)
    target = target or DEFAULT_TARGETS[kind]
    if kind == "text_audio" and target != "image":
        raise BadInput("a text+audio query searches images only (target=image)")
    hits = search(gallery["embeddings"], gallery["items"], np.asarray(vector)[None], target, k)[0]
    return Retrieved(query=kind, target=target, items=[Item(rank=r + 1, **h) for r, h in enumerate(hits)])


def classified(labels: list[str], probs, threshold: float) -> Classified:
    """Labels sorted by probability, and those at or above `threshold`."""
    ranked = sorted(zip(labels, (float(p) for p in np.asarray(probs).reshape(-1))), key=lambda lp: -lp[1])
    return Classified(
        predicted=[lb for lb, p in ranked if p >= threshold], labels=[Label(label=lb, score=p) for lb, p in ranked]
    )
