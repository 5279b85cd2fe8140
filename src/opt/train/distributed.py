"""Process-group setup for `torchrun` (gloo on CPU, NCCL on CUDA); a no-op for one process."""

from __future__ import annotations

import os
import platform
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: torch.device) -> World:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def pick_device(name: str, world: World | None = None) -> torch.device:
    """`auto` picks CUDA when present; under torchrun each process takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Does `device` compute bf16 matrix products in hardware? CUDA with bf16 support; a CPU with
    AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (aarch64). Without it, oneDNN emulates bf16:
    on a 2-core AVX2 EPYC a bf16 1024^3 matmul ran at 1 GFLOP/s against 150 in fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if platform.machine() in ("aarch64", "arm64"):
        return bool(caps.get("bf16"))
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def pick_precision(name: str, device: torch.device) -> str:
    """`auto` is bf16 (autocast) where `device` computes bf16 natively, else fp32. An explicit
    bf16 on a device without it is kept, with a warning: it is emulated and far slower."""
    if name not in ("auto", "bf16", "fp32"):
        raise ValueError(f"trainer.precision must be auto, bf16 or fp32, not {name!r}")
    native = native_bf16(device)
    if name == "auto":
        return "bf16" if native else "fp32"
    if name == "bf16" and not native:
        warnings.warn(
            f"trainer.precision=bf16 on a {device.type} without native bf16: emulated, often 10-100x slower "
            "than fp32 (trainer.precision=auto picks fp32 here)",
            stacklevel=2,
        )
    return name
