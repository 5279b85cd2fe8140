"""How fast an image encoder learns which shapes and colours a scene holds, per readout.

Trains the `small` image encoder from scratch plus one linear layer, supervised (multi-label:
each of the 8 shapes and 8 colours present or not), on a run's prepared train images, then
reports macro average precision on its test images. The readout is the encoder's CLS or the max
(or mean) over its patch tokens: `model.image_pool` chose "max" from this measurement (README:
The model). Precision follows `trainer.precision` as in training (bf16 autocast only where the CPU computes
bf16 natively). Needs a run with prepared data of the built-in scenes:

    python benchmarks/image_readout.py --root /tmp/run --pool cls max --seeds 0 1 --steps 300
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from sklearn.metrics import average_precision_score
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from opt.artifacts import prepared_dir  # noqa: E402
from opt.config import load_config  # noqa: E402
from opt.data.dataset import PreparedDataset  # noqa: E402
from opt.data.manifest import label_matrix  # noqa: E402
from opt.data.scenes import COLORS, SHAPES  # noqa: E402
from opt.data.shards import read_records  # noqa: E402
from opt.model.encoders import ImageEncoder  # noqa: E402
from opt.probe import load_images  # noqa: E402
from opt.train.distributed import pick_precision  # noqa: E402

LABELS = [f"shape={s}" for s in SHAPES] + [f"color={c}" for c in COLORS]  # opt.data.manifest labels
READOUTS = {
    "cls": lambda t: t[:, 0],
    "max": lambda t: t[:, 1:].amax(dim=1),
    "mean": lambda t: t[:, 1:].mean(dim=1),
}


def load_split(prepared: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N,3,H,W) in [0,1] and labels (N, len(LABELS)) of one split."""
    ds = PreparedDataset(prepared, split)
    labels = label_matrix(read_records(ds.split_dir), LABELS)
    return load_images(ds).float() / 255, torch.from_numpy(labels).float()


def run(data: dict, cfg, pool: str, seed: int, steps: int, batch: int, lr: float, bf16: bool) -> dict:
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    torch.manual_seed(seed)
    encoder = ImageEncoder(cfg.model, train_x.shape[-1])
    head = nn.Linear(cfg.model.dim, len(LABELS))
    readout = READOUTS[pool]
    optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=lr, weight_decay=0.05)
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(len(train_x), (batch,), generator=g)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            logits = head(readout(encoder(train_x[idx]).tokens)).float()
        loss = nn.functional.binary_cross_entropy_with_logits(logits, train_y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        scores = torch.cat(
            [head(readout(encoder(test_x[i : i + 64]).tokens)).float() for i in range(0, len(test_x), 64)]
        )
    n = len(SHAPES)
    return {
        "shape_mAP": average_precision_score(test_y[:, :n], scores[:, :n], average="macro"),
        "colour_mAP": average_precision_score(test_y[:, n:], scores[:, n:], average="macro"),
        "ms_per_step": 1000 * seconds / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a run's root (paths.root) with prepared data")
    parser.add_argument("--pool", nargs="+", default=["cls", "max"], choices=list(READOUTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.patch_size=4")
    args = parser.parse_args()
    cfg = load_config([f"paths.root={args.root}", *args.overrides])
    prepared = prepared_dir(cfg)
    data = {split: load_split(prepared, split) for split in ("train", "test")}
    precision = pick_precision(cfg.trainer.precision, torch.device("cpu"))  # as the Trainer decides
    print(
        f"{len(data['train'][0])} train / {len(data['test'][0])} test images, {args.steps} steps of {args.batch}, "
        f"{precision}"
    )
    for pool in args.pool:
        for seed in args.seeds:
            r = run(data, cfg, pool, seed, args.steps, args.batch, args.lr, precision == "bf16")
            print(
                f"readout {pool:4s} seed {seed}: shape mAP {r['shape_mAP']:.3f}  colour mAP {r['colour_mAP']:.3f}"
                f"  ({r['ms_per_step']:.0f} ms/step)"
            )


if __name__ == "__main__":
    main()
