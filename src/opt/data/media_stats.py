"""Decoded-media statistics of manifest records and the frames that `opt validate` checks.

Frames: `records` (manifest fields, media statistics, derived columns), `labels` (each
ground-truth label of the synthetic scenes with its count in train) and `splits` (records per
split). Images: width, height and mode from the PNG header, integrity from `Image.verify` (no
pixel decode). Audio: duration, sample rate and channels from `soundfile.info`; RMS level,
peak and finiteness streamed block by block. A file that cannot be read gives
`media_error` instead of numbers; nothing outside the raw folder is ever opened.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from opt.data.manifest import REQUIRED_FIELDS, SPLITS, object_labels

IMAGE_STATS = ("image_width", "image_height", "image_mode")
AUDIO_STATS = ("audio_duration", "audio_sample_rate", "audio_channels", "audio_rms", "audio_peak")
MEDIA_STATS = IMAGE_STATS + AUDIO_STATS + ("media_error",)
AUDIO_BLOCK = 1 << 16  # frames per block when streaming audio for its level


def inside(raw_dir: Path, relative: object) -> Path:
    """The media file `relative` to `raw_dir`; ValueError if it is absent or escapes the folder."""
    if not isinstance(relative, str) or not relative:
        raise ValueError("no media path")
    root = raw_dir.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise ValueError(f"path outside the raw folder: {relative}")
    return target


def image_stats(path: Path) -> dict:
    """Width, height and mode of an image, after checking its integrity."""
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        width, height = im.size
        return {"image_width": width, "image_height": height, "image_mode": im.mode}


def audio_stats(path: Path) -> dict:
    """Duration, rate and channels from the header; RMS and peak from the samples."""
    info = sf.info(str(path))
    total, squares, peak = 0, 0.0, 0.0
    for block in sf.blocks(str(path), blocksize=AUDIO_BLOCK, dtype="float32", always_2d=True):
        if not np.all(np.isfinite(block)):
            raise ValueError("audio holds NaN or Inf samples")
        total += block.size
        squares += float(np.square(block, dtype=np.float64).sum())
        peak = max(peak, float(np.abs(block).max(initial=0.0)))
    return {
        "audio_duration": info.frames / info.samplerate if info.samplerate else 0.0,
        "audio_sample_rate": int(info.samplerate),
        "audio_channels": int(info.channels),
        "audio_rms": (squares / total) ** 0.5 if total else 0.0,
        "audio_peak": peak,
    }


def record_media_stats(raw_dir: Path, record: dict) -> dict:
    """All media statistics of one record; unreadable media give `media_error` and NaNs."""
    stats: dict = dict.fromkeys(MEDIA_STATS)
    errors = []
    for reader, field in ((image_stats, "image"), (audio_stats, "voice_recording")):
        try:
            stats.update(reader(inside(raw_dir, record.get(field))))
        except (OSError, ValueError, RuntimeError, SyntaxError, Image.DecompressionBombError) as e:
            errors.append(f"{field}: {e}")
    stats["media_error"] = "; ".join(errors) or None
    return stats


def media_stats(raw_dir: Path, records: list[dict], workers: int = 0) -> list[dict]:
    """Statistics of every record, in order, decoded on a thread pool (I/O and C decoders)."""
    workers = workers or os.cpu_count() or 1
    if len(records) < 32 or workers == 1:
        return [record_media_stats(raw_dir, r) for r in records]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda r: record_media_stats(raw_dir, r), records, chunksize=16))


NESTED_FIELDS = ("timed_caption", "traces", "objects", "relations")  # lists: not frame columns
RECORD_FIELDS = REQUIRED_FIELDS + ("image", "split", "audio_seconds")
DERIVED = ("record", "caption_words", "is_synthetic", "image_size_px", "audio_seconds_error")


def derived_columns(index: int, record: dict, stats: dict) -> dict:
    """Columns computed from a record and its media: id, word count, size, duration error."""
    caption, seconds = record.get("caption"), record.get("audio_seconds")
    duration, width, height = stats["audio_duration"], stats["image_width"], stats["image_height"]
    has_seconds = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    return {
        "record": f"{index}:{record.get('image_id')}",
        "caption_words": len(caption.split()) if isinstance(caption, str) else 0,
        "is_synthetic": bool(record.get("objects")),
        "image_size_px": f"{width}x{height}" if width is not None else None,
        "audio_seconds_error": abs(seconds - duration) if has_seconds and duration is not None else None,
    }


def records_frame(raw_dir: Path, records: list[dict], workers: int = 0) -> pd.DataFrame:
    """One row a record: its scalar fields, media statistics and derived columns."""
    rows = []
    for index, (record, stats) in enumerate(zip(records, media_stats(raw_dir, records, workers))):
        row = {k: v for k, v in record.items() if k not in NESTED_FIELDS}
        row.update(stats)
        row.update(derived_columns(index, record, stats))
        rows.append(row)
    if not rows:
        return pd.DataFrame(columns=list(RECORD_FIELDS + MEDIA_STATS + DERIVED))
    return pd.DataFrame(rows)


def labels_frame(records: list[dict]) -> pd.DataFrame:
    """One row a label seen in any split: how many objects carry it, and how many in train."""
    everywhere, train = Counter(), Counter()
    for record in records:
        labels = object_labels(record)
        everywhere.update(labels)
        if record.get("split") == "train":
            train.update(labels)
    names = sorted(everywhere)
    return pd.DataFrame(
        {"label": names, "objects": [everywhere[n] for n in names], "train_objects": [train[n] for n in names]}
    )


def splits_frame(records: list[dict]) -> pd.DataFrame:
    """One row a split (every known split, plus any other value found), with its record count."""
    counts = Counter(str(r.get("split", "(missing)")) for r in records)
    names = list(SPLITS) + sorted(set(counts) - set(SPLITS))
    return pd.DataFrame({"split": names, "records": [counts[n] for n in names]})


def build_frames(raw_dir: Path, records: list[dict], workers: int = 0) -> dict[str, pd.DataFrame]:
    """The frames `opt validate` runs its suites on, by name."""
    return {
        "records": records_frame(raw_dir, records, workers),
        "labels": labels_frame(records),
        "splits": splits_frame(records),
    }
