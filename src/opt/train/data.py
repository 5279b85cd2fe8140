"""What the trainers read: a prepared split with normalised log-mel and, once the image
tokenizer has run, the VQ codes of each image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from opt.config import path
from opt.data.dataset import PreparedDataset, read_params

CODES_DIR = "codes"  # under models/image_tokenizer: <split>.npy int16 (N, grid*grid)


def image_tokenizer_dir(cfg) -> Path:
    return path(cfg, "models") / "image_tokenizer"


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


def prepared_identity(cfg) -> dict:
    """Content hash of the prepared features' params.json (it holds the manifest's sha256)."""
    from opt.files import sha256_file

    return {"prepared": sha256_file(path(cfg, "prepared") / "params.json")}


def training_split(cfg, split: str, with_codes: bool = True) -> TrainingSplit:
    codes = image_tokenizer_dir(cfg) / CODES_DIR / f"{split}.npy" if with_codes else None
    if codes is not None and not codes.exists():
        raise FileNotFoundError(f"no VQ codes at {codes}: run `opt image_tokenizer` first")
    return TrainingSplit(path(cfg, "prepared"), split, codes)


def batches(dataset: Dataset, batch_size: int):
    """Consecutive batches (dicts of stacked tensors) over a whole split, for evaluation."""
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        yield {k: torch.stack([it[k] for it in items]) for k in items[0]}
