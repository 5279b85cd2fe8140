"""benchmarks/pretrain_throughput.py builds `opt pretrain`'s Trainer from a dataclass config: one
timed step of `tiny` keeps it running as the trainer changes (only the README cites its numbers)."""

import math

from benchmarks.pretrain_throughput import main


def test_the_throughput_benchmark_times_a_training_step_and_counts_its_flops():
    out = main(
        ["--device", "cpu", "--sizes", "tiny", "--precisions", "fp32", "--steps", "1", "--warmup", "0"]
        + ["--peak-size", "64"]
    )
    (result,) = out["results"]
    assert result["size"] == "tiny" and result["precision"] == "fp32"
    assert result["samples_per_s"] > 0 and math.isfinite(result["flops_per_step"]) and result["flops_per_step"] > 1e6
    assert out["peak_matmul_flops"]["fp32"] > 0
