"""Ingest real Localized Narratives: JSON lines + images + voice recordings -> canonical records.

Three passes: parse and check every line in the main process (schema, safe paths, files
present), decode each image once per `image_id`, then decode each narration's audio (both
fanned out over a process pool, results in input order). Bad lines become quarantine entries
`{"line", "reason", "record"}`; nothing is read outside the configured folders.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path, PurePosixPath, PureWindowsPath

import scipy.signal  # noqa: F401  loaded once here: forked workers inherit it instead of importing (~1 s)
from tqdm import tqdm

from opt.data.manifest import REQUIRED_FIELDS, SPLITS, dumps, record_key
from opt.data.media import SAMPLE_RATE, MediaError, load_audio, load_image, save_flac, save_png

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
RAW_TEXT_LIMIT = 2000
FIELD_TYPES = {
    "dataset_id": (str,),
    "image_id": (str, int),
    "annotator_id": (str, int),
    "caption": (str,),
    "voice_recording": (str,),
    "timed_caption": (list,),
    "traces": (list,),
}


class Rejected(Exception):
    """A line that cannot become a record; `reason` is readable, `record` is what we quarantine."""

    def __init__(self, reason: str, record=None):
        super().__init__(reason)
        self.reason, self.record = reason, record


@dataclass
class Candidate:
    """A line that passed the static checks; its media still have to decode."""

    line: int
    record: dict
    image_source: Path
    audio_source: Path
    image_name: str  # relative to raw_dir: images/<stem>.png
    audio_name: str  # relative to raw_dir: audio/<stem>.flac


def ingest_localized_narratives(cfg, raw_dir: Path) -> tuple[list[dict], list[dict]]:
    """Canonical records and quarantine entries of `cfg.ingest`'s Localized Narratives data."""
    annotations, images_dir, audio_dir = source_paths(cfg.ingest)
    raw_dir = Path(raw_dir)
    locator, names = MediaLocator(images_dir, audio_dir), MediaNames()
    candidates, quarantine = [], []
    for line, text, problem in read_lines(annotations):
        try:
            if problem:
                raise Rejected(problem, text)
            candidates.append(check_line(line, text, locator, names))
        except Rejected as e:
            quarantine.append(quarantine_entry(line, e.reason, e.record))
    workers = worker_count(cfg)
    image_failures = convert_images(candidates, raw_dir, cfg.ingest, workers)
    audio_outcomes = convert_audio(candidates, image_failures, raw_dir, workers)
    kept = []
    for candidate in candidates:
        seconds, reason = audio_outcomes.get(candidate.line, (None, image_failures.get(candidate.image_name)))
        if seconds is None:
            quarantine.append(quarantine_entry(candidate.line, reason, candidate.record))
        else:
            kept.append(canonical_record(candidate, seconds, cfg.ingest))
    return kept, sorted(quarantine, key=lambda entry: entry["line"])


def source_paths(ingest) -> tuple[Path, Path, Path]:
    """The annotations file and the two media folders, resolved; ValueError when not usable."""
    found, problems = [], []
    for key, kind, exists in [
        ("annotations", "a JSON-lines file", Path.is_file),
        ("images_dir", "a folder", Path.is_dir),
        ("audio_dir", "a folder", Path.is_dir),
    ]:
        value = getattr(ingest, key, None)
        if not value:
            problems.append(f"ingest.{key} is not set (expected {kind})")
        elif not exists(Path(value).expanduser()):
            problems.append(f"ingest.{key}={value} is not {kind} that exists")
        else:
            found.append(Path(value).expanduser().resolve())
    if problems:
        raise ValueError(
            "Localized Narratives ingestion needs ingest.annotations, ingest.images_dir and "
            "ingest.audio_dir: " + "; ".join(problems)
        )
    return found[0], found[1], found[2]


def read_lines(path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(1-based line number, text, problem or None) for every non-blank line."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # UTF-8 byte-order mark
            try:
                text, problem = raw.decode("utf-8"), None
            except UnicodeDecodeError as e:
                text, problem = raw.decode("utf-8", errors="replace"), f"malformed JSON: not UTF-8 ({e.reason})"
            if text.strip():
                yield number, text.strip(), problem


def check_line(line: int, text: str, locator: MediaLocator, names: MediaNames) -> Candidate:
    """Parse and check one line; finds its media files. Raises Rejected."""
    record = parse_record(text)
    image_id, voice = str(record["image_id"]), record["voice_recording"]
    try:
        image_source, audio_source = locator.image(image_id), locator.audio(voice)
    except Rejected as e:
        raise Rejected(e.reason, record) from None
    return Candidate(
        line,
        record,
        image_source,
        audio_source,
        image_name=f"images/{names.stem('image', (image_id,))}.png",
        audio_name=f"audio/{names.stem('audio', record_key(record))}.flac",
    )


def parse_record(text: str) -> dict:
    """A JSON object with the required LN fields of the right types and a non-empty caption."""
    try:
        record = json.loads(text, parse_constant=reject_non_finite)
    except (ValueError, RecursionError) as e:
        raise Rejected(f"malformed JSON: {e}", text) from None
    if not isinstance(record, dict):
        raise Rejected(f"not a JSON object (got {type(record).__name__})", text)
    try:
        dumps(record).encode("utf-8")
    except (ValueError, UnicodeError) as e:
        raise Rejected(f"malformed JSON: not encodable as UTF-8 ({e})", text) from None
    check_fields(record)
    return record


def reject_non_finite(constant: str):
    raise ValueError(f"non-finite number {constant}")


def check_fields(record: dict) -> None:
    """Required fields present, known fields of the right type, caption not blank."""
    missing = [name for name in REQUIRED_FIELDS if record.get(name) is None]
    if missing:
        raise Rejected(f"missing required field(s): {', '.join(missing)}", record)
    for name, types in FIELD_TYPES.items():
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
            expected = " or ".join(t.__name__ for t in types)
            raise Rejected(f"wrong type for field {name}: expected {expected}, got {type(value).__name__}", record)
    if not record["caption"].strip():
        raise Rejected("empty caption", record)
    for name in ("dataset_id", "image_id", "voice_recording"):
        if not str(record[name]).strip():
            raise Rejected(f"missing required field(s): {name} is empty", record)


class MediaLocator:
    """Finds media strictly inside the two folders (no absolute paths, `..` or escaping links)."""

    def __init__(self, images_dir: Path, audio_dir: Path):
        self.images_dir, self.audio_dir = images_dir, audio_dir
        self._listings: dict[Path, dict[str, str]] = {}

    def image(self, image_id: str) -> Path:
        check_relative(image_id, "image_id")
        stem = Path(f"{self.images_dir}/{image_id}.x")  # a string join: never let pathlib drop '.'
        folder, name = stem.parent, stem.name[:-2]
        for extension in IMAGE_EXTENSIONS:  # exact names first: no folder listing in the common case
            if os.path.lexists(folder / f"{name}.{extension}"):
                return inside(folder / f"{name}.{extension}", self.images_dir, "image")
        listing = self._listing(folder)  # then any case: x.JPG, x.Png
        for extension in IMAGE_EXTENSIONS:
            if f"{name}.{extension}".lower() in listing:
                return inside(folder / listing[f"{name}.{extension}".lower()], self.images_dir, "image")
        raise Rejected(f"missing image file: no {image_id}.<{'|'.join(IMAGE_EXTENSIONS)}> in images_dir")

    def audio(self, voice_recording: str) -> Path:
        check_relative(voice_recording, "voice_recording")
        path = Path(f"{self.audio_dir}/{voice_recording}")
        if not os.path.lexists(path):
            raise Rejected(f"missing audio file: {voice_recording} not in audio_dir")
        return inside(path, self.audio_dir, "audio")

    def _listing(self, folder: Path) -> dict[str, str]:
        """Lower-cased names of a folder's entries (for case-insensitive extensions), cached."""
        if folder not in self._listings:
            try:
                self._listings[folder] = {entry.lower(): entry for entry in os.listdir(folder)}
            except OSError:
                self._listings[folder] = {}
        return self._listings[folder]


def check_relative(value: str, field: str) -> None:
    """Reject absolute paths, `..` components and NUL bytes in a path taken from a record."""
    if "\x00" in value:
        raise Rejected(f"unsafe {field}: NUL byte in path")
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or value.startswith("\\"):
        raise Rejected(f"unsafe {field}: absolute path {value!r}")
    if ".." in re.split(r"[\\/]", value):
        raise Rejected(f"unsafe {field}: '..' in path {value!r}")


def inside(path: Path, folder: Path, kind: str) -> Path:
    """`path` resolved (links followed); Rejected unless it is a regular file within `folder`."""
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError) as e:
        raise Rejected(f"unsafe {kind} path: cannot resolve ({e})") from None
    if not resolved.is_relative_to(folder):
        raise Rejected(f"unsafe {kind} path: resolves outside the {kind} folder (symlink)")
    if not resolved.is_file():
        raise Rejected(f"missing {kind} file: {path.name} is not a regular file")
    return resolved


class MediaNames:
    """Unique, filesystem-safe output stems: one per image_id, one per narration key."""

    def __init__(self):
        self._stems: dict[tuple, str] = {}
        self._used: set[tuple[str, str]] = set()

    def stem(self, kind: str, key: tuple) -> str:
        """`key`'s stem among `kind`'s files: readable, salted with a hash when two keys collide."""
        if (kind, key) not in self._stems:
            stem, salt = safe_stem("_".join(key)), 0
            while (kind, stem.lower()) in self._used:
                salt += 1
                stem = f"{safe_stem('_'.join(key))}-{short_hash(repr((key, salt)))}"
            self._used.add((kind, stem.lower()))
            self._stems[kind, key] = stem
        return self._stems[kind, key]


def safe_stem(text: str) -> str:
    """`text` itself when it is a safe file name, else a sanitised prefix plus a hash of it."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "x"
    return stem if stem == text and len(stem) <= 120 else f"{stem[:100]}-{short_hash(text)}"


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", errors="surrogatepass")).hexdigest()[:10]


def worker_count(cfg) -> int:
    configured = int(getattr(getattr(cfg, "data", None), "workers", 0) or 0)
    return configured if configured > 0 else len(os.sched_getaffinity(0))


def map_ordered(function: Callable, tasks: list, workers: int, desc: str) -> list:
    """`[function(t) for t in tasks]` over a process pool (input order kept), with a progress bar."""
    if workers <= 1 or len(tasks) <= 1:
        return [function(task) for task in tqdm(tasks, desc=desc, unit="file")]
    workers = min(workers, len(tasks))
    chunk = max(1, min(16, len(tasks) // (workers * 8)))  # small chunks: files vary a lot in cost
    with get_context().Pool(workers) as pool:
        return list(tqdm(pool.imap(function, tasks, chunksize=chunk), total=len(tasks), desc=desc, unit="file"))


def convert_images(candidates: list[Candidate], raw_dir: Path, ingest, workers: int) -> dict[str, str]:
    """Write each image once; returns {image_name: reason} for the images that failed."""
    tasks = {
        c.image_name: (
            str(c.image_source),
            str(raw_dir / c.image_name),
            int(ingest.max_image_pixels),
            int(ingest.max_image_side),
        )
        for c in candidates
    }
    reasons = map_ordered(convert_image, list(tasks.values()), workers, "ingest images")
    return {name: reason for name, reason in zip(tasks, reasons) if reason}


def convert_audio(
    candidates: list[Candidate], image_failures: dict, raw_dir: Path, workers: int
) -> dict[int, tuple[float | None, str]]:
    """{line: (seconds or None, reason)}; per key the first line that decodes wins, later ones are duplicates."""
    groups: dict[tuple, list[Candidate]] = {}
    for c in candidates:
        if c.image_name not in image_failures:
            groups.setdefault(record_key(c.record), []).append(c)
    outcomes: dict[int, tuple[float | None, str]] = {}
    pending = [group[0] for group in groups.values()]
    while pending:  # a failed first try lets the key's next line (if any) be tried
        tasks = [(str(c.audio_source), str(raw_dir / c.audio_name)) for c in pending]
        results = map_ordered(convert_one_audio, tasks, workers, "ingest audio")
        retry = []
        for c, result in zip(pending, results):
            outcomes[c.line] = result
            group = groups[record_key(c.record)]
            if result[0] is None and group[-1] is not c:
                retry.append(group[group.index(c) + 1])
        pending = retry
    for group in groups.values():
        winners = [c.line for c in group if outcomes.get(c.line, (None,))[0] is not None]
        for c in group:
            if c.line not in outcomes:
                outcomes[c.line] = (None, f"duplicate of line {winners[0]} (same dataset_id, image_id, annotator_id)")
    return outcomes


def convert_image(task: tuple) -> str | None:
    """Decode one image and write its canonical PNG; returns the reason it failed, else None."""
    source, target, max_pixels, max_side = task
    try:
        image = load_image(Path(source), max_pixels, max_side)
    except MediaError as e:
        return str(e)
    except Exception as e:  # never let one odd file stop the run
        return f"corrupt image: {type(e).__name__}: {e}"
    write_atomically(Path(target), lambda tmp: save_png(image, tmp))
    return None


def convert_one_audio(task: tuple) -> tuple[float | None, str | None]:
    """Decode one recording to 16 kHz mono FLAC; returns (seconds, None) or (None, reason)."""
    source, target = task
    try:
        samples = load_audio(Path(source), SAMPLE_RATE)
    except MediaError as e:
        return None, str(e)
    except Exception as e:  # never let one odd file stop the run
        return None, f"corrupt audio: {type(e).__name__}: {e}"
    write_atomically(Path(target), lambda tmp: save_flac(samples, tmp, SAMPLE_RATE))
    return round(len(samples) / SAMPLE_RATE, 3), None


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary sibling, then rename: a crash never leaves half a file."""
    tmp = target.with_name(target.name + ".tmp")
    write(tmp)
    os.replace(tmp, target)


def canonical_record(candidate: Candidate, seconds: float, ingest) -> dict:
    """The LN record as given plus our fields (media paths relative to raw_dir)."""
    record = dict(candidate.record)
    for name in ("timed_caption", "traces"):
        record[name] = record.get(name) or []
    record.update(
        image=candidate.image_name,
        voice_recording=candidate.audio_name,
        source_voice_recording=candidate.record["voice_recording"],
        audio_seconds=seconds,
        split=assign_split(candidate.record, ingest.default_split_val, ingest.default_split_test),
    )
    return record


def assign_split(record: dict, val_fraction: float, test_fraction: float) -> str:
    """The record's own split if valid, else a deterministic split from a hash of its image_id."""
    if record.get("split") in SPLITS:
        return record["split"]
    digest = hashlib.sha256(str(record["image_id"]).encode("utf-8", errors="surrogatepass")).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64
    return "val" if unit < val_fraction else "test" if unit < val_fraction + test_fraction else "train"


def quarantine_entry(line: int, reason: str, record) -> dict:
    """One quarantine line: where, why, and what (the parsed object or the raw text)."""
    if isinstance(record, str):
        record = record[:RAW_TEXT_LIMIT]
    return {"line": line, "reason": reason, "record": record}
