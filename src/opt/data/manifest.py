"""The canonical dataset's records: Localized Narratives JSON lines plus our own fields.

A record (one line of `manifest.jsonl`) holds LN's fields `dataset_id`, `image_id`,
`annotator_id`, `caption`, `timed_caption`, `traces`, `voice_recording`, and ours:
`image` (PNG path relative to the raw folder), `split`, `audio_seconds`, and for synthetic
scenes `objects`, `relations` and `voice`. Media paths are relative to the raw folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

LN_FIELDS = ("dataset_id", "image_id", "annotator_id", "caption", "timed_caption", "traces", "voice_recording")
REQUIRED_FIELDS = ("dataset_id", "image_id", "annotator_id", "caption", "voice_recording")
SPLITS = ("train", "val", "test", "test_compositional")
MANIFEST = "manifest.jsonl"
QUARANTINE = "quarantine.jsonl"


def dumps(record: dict) -> str:
    """One canonical JSON line (sorted keys, no NaN) so equal records give equal bytes."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def write_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Write records atomically (temp file, then rename); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(dumps(record) + "\n")
            count += 1
    tmp.replace(path)
    return count


def read_jsonl(path: Path) -> Iterator[dict]:
    """Yield the records of a JSON-lines file we wrote ourselves (trusted input)."""
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_manifest(raw_dir: Path) -> list[dict]:
    return list(read_jsonl(Path(raw_dir) / MANIFEST))


def record_key(record: dict) -> tuple:
    """Identity of a narration: one annotator's narration of one image in one dataset."""
    return (str(record["dataset_id"]), str(record["image_id"]), str(record["annotator_id"]))


LABEL_FIELDS = ("color", "shape", "size")  # ground-truth attributes of a synthetic scene's objects


def object_labels(record: dict) -> list[str]:
    """`field=value` labels ("color=red", "shape=circle", "size=large") of a record's objects,
    one per object and field (repeats kept); a record without well-formed `objects` has none."""
    objects = record.get("objects")
    if not isinstance(objects, list):
        return []
    return [f"{f}={obj[f]}" for obj in objects if isinstance(obj, dict) for f in LABEL_FIELDS if f in obj]


def scene_labels(record: dict) -> set[str]:
    """The distinct labels of one scene: the targets of classification and of the t2i probe."""
    return set(object_labels(record))


def label_matrix(records: list[dict], labels: list[str]) -> np.ndarray:
    """(N,K) bool: which of `labels` each record's scene holds."""
    out = np.zeros((len(records), len(labels)), dtype=bool)
    column = {name: k for k, name in enumerate(labels)}
    for i, record in enumerate(records):
        for name in scene_labels(record) & column.keys():
            out[i, column[name]] = True
    return out
