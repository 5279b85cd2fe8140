"""`opt validate`: the GX suite passes a valid dataset and names every broken expectation.

Each GX run costs time, so each dataset is validated once in a module-scoped fixture and
several tests read its outcome.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import write_handmade_raw
from PIL import Image

from opt.config import load_config
from opt.data.manifest import MANIFEST, QUARANTINE, SPLITS, write_jsonl
from opt.data.media import SAMPLE_RATE, save_flac
from opt.data.media_stats import audio_stats, image_stats, inside, record_media_stats
from opt.data.validate import dataset_checks, validate
from opt.stages import StageFailed


def make_dataset(tmp_path_factory, name: str, n: int = 14) -> tuple:
    """A fresh root with a valid hand-made raw dataset; returns (cfg, raw_dir, records)."""
    root = tmp_path_factory.mktemp(name)
    raw_dir = root / "data" / "raw"
    records = write_handmade_raw(raw_dir, n=n)
    return load_config([f"paths.root={root}"]), raw_dir, records


def run_validate(cfg) -> dict:
    """Validate; return the outcome: summary or error, plus both reports as written."""
    try:
        summary, error = validate(cfg), None
    except StageFailed as e:
        summary, error = None, str(e)
    reports = Path(cfg.paths.root) / "reports"
    return {
        "summary": summary,
        "error": error,
        "json": json.loads((reports / "validation.json").read_text()),
        "md": (reports / "validation.md").read_text(),
    }


def failed_section(markdown: str) -> str:
    """The 'Failed checks' part of the markdown report."""
    if "## Failed checks" not in markdown:
        return ""
    return markdown.split("## Failed checks", 1)[1].split("## All checks", 1)[0]


# ---------------------------------------------------------------- a valid dataset


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    cfg, raw_dir, records = make_dataset(tmp_path_factory, "valid")
    return records, run_validate(cfg)


def test_valid_dataset_passes_with_expected_counts(valid):
    records, outcome = valid
    assert outcome["error"] is None and outcome["summary"]["success"]
    metrics = outcome["json"]["metrics"]
    assert metrics["records"] == len(records) and metrics["quarantined"] == 0 and metrics["bad_ratio"] == 0
    expected_splits = Counter(r["split"] for r in records)
    assert metrics["splits"] == {s: expected_splits.get(s, 0) for s in SPLITS}
    expected_words = np.mean([len(r["caption"].split()) for r in records])
    assert metrics["mean_caption_words"] == pytest.approx(expected_words, abs=1e-3)
    assert metrics["mean_audio_seconds"] == pytest.approx(np.mean([r["audio_seconds"] for r in records]), abs=1e-3)


def test_valid_dataset_reports_every_check(valid):
    _, outcome = valid
    checks = outcome["json"]["checks"]
    names = [c["name"] for c in checks]
    assert len(names) == len(set(names)) == outcome["json"]["metrics"]["checks"]
    assert all(c["success"] for c in checks) and outcome["json"]["failed"] == []
    for name in (
        "dataset_not_empty",
        "bad_record_ratio",
        "schema_required_columns",
        "caption_words_in_range",
        "audio_duration_in_range",
        "audio_level",
        "image_mode_rgb",
        "synthetic_image_size",
        "record_key_unique",
        "labels_seen_in_train",
        "split_sizes",
    ):
        assert name in names
        assert f"| {name} |" in outcome["md"]
    assert "PASSED" in outcome["md"] and "FAIL" not in outcome["md"]
    assert {c["frame"] for c in checks} == {"dataset", "records", "labels", "splits"}


def test_valid_dataset_json_observes_every_record(valid):
    records, outcome = valid
    by_name = {c["name"]: c for c in outcome["json"]["checks"]}
    assert by_name["audio_level"]["element_count"] == len(records)
    assert by_name["audio_level"]["unexpected_count"] == 0
    assert by_name["labels_seen_in_train"]["element_count"] == len({r["objects"][0]["color"] for r in records}) + 2


# ---------------------------------------------------------------- dataset-level failures


def test_empty_manifest_fails(tmp_path_factory):
    cfg, raw_dir, _ = make_dataset(tmp_path_factory, "empty")
    write_jsonl(raw_dir / MANIFEST, [])
    outcome = run_validate(cfg)
    assert outcome["summary"] is None and "dataset_not_empty" in outcome["error"]
    assert outcome["json"]["metrics"]["records"] == 0 and not outcome["json"]["success"]
    assert "dataset_not_empty" in outcome["json"]["failed"]
    assert "**dataset_not_empty**" in failed_section(outcome["md"])


def test_bad_ratio_above_threshold_fails(tmp_path_factory):
    cfg, raw_dir, records = make_dataset(tmp_path_factory, "bad_ratio")
    quarantined = len(records)  # half of all inputs, over the default 0.2
    write_jsonl(raw_dir / QUARANTINE, [{"reason": "corrupt audio", "line": i} for i in range(quarantined)])
    outcome = run_validate(cfg)
    assert outcome["json"]["failed"] == ["bad_record_ratio"]
    assert "bad_record_ratio" in outcome["error"]
    assert outcome["json"]["metrics"]["bad_ratio"] == pytest.approx(0.5)
    assert f"{quarantined} of {2 * quarantined} quarantined" in failed_section(outcome["md"])


@pytest.mark.parametrize("quarantined, passes", [(0, True), (25, True), (26, False)])
def test_bad_ratio_threshold_is_inclusive(quarantined, passes):
    cfg = load_config(["validate.max_bad_ratio=0.25"])
    checks = {c["name"]: c for c in dataset_checks(cfg, 100 - quarantined, quarantined, 0)}
    assert checks["bad_record_ratio"]["success"] is passes
    assert checks["dataset_not_empty"]["success"]


def test_min_records_is_configurable():
    cfg = load_config(["validate.min_records=20"])
    checks = {c["name"]: c for c in dataset_checks(cfg, 19, 0, 0)}
    assert not checks["dataset_not_empty"]["success"] and checks["dataset_not_empty"]["observed"] == "19 records"


# ---------------------------------------------------------------- broken expectations


def rewrite_audio(raw_dir: Path, record: dict, samples: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    sf.write(raw_dir / record["voice_recording"], samples, rate, format="FLAC", subtype="PCM_16")


def tone(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 300 * t)


def break_records(raw_dir: Path, records: list[dict]) -> dict[str, str]:
    """Break one expectation per record (hand-made splits: 0-3 train, 4 val, 5 test, 6 test_c, ...).

    Returns check name -> the `record` id (index:image_id) it must name.
    """
    r = records
    rewrite_audio(raw_dir, r[0], np.zeros(SAMPLE_RATE))  # silent
    r[1]["caption"] = ""
    rewrite_audio(raw_dir, r[2], np.stack([tone(r[2]["audio_seconds"])] * 2, axis=1))  # stereo
    Image.new("RGB", (32, 32), "white").save(raw_dir / r[3]["image"])
    r[4]["split"] = r[11]["split"] = "train"  # no val split left
    r[5]["objects"][0]["color"] = "purple"  # a test label never seen in train
    rewrite_audio(raw_dir, r[6], tone(r[6]["audio_seconds"], 8000), 8000)
    r[7]["voice_recording"] = "../../outside.flac"
    r[8]["image_id"] = r[9]["image_id"]  # duplicate (dataset_id, image_id, annotator_id)
    Image.open(raw_dir / r[10]["image"]).convert("L").save(raw_dir / r[10]["image"])
    r[10]["audio_seconds"] += 1.0
    r[12]["annotator_id"] = "a12"
    r[13]["split"] = "dev"
    write_jsonl(raw_dir / MANIFEST, r)
    with (raw_dir / MANIFEST).open("a") as f:
        f.write("{not json\n")
    ids = {
        name: f"{i}:{r[i]['image_id']}"
        for name, i in [
            ("audio_level", 0),
            ("caption_words_in_range", 1),
            ("audio_mono", 2),
            ("synthetic_image_size", 3),
            ("audio_sample_rate", 6),
            ("media_readable", 7),
            ("record_key_unique", 8),
            ("image_mode_rgb", 10),
            ("audio_seconds_match_media", 10),
            ("type_annotator_id", 12),
            ("split_in_allowed_set", 13),
        ]
    }
    return ids | {"split_sizes": "val", "labels_seen_in_train": "color=purple", "manifest_lines_are_records": ""}


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    cfg, raw_dir, records = make_dataset(tmp_path_factory, "broken")
    expected = break_records(raw_dir, records)
    return expected, run_validate(cfg)


def test_broken_dataset_fails_exactly_the_broken_checks(broken):
    expected, outcome = broken
    assert outcome["summary"] is None
    assert set(outcome["json"]["failed"]) == set(expected)
    assert outcome["json"]["metrics"]["failed_checks"] == len(expected)
    assert not outcome["json"]["success"] and "FAILED" in outcome["md"]
    split_sizes = next(c for c in outcome["json"]["checks"] if c["name"] == "split_sizes")
    assert split_sizes["element_count"] == 3  # only train, val and test need records


@pytest.mark.parametrize(
    "name",
    [
        "audio_level",
        "caption_words_in_range",
        "audio_mono",
        "synthetic_image_size",
        "split_sizes",
        "labels_seen_in_train",
        "audio_sample_rate",
        "media_readable",
        "record_key_unique",
        "image_mode_rgb",
        "audio_seconds_match_media",
        "type_annotator_id",
        "split_in_allowed_set",
        "manifest_lines_are_records",
    ],
)
def test_failed_check_is_named_in_error_and_reports(broken, name):
    expected, outcome = broken
    assert name in outcome["error"]
    section = failed_section(outcome["md"])
    assert f"**{name}**" in section
    line = next(line for line in section.splitlines() if f"**{name}**" in line)
    assert expected[name] in line  # the failing record, label or split is quoted
    check = next(c for c in outcome["json"]["checks"] if c["name"] == name)
    assert check["success"] is False and expected[name] in check["observed"]


def test_missing_column_fails_schema(tmp_path_factory):
    cfg, raw_dir, records = make_dataset(tmp_path_factory, "schema", n=7)
    for record in records:
        del record["audio_seconds"]
    records[0]["annotator_id"] = None
    write_jsonl(raw_dir / MANIFEST, records)
    outcome = run_validate(cfg)
    assert set(outcome["json"]["failed"]) == {
        "schema_required_columns",
        "not_null_audio_seconds",
        "not_null_annotator_id",
        "type_annotator_id",
    }
    assert "missing: audio_seconds" in failed_section(outcome["md"])


# ---------------------------------------------------------------- media statistics


def test_audio_stats_measure_duration_rate_and_level(tmp_path):
    samples = tone(1.5)
    save_flac(samples, tmp_path / "a.flac")
    stats = audio_stats(tmp_path / "a.flac")
    assert stats["audio_duration"] == pytest.approx(1.5) and stats["audio_sample_rate"] == SAMPLE_RATE
    assert stats["audio_channels"] == 1
    assert stats["audio_rms"] == pytest.approx(0.3 / np.sqrt(2), rel=1e-2)
    assert stats["audio_peak"] == pytest.approx(0.3, rel=1e-2)


def test_image_stats_and_corrupt_media(tmp_path):
    Image.new("L", (20, 12)).save(tmp_path / "i.png")
    assert image_stats(tmp_path / "i.png") == {"image_width": 20, "image_height": 12, "image_mode": "L"}
    (tmp_path / "bad.png").write_bytes((tmp_path / "i.png").read_bytes()[:40])
    (tmp_path / "bad.flac").write_bytes(b"fLaC not really")
    stats = record_media_stats(tmp_path, {"image": "bad.png", "voice_recording": "bad.flac"})
    assert stats["media_error"].startswith("image: ") and "voice_recording: " in stats["media_error"]
    assert stats["image_width"] is None and stats["audio_rms"] is None


def test_media_paths_stay_inside_the_raw_folder(tmp_path):
    assert inside(tmp_path, "images/a.png") == (tmp_path / "images" / "a.png").resolve()
    for bad in ("../a.png", "/etc/passwd", "", None):
        with pytest.raises(ValueError):
            inside(tmp_path, bad)
