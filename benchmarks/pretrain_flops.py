"""Where a pre-training step's FLOPs go, on real batches of a run's prepared data.

The same forward + backward as `opt pretrain` (`pretext_losses`, under bf16 autocast where
`trainer.precision` resolves to bf16 on this CPU, as the Trainer decides, else fp32), on the
first batches of the trainer's order over the run's train split, with the run's config. Prints
FLOPs per step and seconds per step for the full objective, then the marginal cost of each
objective (the full step minus the step with that objective's weight at 0), beside the
machine's measured matmul peak in that precision. Needs a run with prepared data and VQ codes:

    python benchmarks/pretrain_flops.py --root /tmp/run                      # the default config
    python benchmarks/pretrain_flops.py --root /tmp/run trainer.length_buckets=16 objectives.matching_share=1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from flops import DTYPES, count_flops, peak_matmul_flops  # noqa: E402

from opt.artifacts import load_tokenizer, training_split  # noqa: E402
from opt.config import load_config  # noqa: E402
from opt.model.masking import Draw  # noqa: E402
from opt.model.pretext import pretext_losses  # noqa: E402
from opt.train.distributed import pick_precision  # noqa: E402
from opt.train.pretrain import build_model, special_tokens  # noqa: E402
from opt.train.sampling import BatchOrder  # noqa: E402

OBJECTIVES = ("mlm", "mvm", "mam", "text_denoise", "image_denoise", "contrastive", "matching")


def real_batches(cfg, count: int) -> list[dict]:
    """The first `count` batches the trainer would draw from the train split."""
    split = training_split(cfg, "train")
    t = cfg.trainer
    lengths = split.lengths() if t.length_buckets else None
    order = BatchOrder(len(split), t.batch_size, t.seed, lengths=lengths, bucket=max(1, t.length_buckets))
    out = []
    for _ in range(count):
        out.append(default_collate([split[i] for i in order.next_indices()]))  # as Trainer.next_batch
    return out


def measure(cfg, batches: list[dict], precision: str) -> tuple[float, float]:
    """(mean FLOPs per step, mean seconds per step) of forward + backward over `batches` in `precision`."""
    model, special = build_model(cfg), special_tokens(load_tokenizer(cfg))
    draw = Draw(torch.Generator().manual_seed(cfg.trainer.seed + 1))

    def step(batch: dict) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            losses = pretext_losses(model, batch, cfg.objectives, special, draw)
        losses["loss"].backward()

    flops = sum(count_flops(lambda b=b: step(b))[0] for b in batches) / len(batches)
    step(batches[0])  # warm-up
    start = time.perf_counter()
    for b in batches:
        step(b)
    return flops, (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="a run folder (paths.root) with prepared data and VQ codes")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = parser.parse_args()
    base = [f"paths.root={args.root}", *args.overrides]
    cfg = load_config(base)
    batches = real_batches(cfg, args.batches)
    precision = pick_precision(cfg.trainer.precision, torch.device("cpu"))  # as the Trainer decides
    peak = peak_matmul_flops(torch.device("cpu"), DTYPES[precision], 1024)
    full, seconds = measure(cfg, batches, precision)
    print(
        f"config overrides: {' '.join(args.overrides) or '(defaults)'}; batch {cfg.trainer.batch_size}, "
        f"{torch.get_num_threads()} threads; {precision} (trainer.precision={cfg.trainer.precision}), "
        f"{precision} matmul peak {peak / 1e9:.0f} GFLOP/s\n"
    )
    print("| step | GFLOP/step | s/step | samples/s | GFLOP/s |\n|---|---:|---:|---:|---:|")
    b = cfg.trainer.batch_size
    print(f"| full | {full / 1e9:.1f} | {seconds:.2f} | {b / seconds:.1f} | {full / seconds / 1e9:.0f} |")
    for name in OBJECTIVES:
        if not getattr(cfg.objectives, name):
            continue
        without, s = measure(load_config([*base, f"objectives.{name}=0"]), batches, precision)
        print(
            f"| without {name} | {without / 1e9:.1f} (-{(full - without) / 1e9:.1f}) | {s:.2f} | {b / s:.1f} | "
            f"{without / s / 1e9:.0f} |"
        )


if __name__ == "__main__":
    main()
