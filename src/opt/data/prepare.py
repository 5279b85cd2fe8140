"""`opt prepare`: model-ready features from the canonical raw dataset.

Trains the text tokenizer on the train split's captions and VQA questions, then for every split
streams the manifest in chunks of `prepare.shard_size` records, decodes them over all cores (an
ordered process pool) into images uint8 (3, S, S), log-mel float16 (n_mels, F) and token ids, and
writes one shard per chunk (see `opt.data.shards`). Everything is built in `<prepared>.partial`
and moved into place at the end, so a failed run never leaves a half-written dataset.
`params.json` holds every preprocessing parameter with the counts: the features are versioned with
their parameters.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from omegaconf import OmegaConf
from tqdm import tqdm

from opt.config import path
from opt.data import mel as melspec
from opt.data.contact_sheet import write_contact_sheet
from opt.data.dataset import PARAMS
from opt.data.manifest import MANIFEST, SPLITS, read_jsonl
from opt.data.questions import item_questions, scene_vocab
from opt.data.shards import FIELD_DTYPES, SplitWriter, open_shard, read_index, read_records
from opt.data.text import TOKENIZER_FILE, CaptionTokenizer, train_tokenizer
from opt.files import sha256_file

FORMAT_VERSION = 1
CONTACT_SHEET = "contact_sheet.png"
DROPPED_FIELDS = ("traces",)  # bulky and unused downstream; the raw manifest keeps them
_WORKER: dict = {}  # per-process decoding settings (set by `init_worker`)


def init_worker(raw_dir: str, settings: SimpleNamespace) -> None:
    """Pool initializer: one torch thread per worker (the pool gives the parallelism; per-item
    ops are too small for intra-op threads, which only contend)."""
    import torch

    torch.set_num_threads(1)
    _WORKER.update(raw_dir=Path(raw_dir), settings=settings)


def featurize(media: tuple[str, str]) -> dict:
    """(image path, audio path) relative to the raw folder -> image, mel and audio facts."""
    import torch
    from PIL import Image

    from opt.data.media import load_audio, load_image

    raw_dir, s = _WORKER["raw_dir"], _WORKER["settings"]
    image = load_image(raw_dir / media[0], max_pixels=Image.MAX_IMAGE_PIXELS or 10**9)
    if image.size != (s.image_size, s.image_size):  # squash to a square: keeps all narrated content
        image = image.resize((s.image_size, s.image_size), Image.Resampling.LANCZOS)
    wave = load_audio(raw_dir / media[1], s.sample_rate)
    kept = wave[: melspec.max_samples(s)]
    mel = melspec.log_mel(torch.from_numpy(kept), s).numpy()  # (n_mels, F)
    return {
        "images": np.asarray(image, dtype=np.uint8).transpose(2, 0, 1),  # (3, S, S)
        "mel": mel.astype(np.float16),
        "mel_frames": np.int32(mel.shape[1]),
        "audio_seconds": wave.size / s.sample_rate,
        "audio_truncated": kept.size < wave.size,
        "mel_sum": mel.astype(np.float64).sum(axis=1),
        "mel_sumsq": np.square(mel, dtype=np.float64).sum(axis=1),
    }


class FeaturizerPool:
    """Featurizes media over `workers` processes (ordered), or inline when workers <= 1."""

    def __init__(self, workers: int, raw_dir: Path, settings: SimpleNamespace):
        import torch

        self.workers, self.pool, self.caller_threads = workers, None, torch.get_num_threads()
        if workers <= 1:
            init_worker(str(raw_dir), settings)  # inline: single-threaded until close()
            return
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"  # fork: no re-import
        self.pool = mp.get_context(method).Pool(workers, initializer=init_worker, initargs=(str(raw_dir), settings))

    def map(self, media: list[tuple[str, str]]) -> list[dict]:
        if self.pool is None:
            return [featurize(m) for m in media]
        return self.pool.map(featurize, media, chunksize=max(1, len(media) // (4 * self.workers)))

    def close(self) -> None:
        """Stop the pool, or give the caller back its torch threads."""
        import torch

        if self.pool is not None:
            self.pool.close()
            self.pool.join()
        torch.set_num_threads(self.caller_threads)


def worker_count(prep) -> int:
    return int(prep.workers) if int(prep.workers) > 0 else (os.cpu_count() or 1)


def split_records(manifest: Path, split: str) -> Iterator[dict]:
    return (r for r in read_jsonl(manifest) if r.get("split") == split)


def tokenizer_texts(manifest: Path) -> Iterator[str]:
    """What the tokenizer trains on: each train caption, then that train item's VQA questions
    (the very texts VQA fine-tuning encodes: item i's from item_questions(record, i, train scene
    vocabulary)), so question words are whole pieces too. No other split's text."""
    vocab = scene_vocab(split_records(manifest, "train"))
    for i, record in enumerate(split_records(manifest, "train")):
        yield record["caption"]
        yield from (q.text for q in item_questions(record, i, vocab))


def chunks(records: Iterator[dict], size: int) -> Iterator[list[dict]]:
    while chunk := list(islice(records, size)):
        yield chunk


def new_totals(n_mels: int) -> dict:
    return {
        "truncated_audio": 0,
        "frames": 0,
        "max_mel_frames": 0,
        "mel_sum": np.zeros(n_mels),
        "mel_sumsq": np.zeros(n_mels),
    }


def add_item(totals: dict, item: dict) -> None:
    """Accumulate one item's audio facts into its split's totals."""
    totals["truncated_audio"] += int(item["audio_truncated"])
    totals["frames"] += int(item["mel_frames"])
    totals["max_mel_frames"] = max(totals["max_mel_frames"], int(item["mel_frames"]))
    totals["mel_sum"] += item["mel_sum"]
    totals["mel_sumsq"] += item["mel_sumsq"]


def prepared_record(record: dict, item: dict) -> dict:
    """The record kept beside the features: raw fields (minus bulky ones) plus audio facts."""
    kept = {k: v for k, v in record.items() if k not in DROPPED_FIELDS}
    return {
        **kept,
        "audio_seconds": item["audio_seconds"],
        "audio_truncated": item["audio_truncated"],
        "mel_frames": int(item["mel_frames"]),
        "token_count": int(item["token_count"]),
    }


def prepare_split(
    manifest: Path, split: str, tokenizer: CaptionTokenizer, decoder: FeaturizerPool, prep, out_dir: Path, bar
) -> dict:
    """Decode, featurize and shard one split; returns its counts and mel sums (for stats)."""
    writer = SplitWriter(out_dir, pad_values={"mel": melspec.pad_value(prep)})
    totals = new_totals(int(prep.n_mels))
    for chunk in chunks(split_records(manifest, split), int(prep.shard_size)):
        items = decoder.map([(r["image"], r["voice_recording"]) for r in chunk])
        tokens, counts = tokenizer.encode([r["caption"] for r in chunk])
        for item, ids, count in zip(items, tokens, counts):
            item.update(tokens=ids, token_count=count)
            add_item(totals, item)
        writer.write_shard(items, [prepared_record(r, item) for r, item in zip(chunk, items)])
        bar.update(len(chunk))
    index = writer.close()
    return {"records": index["count"], "shards": len(index["shards"]), **totals}


def mel_statistics(split_totals: dict) -> dict:
    """Per-mel-bin mean and std over the true frames of a split (for input normalisation)."""
    frames = max(split_totals["frames"], 1)
    mean = split_totals["mel_sum"] / frames
    std = np.sqrt(np.maximum(split_totals["mel_sumsq"] / frames - mean**2, 0.0))
    return {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}


def build_params(prep, tokenizer: CaptionTokenizer, splits: dict, manifest: Path) -> dict:
    """Every preprocessing parameter, derived setting and count: the features' version."""
    return {
        "format_version": FORMAT_VERSION,
        "prepare": OmegaConf.to_container(prep) if OmegaConf.is_config(prep) else dict(vars(prep)),
        "image": {
            "size": int(prep.image_size),
            "layout": "CHW",
            "dtype": "uint8",
            "channels": "RGB",
            "resize": "lanczos to a square (aspect not kept)",
        },
        "mel": {
            **melspec.mel_settings(prep),
            "window": "hann (periodic)",
            "center": True,
            "pad_mode": "reflect",
            "power": 2.0,
            "log": "ln(mel + log_eps)",
            "dtype": "float16",
            "max_samples": melspec.max_samples(prep),
            "max_frames": melspec.max_frames(prep),
            "pad_value": melspec.pad_value(prep),
        },
        "text": tokenizer.describe(),
        "mel_stats": {"split": "train", **mel_statistics(splits["train"])},
        "splits": {
            name: {k: v for k, v in s.items() if k not in ("mel_sum", "mel_sumsq", "frames")}
            for name, s in splits.items()
        },
        "shards": {"size": int(prep.shard_size), "arrays": {k: np.dtype(v).name for k, v in FIELD_DTYPES.items()}},
        "source": {"manifest_sha256": sha256_file(manifest)},
    }


def contact_sheet_items(prepared: Path, n_items: int) -> tuple[list, list, list]:
    """Up to n_items prepared (image, header, caption), taken in turn from each split."""
    images, headers, captions = [], [], []
    per_split = {s: (read_index(prepared / s), read_records(prepared / s)) for s in SPLITS}
    for row in range(max((idx["count"] for idx, _ in per_split.values()), default=0)):
        for split, (index, records) in per_split.items():
            if row < index["count"] and len(images) < n_items:
                record = records[row]
                images.append(np.array(open_shard(prepared / split / record["shard"])["images"][record["row"]]))
                headers.append(f"{split} - {record['image_id']}")
                captions.append(record["caption"])
    return images, headers, captions


def decoding_settings(prep) -> SimpleNamespace:
    """The picklable subset of the config that workers need."""
    return SimpleNamespace(
        image_size=int(prep.image_size), max_audio_seconds=float(prep.max_audio_seconds), **melspec.mel_settings(prep)
    )


def count_splits(manifest: Path) -> dict[str, int]:
    counts = {s: 0 for s in SPLITS}
    for record in read_jsonl(manifest):
        counts[record.get("split")] = counts.get(record.get("split"), 0) + 1
    if not counts["train"]:
        raise ValueError(f"{manifest} has no train records: the tokenizer is trained on train text")
    return counts


def write_features(manifest: Path, raw: Path, prep, work: Path, total: int) -> tuple[CaptionTokenizer, dict]:
    """Tokenizer and every split's shards into `work`; returns the tokenizer and split totals."""
    decoder = FeaturizerPool(worker_count(prep), raw, decoding_settings(prep))  # fork before tokenizers starts threads
    try:
        tokenizer = train_tokenizer(tokenizer_texts(manifest), int(prep.vocab_size), int(prep.max_text_tokens))
        tokenizer.save(work / TOKENIZER_FILE)
        with tqdm(total=total, desc="prepare", unit="triplet") as bar:
            splits = {s: prepare_split(manifest, s, tokenizer, decoder, prep, work / s, bar) for s in SPLITS}
    finally:
        decoder.close()
    return tokenizer, splits


def prepare(cfg) -> dict:
    """Stage `opt prepare`: tokenizer, shards, params.json and contact sheet in paths.prepared."""
    prep, raw, final = cfg.prepare, path(cfg, "raw"), path(cfg, "prepared")
    manifest, work = raw / MANIFEST, final.with_name(final.name + ".partial")
    start = time.perf_counter()
    counts = count_splits(manifest)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tokenizer, splits = write_features(manifest, raw, prep, work, sum(counts[s] for s in SPLITS))
    params = build_params(prep, tokenizer, splits, manifest)
    (work / PARAMS).write_text(json.dumps(params, indent=1) + "\n")
    write_contact_sheet(work / CONTACT_SHEET, *contact_sheet_items(work, int(prep.contact_sheet_items)))
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    seconds = time.perf_counter() - start
    total = sum(s["records"] for s in splits.values())
    summary = {
        "prepared_dir": str(final),
        "counts": {s: v["records"] for s, v in splits.items()},
        "skipped_other_splits": sum(v for k, v in counts.items() if k not in SPLITS),
        "seconds": round(seconds, 3),
        "triplets_per_second": round(total / max(seconds, 1e-9), 1),
    }
    print(f"prepare: {total} triplets in {seconds:.1f} s ({summary['triplets_per_second']} triplets/s) -> {final}")
    return summary
