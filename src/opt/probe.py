"""The attribute probe that judges text-to-image: a small CNN trained on real train images to
predict which scene attributes (colour, shape, size of any object) are present, multi-label.

Trained on first use and cached (opt.artifacts: models/probe/) (weights plus its label list), keyed
by its data, steps and the digest of the code that trains it (a probe from older code is retrained:
one such, kept across a code change, once shifted a Fréchet distance by 9, issue 14); its penultimate
features (B,F) also serve the Fréchet distance between generated and real images.

Design notes (measured on the default 2,000-scene data, test split): GroupNorm, not BatchNorm
(attribute channels fire for a few images of a batch, so BatchNorm's running statistics differ
from its batch statistics and eval-mode accuracy fell from 0.94 to 0.49 on the train images);
max-pooled features (presence of small objects); flips and shifts. 3,000 steps: label-set
accuracy 0.95, exact set 0.76 (300 steps of the first design: 0.43, 0.01).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from opt.artifacts import prepared_identity, probe_dir, save_probe, saved_probe, training_split
from opt.code_deps import code_digest
from opt.data.manifest import label_matrix, scene_labels

PROBE_BATCH = 32
PROBE_LR = 2e-3
FEATURES = 64
SHIFT = 4  # pixels of random shift in training


class Probe(nn.Module):
    """Images (B,3,H,W) in [0,1] -> logits (B,K); `features` gives the pooled (B,F) embedding."""

    def __init__(self, n_labels: int, width: int = 32):
        super().__init__()
        layers, channels = [], [3, width, width, 2 * width, FEATURES]
        for c_in, c_out in zip(channels[:-1], channels[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.GroupNorm(8, c_out), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(FEATURES, max(1, n_labels))

    def features(self, images: Tensor) -> Tensor:
        return self.body(images * 2 - 1).amax(dim=(2, 3))  # (B,F)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images))


def load_images(dataset) -> Tensor:
    """Every image of a split as uint8 (N,3,H,W), read once."""
    return torch.stack([(dataset[i]["image"] * 255).round().to(torch.uint8) for i in range(len(dataset))])


def augment(images: Tensor, g: torch.Generator, shift: int = SHIFT) -> Tensor:
    """Random horizontal flips and shifts of up to `shift` pixels (edges replicated): (B,3,H,W) -> same.
    Every scene shape is symmetric left-right, so a flip keeps the labels."""
    b, _, h, w = images.shape
    flip = torch.rand(b, generator=g) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    padded = F.pad(images, (shift,) * 4, mode="replicate")
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b), generator=g).tolist()
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx))])


@torch.enable_grad()  # evaluation runs under no_grad; the probe trains inside it on first use
def train_probe(images: Tensor, targets: Tensor, steps: int, seed: int = 0) -> Probe:
    """Fit the probe on uint8 images (N,3,H,W) and bool targets (N,K) with random batches."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    probe = Probe(targets.shape[1])
    optimiser = torch.optim.AdamW(probe.parameters(), lr=PROBE_LR, weight_decay=1e-4)
    probe.train()
    for _ in range(steps if targets.shape[1] else 0):
        index = torch.randint(len(images), (min(PROBE_BATCH, len(images)),), generator=g)
        logits = probe(augment(images[index].float() / 255, g))
        loss = F.binary_cross_entropy_with_logits(logits, targets[index].float())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return probe.eval()


def load_or_train_probe(cfg, train_split) -> tuple[Probe, list[str]]:
    """The saved probe when it was trained on the same data (labels, prepared features, steps),
    else a fresh one trained now for `task.probe_steps` steps (as `opt probe` does, said in the output)."""
    records = train_split.records()
    labels = sorted(set().union(*(scene_labels(r) for r in records))) if records else []
    meta = {
        "code": code_digest(__name__),  # any change to the code that trains it retrains it
        "labels": labels,
        "train_items": len(train_split),
        "steps": cfg.task.probe_steps,
        **prepared_identity(cfg),
    }
    saved = saved_probe(cfg, meta)
    if saved is not None:
        probe = Probe(len(labels))
        probe.load_state_dict(saved)
        return probe.eval(), labels
    print(f"probe: training the text-to-image judge for {cfg.task.probe_steps} steps (as `opt probe`)")
    targets = torch.from_numpy(label_matrix(records, labels))
    probe = train_probe(load_images(train_split), targets, cfg.task.probe_steps)
    save_probe(cfg, probe.state_dict(), meta)
    return probe, labels


@torch.no_grad()
def judge(probe: Probe, images: Tensor, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Images (N,3,H,W) in [0,1] -> predicted labels (N,K) bool and features (N,F)."""
    preds, feats = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float()
        f = probe.features(x)
        preds.append((probe.head(f) > 0).numpy())
        feats.append(f.numpy())
    return np.concatenate(preds), np.concatenate(feats)


def probe(cfg) -> dict:
    """`opt probe`: train (or keep, when its data and steps are unchanged) the attribute probe."""
    _, labels = load_or_train_probe(cfg, training_split(cfg, "train", with_codes=False))
    print(f"probe: {len(labels)} labels -> {probe_dir(cfg)}")
    return {"labels": len(labels), "steps": int(cfg.task.probe_steps)}
