"""Runs that repeat: every random draw of a stage comes from its config's seed.

Call `seed_everything(seed)` at the start of a stage, before anything random is built (model
weights, task heads, the VQ codebook); the Trainer seeds again before training, and its
checkpoints carry the generator states, so a resumed run draws what an uninterrupted one does.

Seeding alone is not enough on a multi-core CPU: two `opt pretrain` processes with the same
seed drifted apart in the last bits after ~8 steps (2 threads; identical with 1 thread).
torch's deterministic mode removed that (4 of 4 runs byte-identical), so it is on by default
(`trainer.deterministic`).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python's, NumPy's and torch's generators (CPU and every CUDA device); with
    `deterministic`, ask torch for deterministic kernels (warn where an op has none)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for repeatable matmuls
        torch.use_deterministic_algorithms(True, warn_only=True)
