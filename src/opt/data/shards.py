"""Sharded, memory-mapped feature arrays: a dataset larger than RAM is written and read in shards.

Layout of one split (`prepared/<split>/`):
    shards.json                  {"count": N, "shards": [{"name", "count", "mel_width"}, ...]}
    records.jsonl                one line per item, in item order (keys, caption, ground truth)
    shard_00000/images.npy       uint8   (n, 3, H, W)
    shard_00000/mel.npy          float16 (n, n_mels, W_shard)  W_shard = longest item of the shard,
                                 frames past an item's end hold the log-mel of silence
    shard_00000/mel_frames.npy   int32   (n,)   true frames of each item
    shard_00000/tokens.npy       int32   (n, L) [PAD]-filled token ids
    shard_00000/token_count.npy  int32   (n,)   tokens before padding
Each array is written through `np.lib.format.open_memmap`, one item at a time, so only the
shard being written is ever in memory; readers open them with `mmap_mode="r"`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from opt.data.manifest import dumps

FIELD_DTYPES = {
    "images": np.uint8,
    "mel": np.float16,
    "mel_frames": np.int32,
    "tokens": np.int32,
    "token_count": np.int32,
}
SHARDS_INDEX = "shards.json"
RECORDS = "records.jsonl"


def shard_name(index: int) -> str:
    return f"shard_{index:05d}"


def write_array(path: Path, items: list[np.ndarray], dtype, pad_value: float = 0) -> tuple[int, ...]:
    """Write items (each of any shape, same rank) as one (n, *max_shape) .npy via open_memmap.

    Items smaller than the largest are padded at the end of each axis with `pad_value`.
    """
    shapes = np.array([np.shape(item) for item in items], dtype=np.int64).reshape(len(items), -1)
    full = (len(items), *(int(s) for s in shapes.max(axis=0))) if len(items) else (0,)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=full)
    for row, item in enumerate(items):
        item = np.asarray(item)
        if item.shape != full[1:]:
            out[row] = pad_value
        out[(row, *(slice(0, s) for s in item.shape))] = item
    out.flush()
    del out
    return full


class SplitWriter:
    """Writes one split shard by shard: `write_shard(items, records)` then `close()`."""

    def __init__(self, split_dir: Path, pad_values: dict[str, float] | None = None):
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.pad_values = pad_values or {}
        self.shards: list[dict] = []
        self.count = 0
        self._records = (self.split_dir / RECORDS).open("w", encoding="utf-8")

    def write_shard(self, items: list[dict[str, np.ndarray]], records: list[dict]) -> dict:
        """Write one shard of items (dicts with every FIELD_DTYPES key) and their records."""
        if len(items) != len(records) or not items:
            raise ValueError(f"a shard needs as many items as records, and at least one ({len(items)}, {len(records)})")
        name = shard_name(len(self.shards))
        shard_dir = self.split_dir / name
        shard_dir.mkdir(parents=True, exist_ok=True)
        shapes = {
            field: write_array(
                shard_dir / f"{field}.npy", [item[field] for item in items], dtype, self.pad_values.get(field, 0)
            )
            for field, dtype in FIELD_DTYPES.items()
        }
        for row, record in enumerate(records):
            self._records.write(dumps({**record, "index": self.count + row, "shard": name, "row": row}) + "\n")
        entry = {"name": name, "count": len(items), "mel_width": int(shapes["mel"][-1])}
        self.shards.append(entry)
        self.count += len(items)
        return entry

    def close(self) -> dict:
        """Finish the split: close records.jsonl, write shards.json; returns that index."""
        self._records.close()
        index = {"count": self.count, "shards": self.shards}
        (self.split_dir / SHARDS_INDEX).write_text(json.dumps(index, indent=1) + "\n")
        return index


def read_index(split_dir: Path) -> dict:
    """The split's shards.json: total count and per-shard counts."""
    return json.loads((Path(split_dir) / SHARDS_INDEX).read_text())


def open_shard(shard_dir: Path) -> dict[str, np.ndarray]:
    """Every array of one shard, memory-mapped read-only (nothing is read until indexed)."""
    return {field: np.load(Path(shard_dir) / f"{field}.npy", mmap_mode="r") for field in FIELD_DTYPES}


def read_records(split_dir: Path) -> list[dict]:
    """The split's records (keys, caption, ground truth), in item order."""
    from opt.data.manifest import read_jsonl

    return list(read_jsonl(Path(split_dir) / RECORDS))
