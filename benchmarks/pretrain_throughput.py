"""Pre-training throughput and MFU of OPT: samples/s of a full training step against the
machine's measured matrix-product rate, fp32 and bf16 autocast, per model size.

One step is exactly `Trainer.train_step` of `opt pretrain` (forward of PretrainObjective with
every pretext objective on, backward, gradient clipping, AdamW, scheduler), fed one fixed
synthetic batch so that data loading is not measured. FLOPs per step are counted once per size
with FlopCounterMode (forward + backward; attention included, see benchmarks/flops.py).
MFU = (FLOPs per step / median step time) / peak torch.matmul FLOP/s of the same dtype.

    python benchmarks/pretrain_throughput.py                      # CPU: tiny and small (~1-3 min)
    python benchmarks/pretrain_throughput.py --device cuda        # GPU: base, batch 256 (auto when CUDA is present)
    python benchmarks/pretrain_throughput.py --device cuda --precisions bf16 --batch 512 --compile
    python benchmarks/pretrain_throughput.py --sizes small --batch 32,64 --steps 10 --json out.json

On a GPU image without omegaconf/hydra, carry them as pure-Python packages (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from flops import DTYPES, count_flops, peak_matmul_flops, time_call  # noqa: E402

from opt.config import load_config  # noqa: E402
from opt.data.text import MASK, PAD, SPECIAL_IDS  # noqa: E402
from opt.model.config import ModelConfig, ObjectivesConfig, TrainerConfig  # noqa: E402
from opt.model.opt import OPT, Dims, count_parameters  # noqa: E402
from opt.model.pretext import SpecialTokens  # noqa: E402
from opt.train.pretrain import PretrainObjective  # noqa: E402
from opt.train.trainer import Trainer  # noqa: E402

DIMS = Dims(vocab_size=1000, image_size=64, n_mels=64, codebook_size=256)
TEXT_LEN, MEL_FRAMES = 64, 1200


def model_config(size: str) -> ModelConfig:
    """configs/model/<size>.yaml, composed as `opt pretrain model=<size>` does."""
    return load_config([f"model={size}"]).model


def synthetic_batch(b: int, device: torch.device, min_frames: int, seed: int = 0) -> dict:
    """A random batch shaped like the prepared data: captions of 8-64 tokens, clips of min_frames-1200 frames."""
    g = torch.Generator().manual_seed(seed)
    count = torch.randint(8, TEXT_LEN + 1, (b,), generator=g)
    tokens = torch.randint(7, DIMS.vocab_size, (b, TEXT_LEN), generator=g)
    tokens[torch.arange(TEXT_LEN)[None, :] >= count[:, None]] = 0  # padding
    batch = {
        "tokens": tokens,
        "token_count": count,
        "image": torch.rand(b, 3, DIMS.image_size, DIMS.image_size, generator=g),
        "mel": torch.randn(b, DIMS.n_mels, MEL_FRAMES, generator=g),
        "mel_frames": torch.randint(min_frames, MEL_FRAMES + 1, (b,), generator=g),
        "codes": torch.randint(0, DIMS.codebook_size, (b, (DIMS.image_size // 8) ** 2), generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def build_trainer(
    size: str,
    precision: str,
    batch: dict,
    device: torch.device,
    run_dir: Path,
    compile: bool = False,
    deterministic: bool = True,
) -> Trainer:
    b = batch["tokens"].shape[0]
    model = OPT(model_config(size), DIMS)
    objective = PretrainObjective(
        model, ObjectivesConfig(), SpecialTokens(pad=SPECIAL_IDS[PAD], mask=SPECIAL_IDS[MASK], count=len(SPECIAL_IDS))
    )
    tcfg = TrainerConfig(
        batch_size=b,
        precision=precision,
        device=str(device),
        max_steps=10**6,
        compile=compile,
        deterministic=deterministic,
    )
    trainer = Trainer(objective, range(b), tcfg, run_dir)
    trainer.next_batch = lambda: batch  # the same batch every step: no data loading in the timing
    return trainer


def eager_step(trainer: Trainer) -> None:
    """One train step through the uncompiled objective (FlopCounterMode cannot see into compiled code)."""
    module, trainer.module = trainer.module, trainer.objective
    try:
        trainer.train_step()
    finally:
        trainer.module = module


def profile_table(trainer: Trainer, device: torch.device, steps: int = 2, rows: int = 30) -> str:
    """torch.profiler over `steps` train steps -> the ops that take the most (device) time."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(steps):
            time_call(trainer.train_step, device)
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=60)


def measure(size: str, precision: str, batch: dict, device: torch.device, args, flops: int | None) -> dict:
    """Warm up, count FLOPs (if not yet known for this size), then time `args.steps` train steps."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(size, precision, batch, device, Path(tmp), args.compile, not args.nondeterministic)
        per_op = None
        if flops is None:
            flops, per_op = count_flops(lambda: eager_step(trainer))
        for _ in range(args.warmup):
            trainer.train_step()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = [time_call(trainer.train_step, device) for _ in range(args.steps)]
        params = count_parameters(trainer.objective.model)
        if args.profile:
            print(
                f"\n### profile: {size} {precision}, batch {batch['tokens'].shape[0]}\n"
                f"{profile_table(trainer, device)}",
                file=sys.stderr,
                flush=True,
            )
    b, median, best = batch["tokens"].shape[0], statistics.median(times), min(times)
    result = {
        "size": size,
        "precision": precision,
        "batch": b,
        "params": params,
        "flops_per_step": flops,
        "step_s_median": median,
        "step_s_best": best,
        "step_s_all": times,
        "samples_per_s": b / median,
        "achieved_flops": flops / median,
        "achieved_flops_best": flops / best,
    }
    if per_op:
        result["flops_by_op"] = per_op
    if device.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def peaks(device: torch.device, precisions: list[str], n: int) -> dict:
    return {p: peak_matmul_flops(device, DTYPES[p], n) for p in precisions}


def markdown(results: list[dict], peak: dict, device: torch.device) -> str:
    unit, scale = ("TFLOP", 1e12) if device.type == "cuda" else ("GFLOP", 1e9)
    lines = [
        f"| size | params | precision | batch | samples/s | step ms (median / best) | {unit}/step | "
        f"achieved {unit}/s | peak matmul {unit}/s | MFU | MFU best step |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        p = peak[r["precision"]]
        lines.append(
            f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['precision']} | {r['batch']} | "
            f"{r['samples_per_s']:.1f} | {r['step_s_median'] * 1e3:.0f} / {r['step_s_best'] * 1e3:.0f} | "
            f"{r['flops_per_step'] / scale:.3g} | {r['achieved_flops'] / scale:.3g} | {p / scale:.3g} | "
            f"{r['achieved_flops'] / p:.1%} | {r['achieved_flops_best'] / p:.1%} |"
        )
    for size, b in dict.fromkeys((r["size"], r["batch"]) for r in results):
        speed = {r["precision"]: r["samples_per_s"] for r in results if (r["size"], r["batch"]) == (size, b)}
        if {"fp32", "bf16"} <= speed.keys():
            lines.append(f"\n`{size}` batch {b}: bf16 autocast / fp32 speed = **{speed['bf16'] / speed['fp32']:.2f}x**")
    return "\n".join(lines)


def describe(device: torch.device, args) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg_start": os.getloadavg(),
        "batch": args.batch,
        "steps": args.steps,
        "warmup": args.warmup,
        "deterministic": not args.nondeterministic,
        "min_frames": args.min_frames,
        "compile": args.compile,
    }


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="auto", help="cpu | cuda | auto (cuda when present)")
    ap.add_argument("--sizes", default=None, help="comma list (default: tiny,small on CPU; base on CUDA)")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16")
    ap.add_argument("--batch", default=None, help="samples per step, or a comma list (default 32 on CPU, 256 on CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per config (default 6 CPU, 20 CUDA)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument(
        "--peak-size", type=int, default=None, help="n of the n^3 peak matmul (default 2048 CPU, 8192 CUDA)"
    )
    ap.add_argument("--min-frames", type=int, default=300, help="shortest synthetic clip in mel frames (of 1200)")
    ap.add_argument("--compile", action="store_true", help="compile every Transformer block (trainer.compile=true)")
    ap.add_argument(
        "--nondeterministic", action="store_true", help="trainer.deterministic=false (torch's default kernels)"
    )
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of each config to stderr")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    args = ap.parse_args(argv)
    args.device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    gpu = args.device.type == "cuda"
    args.sizes = (args.sizes or ("base" if gpu else "tiny,small")).split(",")
    args.precisions = args.precisions.split(",")
    args.batch = [int(b) for b in (args.batch or ("256" if gpu else "32")).split(",")]
    args.steps = args.steps or (20 if gpu else 6)
    args.peak_size = args.peak_size or (8192 if gpu else 2048)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    info = describe(device, args)
    peak = peaks(device, args.precisions, args.peak_size)
    results = []
    for b in args.batch:
        batch = synthetic_batch(b, device, args.min_frames)
        for size in args.sizes:
            flops = None  # counted once per size and batch
            for precision in args.precisions:
                results.append(measure(size, precision, batch, device, args, flops))
                flops = results[-1]["flops_per_step"]
                print(
                    f"{size} {precision} batch {b}: {results[-1]['samples_per_s']:.1f} samples/s",
                    file=sys.stderr,
                    flush=True,
                )
        del batch
        if device.type == "cuda":
            torch.cuda.empty_cache()
    again = peaks(device, args.precisions, args.peak_size)  # the best of before and after the runs
    peak = {p: max(peak[p], again[p]) for p in peak}
    info["loadavg_end"] = os.getloadavg()
    print(
        f"OPT pre-training throughput on {info['device_name']} ({device}), torch {info['torch']}, "
        f"{info['threads']} threads, load average {info['loadavg_start'][0]:.2f} -> {info['loadavg_end'][0]:.2f}\n"
    )
    print(markdown(results, peak, device))
    out = {"info": info, "peak_matmul_flops": peak, "results": results}
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
