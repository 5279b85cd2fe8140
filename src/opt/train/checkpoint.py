"""Atomic, pickle-free checkpoints: tensors in safetensors, everything else in JSON.

A checkpoint is a folder `step-000050/` holding `model.safetensors` (the weights alone, what
fine-tuning and serving load), `state.safetensors` (optimizer moments, RNG states) and
`state.json` (step, data position, scheduler, optimizer hyper-parameters). It is written
under a temporary name and renamed, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinity (a loss, a gradient or a weight); nothing non-finite is saved."""


def non_finite(tensors: dict) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def save_weights(weights: dict, file: Path) -> Path:
    """Weights (name -> tensor) to a safetensors file; refuses any non-finite tensor."""
    bad = non_finite(weights)
    if bad:
        raise NonFiniteError(f"not saving {file}: non-finite values in {len(bad)} tensors ({', '.join(bad[:5])})")
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(contiguous(weights), str(file))
    return file


def save_checkpoint(run_dir: Path, step: int, weights: dict, state_tensors: dict, state: dict, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically; keep only the newest `keep` checkpoints. Refuses
    non-finite weights, so the newest checkpoint on disk is always a good one to resume."""
    final = Path(run_dir) / f"{PREFIX}{step:06d}"
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(weights, tmp / "model.safetensors")
    save_file(contiguous(state_tensors), tmp / "state.safetensors")
    (tmp / "state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def contiguous(tensors: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p for p in run_dir.glob(f"{PREFIX}*") if p.is_dir() and not p.name.endswith(".tmp"))


def clear(run_dir: Path) -> None:
    """Remove every checkpoint of a run (a run of another configuration is not resumed)."""
    for old in list_checkpoints(run_dir):
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_weights(path: Path, device: str | torch.device = "cpu") -> dict:
    """Model weights from a checkpoint folder or a `.safetensors` file (never unpickles)."""
    path = Path(path)
    return load_file(str(path / "model.safetensors" if path.is_dir() else path), device=str(device))


def load_checkpoint(path: Path) -> tuple[dict, dict, dict]:
    """(weights, state tensors, state json) of a checkpoint folder."""
    path = Path(path)
    return load_weights(path), load_file(str(path / "state.safetensors")), json.loads((path / "state.json").read_text())


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Optimizer state -> (tensors {"optim.<param>.<name>": t}, json-able rest)."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{i}.{name}": value for i, st in sd["state"].items() for name, value in st.items()}
    return tensors, {"param_groups": sd["param_groups"]}


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict, rest: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})
