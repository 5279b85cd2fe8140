"""What models read: a prepared split with normalised log-mel and, once the image tokenizer has
run, the VQ codes of each image (open one with `opt.artifacts.training_split(cfg, split)`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from opt.data.dataset import PreparedDataset, read_params


def mel_normalisation(params: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-bin mean (M,1) and std (M,1) of the train log-mel (params.json): mel' = (mel - mean) / std."""
    stats = params["mel_stats"]
    mean = torch.tensor(stats["mean"], dtype=torch.float32)[:, None]
    return mean, torch.tensor(stats["std"], dtype=torch.float32)[:, None].clamp(min=1e-3)


class TrainingSplit(Dataset):
    """PreparedDataset items with mel normalised per bin by the train statistics, plus `codes`
    (G,) int64 when VQ codes exist for the split."""

    def __init__(self, prepared_dir: Path, split: str, codes_file: Path | None = None):
        self.items = PreparedDataset(prepared_dir, split)
        self.mel_mean, self.mel_std = mel_normalisation(read_params(prepared_dir))
        self.codes = np.load(codes_file, mmap_mode="r") if codes_file is not None else None
        if self.codes is not None and len(self.codes) != len(self.items):
            raise ValueError(f"{codes_file} holds {len(self.codes)} rows for {len(self.items)} items")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        item["mel"] = (item["mel"] - self.mel_mean) / self.mel_std
        if self.codes is not None:
            item["codes"] = torch.from_numpy(np.array(self.codes[index], dtype=np.int64))
        return item

    def records(self) -> list[dict]:
        return self.items.records()

    def lengths(self) -> torch.Tensor:
        return self.items.lengths()


def batches(dataset: Dataset, batch_size: int):
    """Consecutive batches (dicts of stacked tensors) over a whole split, for evaluation."""
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}
