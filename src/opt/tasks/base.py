"""What every downstream task provides, and the context tasks share.

A task owns small heads on top of the pre-trained OPT model, its state (what the heads need
from the train split, e.g. the answer vocabulary: `fit_state` computes it once, fine-tuning saves
it beside the weights, loading hands it back through `use_state`), an objective for fine-tuning
(forward(batch, draw) -> {"loss": ..., "<task>_loss": ...}, trained by the shared Trainer),
`evaluate(split) -> {metric: value}`, and `blind(split) -> {metric: value}`: what a model that
ignores its input scores on the same split, under the same metric names. Batches are TrainingSplit items (see
opt.data.splits): tokens, token_count, image, mel, mel_frames, codes, index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from opt.artifacts import load_tokenizer, training_split
from opt.config import path
from opt.data.splits import TrainingSplit
from opt.data.text import CaptionTokenizer
from opt.model.opt import OPT


@dataclass
class TaskContext:
    """Everything a task needs besides the model: config, tokenizer, splits and where to write."""

    cfg: object
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @cached_property
    def tokenizer(self) -> CaptionTokenizer:
        return load_tokenizer(self.cfg)

    def split(self, name: str) -> TrainingSplit:
        return training_split(self.cfg, name)

    @property
    def pictures_dir(self) -> Path:
        return path(self.cfg, "reports") / "eval"


def text_batch(tokenizer, texts: list[str], device, trim: bool = True) -> dict:
    """Texts -> a text input: {"tokens": (N,L') int64 trimmed to the longest (else (N,L) of the
    tokenizer), "token_count": (N,)}."""
    ids, counts = tokenizer.encode(list(texts))
    ids, counts = torch.from_numpy(ids).long(), torch.from_numpy(counts).long()
    ids = ids[:, : int(counts.max())] if trim else ids
    return {"tokens": ids.to(device), "token_count": counts.to(device)}


class TaskObjective(nn.Module):
    """The module the Trainer trains: the model plus the task's heads; `.model` is what is saved."""

    def __init__(self, task: Task, model: OPT, heads: nn.Module, context: TaskContext):
        super().__init__()
        self.task, self.context = task, context
        self.model = TaskModel(model, heads)

    def head_parameters(self):
        """The task's fresh heads (the Trainer gives them `task.head_lr_factor` x lr)."""
        return self.model.heads.parameters()

    def forward(self, batch: dict, draw) -> dict:
        return self.task.losses(self.model.opt, self.model.heads, batch, draw, self.context)


class TaskModel(nn.Module):
    """The pre-trained model and a task's heads, saved together after fine-tuning."""

    def __init__(self, opt: OPT, heads: nn.Module):
        super().__init__()
        self.opt, self.heads = opt, heads


class Task:
    """Subclasses set `name` and implement `heads`, `losses`, `evaluate` and `blind`; a task whose
    heads depend on the data also `fit_state` and `use_state`."""

    name: str = ""
    splits = ("test", "test_compositional")

    def fit_state(self, context: TaskContext) -> dict:
        """What the heads need from the train split, JSON-able (saved with the fine-tuned weights)."""
        return {}

    def use_state(self, state: dict) -> None:
        """Take a state from `fit_state` or from disk; called before `heads`."""

    def records(self, context: TaskContext, split: str) -> list[dict]:
        """The records of `split`, read once per task instance."""
        cache = self.__dict__.setdefault("_records", {})
        if split not in cache:
            cache[split] = context.split(split).records()
        return cache[split]

    def fitted(self, context: TaskContext) -> Task:
        """This task with the state fitted on `context`'s train split (for fresh heads)."""
        self.use_state(self.fit_state(context))
        return self

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
