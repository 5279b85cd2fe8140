"""A tiny pre-training setup in memory, and the worker of the 2-process DDP test."""

from __future__ import annotations

import os

import torch
from model_fixtures import random_batch, tiny_model

from opt.config import load_config
from opt.data.text import MASK, PAD, SPECIAL_IDS
from opt.model.pretext import SpecialTokens
from opt.train.pretrain import PretrainObjective
from opt.train.trainer import Trainer

SPECIAL = SpecialTokens(
    pad=SPECIAL_IDS[PAD], mask=SPECIAL_IDS[MASK], count=len(SPECIAL_IDS)
)  # as every tokenizer has them


def in_memory_dataset(n: int = 24, seed: int = 0) -> list[dict]:
    batch = random_batch(n, seed)
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def trainer_config(**overrides):
    cfg = load_config(["model=tiny"]).trainer
    base = {"max_steps": 6, "batch_size": 6, "warmup_steps": 2, "checkpoint_every": 3, "lr": 3e-3, "precision": "fp32"}
    for key, value in {**base, **overrides}.items():
        setattr(cfg, key, value)
    return cfg


def objective(objectives=None, seed: int = 0) -> PretrainObjective:
    objectives = objectives or load_config([]).objectives
    return PretrainObjective(tiny_model(seed), objectives, SPECIAL)


def decomposable_objectives():
    """Objectives that are a mean over samples with equal positions each (no in-batch negatives,
    no variable-length masks), so a split batch gives exactly the whole batch's gradient."""
    o = load_config([]).objectives
    for name in ("mlm", "mam", "text_denoise", "contrastive", "matching", "drop_text", "drop_image", "drop_audio"):
        setattr(o, name, 0.0)
    o.fused_share = 1.0  # below 1 each process fuses the first rows of its own batch: other rows than one process
    return o


def ddp_worker(rank: int, world: int, port: int, run_dir: str, out: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
    )
    torch.set_num_threads(1)
    trainer = Trainer(
        objective(decomposable_objectives()), in_memory_dataset(), trainer_config(batch_size=6 // world), run_dir
    )
    trainer.accumulate_gradients()
    if rank == 0:
        torch.save(gradients(trainer), out)
    torch.distributed.destroy_process_group()


def gradients(trainer: Trainer) -> dict:
    """name -> gradient (zeros where a parameter got none)."""
    return {
        n: (p.grad if p.grad is not None else torch.zeros_like(p)).detach().clone()
        for n, p in trainer.objective.model.named_parameters()
    }
