"""`PreparedDataset`: a torch Dataset over the memory-mapped shards that `opt prepare` wrote.

Shards are opened lazily in each process with `mmap_mode="r"` (a DataLoader worker opens its
own maps; nothing is pickled but paths), so the dataset may be far larger than RAM.
Items are dicts of tensors, so `torch.utils.data.default_collate` batches them as they are.
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from opt.data.shards import open_shard, read_index, read_records

PARAMS = "params.json"


def read_params(prepared_dir: Path) -> dict:
    """The prepared dataset's params.json (every preprocessing parameter, counts, stats)."""
    return json.loads((Path(prepared_dir) / PARAMS).read_text())


class PreparedDataset(Dataset):
    """One split of a prepared dataset.

    Item: image float32 (3, H, W) in [0, 1]; mel float32 (n_mels, max_frames), frames past the
    recording (or past max_frames) filled with the log-mel of silence; mel_frames int64 () true
    frames, at most max_frames; tokens int64 (L,); token_count int64 (); index int64 ().
    `max_frames` defaults to the configured maximum (params.json), the same for every split.
    """

    def __init__(self, prepared_dir: Path | str, split: str, max_frames: int | None = None):
        self.prepared_dir = Path(prepared_dir)
        self.split = split
        self.split_dir = self.prepared_dir / split
        self.params = read_params(self.prepared_dir)
        self.max_frames = int(max_frames or self.params["mel"]["max_frames"])
        self.mel_pad_value = float(self.params["mel"]["pad_value"])
        index = read_index(self.split_dir)
        self.shard_names = [s["name"] for s in index["shards"]]
        self.starts = np.cumsum([0] + [s["count"] for s in index["shards"]]).tolist()  # (n_shards + 1,)
        self._open: dict[int, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = {}  # memory maps are reopened in the receiving process, never copied
        return state

    def locate(self, index: int) -> tuple[int, int]:
        """Item index -> (shard number, row in shard)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        shard = bisect.bisect_right(self.starts, index) - 1
        return shard, index - self.starts[shard]

    def arrays(self, shard: int) -> dict[str, np.ndarray]:
        """The memory-mapped arrays of one shard (opened on first use)."""
        if shard not in self._open:
            self._open[shard] = open_shard(self.split_dir / self.shard_names[shard])
        return self._open[shard]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index) + (len(self) if int(index) < 0 else 0)
        shard, row = self.locate(index)
        arrays = self.arrays(shard)
        image = torch.from_numpy(np.array(arrays["images"][row])).float().div_(255.0)  # (3, H, W)
        frames = min(int(arrays["mel_frames"][row]), self.max_frames)
        mel = torch.full((arrays["mel"].shape[1], self.max_frames), self.mel_pad_value)  # (n_mels, max_frames)
        mel[:, :frames] = torch.from_numpy(np.array(arrays["mel"][row, :, :frames], dtype=np.float32))
        return {
            "image": image,
            "mel": mel,
            "mel_frames": torch.tensor(frames, dtype=torch.int64),
            "tokens": torch.from_numpy(np.array(arrays["tokens"][row], dtype=np.int64)),  # (L,)
            "token_count": torch.tensor(int(arrays["token_count"][row]), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def lengths(self) -> torch.Tensor:
        """(N,) int64 audio frames of every item (at most max_frames), for length-bucketed batches."""
        frames = [np.asarray(self.arrays(i)["mel_frames"]) for i in range(len(self.shard_names))]
        return torch.from_numpy(np.concatenate(frames).astype(np.int64)).clamp(max=self.max_frames)

    def records(self) -> list[dict]:
        """Per-item records (keys, caption, objects, relations, ...) in item order."""
        return read_records(self.split_dir)
