"""Throughput of the data stages on this machine: narrated scenes/s of the built-in generator
(1 and 2 workers) and triplets/s of `opt prepare` on what it made. Prints a markdown table.

    python benchmarks/data_throughput.py [--n 300] [--workers 1 2] [--image-size 64]

Target (issue 2, item 8): >= 150 scenes/s on 2 cores at 64x64; eSpeak's ~5-10 ms per
utterance is the floor. Wall-clock rates suffer from anything else running: the table also
gives CPU ms per scene (process + workers) and the load average before each run.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from opt.config import load_config, path
from opt.data.manifest import MANIFEST, QUARANTINE, write_jsonl
from opt.data.synth import generate_synth


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (the pool's workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_generator(root: Path, n: int, workers: int, image_size: int):
    """Generate n scenes under root; returns (config, records, wall s, cpu s)."""
    cfg = load_config(
        [f"paths.root={root}", f"data.n={n}", f"data.workers={workers}", f"data.image_size={image_size}", "data.seed=0"]
    )
    cpu, wall = cpu_seconds(), time.perf_counter()
    records = generate_synth(cfg, path(cfg, "raw"))
    return cfg, records, time.perf_counter() - wall, cpu_seconds() - cpu


def time_prepare(cfg, records: list[dict]) -> tuple[str, float | None, float | None]:
    """Run `prepare` on the records; (note, wall s, cpu s), or a note why it could not run."""
    try:
        from opt.data.prepare import prepare
    except Exception as e:  # noqa: BLE001 - the module is optional here, say why it is missing
        return f"prepare skipped: opt.data.prepare does not import ({type(e).__name__}: {e})", None, None
    raw = path(cfg, "raw")
    write_jsonl(raw / MANIFEST, records)
    write_jsonl(raw / QUARANTINE, [])
    cpu, wall = cpu_seconds(), time.perf_counter()
    try:
        prepare(cfg)
    except Exception as e:  # noqa: BLE001 - report, do not hide the generator's numbers
        return f"prepare failed: {type(e).__name__}: {e}", None, None
    return "", time.perf_counter() - wall, cpu_seconds() - cpu


def row(stage: str, workers: int | str, n: int, wall: float, cpu: float, load: float) -> str:
    return f"| {stage} | {workers} | {n} | {wall:.2f} | {n / wall:.1f} | {1000 * cpu / n:.2f} | {load:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="scenes per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    lines, notes, last = [], [], None
    with tempfile.TemporaryDirectory(prefix="opt-bench-") as tmp:
        for workers in args.workers:
            load = os.getloadavg()[0]
            root = Path(tmp) / f"w{workers}"
            cfg, records, wall, cpu = time_generator(root, args.n, workers, args.image_size)
            lines.append(row("generator (scenes/s)", workers, len(records), wall, cpu, load))
            last = (cfg, records)
        load = os.getloadavg()[0]
        note, wall, cpu = time_prepare(*last)
        if wall is None:
            notes.append(note)
        else:
            lines.append(row("prepare (triplets/s)", "-", len(last[1]), wall, cpu, load))
    print(f"\nData throughput, {os.cpu_count()} CPUs, {args.image_size}x{args.image_size} images\n")
    print("| stage | workers | items | seconds | items/s | CPU ms/item | load avg (1 min) before |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
