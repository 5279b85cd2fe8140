"""What every downstream task provides, and the context tasks share.

A task owns small heads on top of the pre-trained OPT model, an objective for fine-tuning
(forward(batch, draw) -> {"loss": ..., "<task>_loss": ...}, trained by the shared Trainer),
`evaluate(split) -> {metric: value}`, and `blind(split) -> {metric: value}`: what a model that
ignores its input scores on the same split, under the same metric names. Batches are TrainingSplit items (see
opt.train.data): tokens, token_count, image, mel, mel_frames, codes, index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from opt.config import path
from opt.data.text import TOKENIZER_FILE, CaptionTokenizer
from opt.model.opt import OPT
from opt.train.data import TrainingSplit, training_split


@dataclass
class TaskContext:
    """Everything a task needs besides the model: config, tokenizer, splits and where to write."""

    cfg: object
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def tokenizer(self) -> CaptionTokenizer:
        return CaptionTokenizer.load(path(self.cfg, "prepared") / TOKENIZER_FILE)

    def split(self, name: str) -> TrainingSplit:
        return training_split(self.cfg, name)

    @property
    def pictures_dir(self) -> Path:
        return path(self.cfg, "reports") / "eval"


class TaskObjective(nn.Module):
    """The module the Trainer trains: the model plus the task's heads; `.model` is what is saved."""

    def __init__(self, task: Task, model: OPT, heads: nn.Module, context: TaskContext):
        super().__init__()
        self.task, self.context = task, context
        self.model = TaskModel(model, heads)

    def forward(self, batch: dict, draw) -> dict:
        return self.task.losses(self.model.opt, self.model.heads, batch, draw, self.context)


class TaskModel(nn.Module):
    """The pre-trained model and a task's heads, saved together after fine-tuning."""

    def __init__(self, opt: OPT, heads: nn.Module):
        super().__init__()
        self.opt, self.heads = opt, heads


class Task:
    """Subclasses set `name` and implement `heads`, `losses`, `evaluate` and `blind`."""

    name: str = ""
    splits = ("test", "test_compositional")

    def heads(self, model: OPT, context: TaskContext) -> nn.Module:
        return nn.ModuleDict()

    def losses(self, model: OPT, heads: nn.Module, batch: dict, draw, context: TaskContext) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: OPT, heads: nn.Module, split: str, context: TaskContext) -> dict:
        raise NotImplementedError

    def blind(self, split: str, context: TaskContext) -> dict:
        """The blind baseline of `evaluate`'s metrics on `split` (from train statistics or chance)."""
        raise NotImplementedError
