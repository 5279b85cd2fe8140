"""`opt ingest`: build the canonical dataset in `data/raw` from the configured source.

The new dataset is written to a sibling folder and swapped in only when complete, so a
crash never leaves a half-written `data/raw` and a smaller re-run leaves no stale media.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import OmegaConf

from opt.config import path, root_dir, typed
from opt.data.manifest import MANIFEST, QUARANTINE, write_jsonl

SOURCES = ("synth", "localized_narratives")
# Where `opt ingest data.source=localized_narratives` looks when ingest.* is not given:
# the folder that `data.dvc` versions.
DEFAULT_SOURCES = {
    "annotations": "data/sources/annotations.jsonl",
    "images_dir": "data/sources/images",
    "audio_dir": "data/sources/audio",
}


def ingest(cfg) -> dict:
    """Run the configured source into `data/raw`; returns counts. Never fails on bad records."""
    source = cfg.data.source
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, got {source!r}")
    raw_dir = path(cfg, "raw")
    partial = raw_dir.with_name(raw_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    records, quarantined = read_source(cfg, partial)
    write_jsonl(partial / MANIFEST, records)
    write_jsonl(partial / QUARANTINE, quarantined)
    swap_in(partial, raw_dir)
    summary = {"source": source, "kept": len(records), "quarantined": len(quarantined), "raw_dir": str(raw_dir)}
    print(f"ingest: kept {len(records)}, quarantined {len(quarantined)} -> {raw_dir}")
    return summary


def read_source(cfg, out_dir: Path) -> tuple[list[dict], list[dict]]:
    """Records (media written under `out_dir`) and quarantine entries of the configured source."""
    if cfg.data.source == "synth":
        from opt.data.synth import generate_synth

        return generate_synth(cfg, out_dir), []
    from opt.data.localized_narratives import ingest_localized_narratives

    return ingest_localized_narratives(with_source_paths(cfg), out_dir)


def with_source_paths(cfg):
    """A copy of cfg whose ingest paths are absolute (defaults under the run's root)."""
    cfg = typed(OmegaConf.to_container(cfg))
    for key, default in DEFAULT_SOURCES.items():
        value = cfg.ingest[key]
        cfg.ingest[key] = str(Path(value).resolve() if value else root_dir(cfg) / default)
    return cfg


def swap_in(partial: Path, raw_dir: Path) -> None:
    """Replace `raw_dir` by `partial` (old version removed only after the new one is in place)."""
    old = raw_dir.with_name(raw_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if raw_dir.exists():
        raw_dir.rename(old)
    partial.rename(raw_dir)
    shutil.rmtree(old, ignore_errors=True)
