"""The canonical dataset's records: Localized Narratives JSON lines plus our own fields.

A record (one line of `manifest.jsonl`) holds LN's fields `dataset_id`, `image_id`,
`annotator_id`, `caption`, `timed_caption`, `traces`, `voice_recording`, and ours:
`image` (PNG path relative to the raw folder), `split`, `audio_seconds`, and for synthetic
scenes `objects`, `relations` and `voice`. Media paths are relative to the raw folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

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
