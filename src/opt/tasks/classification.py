"""Multi-label scene attributes: every colour, shape and size present in the scene.

Labels "color=red", "shape=square", "size=large", ... (`opt.data.manifest.scene_labels`; vocabulary
from the train records, sorted). A linear head on the image encoder's CLS, trained with BCE, scored by macro mAP.
With `task.any_modality` (config, default false) a second head on the fused CLS is trained
on random non-empty subsets of the modalities and scored from text, audio, image and all.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opt.data.manifest import label_matrix, scene_labels
from opt.data.splits import batches
from opt.model.encoders import Modality
from opt.tasks import register
from opt.tasks.base import Task
from opt.tasks.metrics import mean_average_precision
from opt.tasks.retrieval import prepare

SUBSETS = {"text": (Modality.TEXT,), "audio": (Modality.AUDIO,), "image": (Modality.IMAGE,), "all": tuple(Modality)}


def label_targets(records: list[dict], vocab: list[str]) -> Tensor:
    """records -> (N,C) float 0/1 targets over `vocab`."""
    return torch.from_numpy(label_matrix(records, vocab)).float()


def bce(logits: Tensor, target: Tensor) -> Tensor:
    """Mean BCE of (B,C) logits; 0 (with a graph) when there are no labels (C = 0)."""
    if target.numel() == 0:
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits.float(), target)


def any_modality(cfg) -> bool:
    return bool(cfg.task.any_modality)


def random_presence(draw, b: int, device) -> dict:
    """modality -> (B,) bool, each sample keeping a random non-empty subset."""
    keep = draw.rand((b, len(Modality))) < 0.5
    keep[~keep.any(dim=1), list(Modality).index(Modality.IMAGE)] = True  # never empty: keep the image
    return {m: keep[:, i].to(device) for i, m in enumerate(Modality)}


@register
class Classification(Task):
    name = "classification"

    def __init__(self):
        self._labels: dict[str, Tensor] = {}
        self.vocab: list[str] = []  # the heads' classes, in order (the task state)

    def fit_state(self, context) -> dict:
        return {"labels": sorted({lb for r in context.split("train").records() for lb in scene_labels(r)})}

    def use_state(self, state: dict) -> None:
        self.vocab, self._labels = list(state["labels"]), {}

    def targets(self, context, split: str) -> Tensor:
        """(N,C) targets of a whole split (cached)."""
        if split not in self._labels:
            self._labels[split] = label_targets(context.split(split).records(), self.vocab)
        return self._labels[split]

    def heads(self, model, context) -> nn.Module:
        d, c = model.cfg.dim, len(self.vocab)
        heads = {"image": nn.Linear(d, c)}
        if any_modality(context.cfg):
            heads["fused"] = nn.Linear(d, c)
        return nn.ModuleDict(heads)

    def losses(self, model, heads, batch, draw, context) -> dict:
        batch = prepare(model, batch, context.device)
        target = self.targets(context, "train")[batch["index"].cpu()].to(context.device)
        encoded = model.encode(batch, (Modality.IMAGE,) if "fused" not in heads else tuple(Modality))
        image = bce(heads["image"](model.summary(encoded[Modality.IMAGE], Modality.IMAGE)), target)
        out = {"loss": image, "classification_loss": image}
        if "fused" in heads:
            present = random_presence(draw, target.shape[0], context.device)
            fused = model.fuse(encoded, present).tokens[:, 0]
            out["classification_fused_loss"] = bce(heads["fused"](fused), target)
            out["loss"] = image + out["classification_fused_loss"]
        return out

    @torch.no_grad()
    def scores(self, model, heads, split, context) -> dict:
        """name -> (N,C) scores of a whole split: "image", and "fused/<subset>" with the fused head."""
        parts: dict = {}
        for batch in batches(context.split(split), 64):
            batch = prepare(model, batch, context.device)
            encoded = model.encode(batch)
            image = model.summary(encoded[Modality.IMAGE], Modality.IMAGE)
            parts.setdefault("image", []).append(heads["image"](image).float().cpu())
            for name, subset in SUBSETS.items() if "fused" in heads else ():
                fused = model.fuse({m: encoded[m] for m in subset}).tokens[:, 0]
                parts.setdefault(f"fused/{name}", []).append(heads["fused"](fused).float().cpu())
        return {k: torch.cat(v) for k, v in parts.items()}

    @torch.no_grad()
    def evaluate(self, model, heads, split, context) -> dict:
        model.eval()
        heads.eval()
        labels = self.targets(context, split).numpy()
        scores = self.scores(model, heads, split, context)
        return {
            ("mAP" if k == "image" else f"{k}/mAP"): mean_average_precision(v.numpy(), labels)
            for k, v in scores.items()
        }

    def blind(self, split, context) -> dict:
        """Every item scored by the train label frequencies (the same scores whatever the input)."""
        labels = self.targets(context, split).numpy()
        prior = self.targets(context, "train").mean(dim=0).numpy()  # (C,)
        value = mean_average_precision(np.broadcast_to(prior, labels.shape), labels)
        names = ["mAP"] + ([f"fused/{s}/mAP" for s in SUBSETS] if any_modality(context.cfg) else [])
        return {name: value for name in names}
