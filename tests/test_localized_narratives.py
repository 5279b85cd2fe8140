"""Localized Narratives ingestion: every good record kept (canonical media), every bad one quarantined."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf
from ln_fixtures import BLUE, RED, LNFolder, build_ln_folder, ln_record, png_header_only
from omegaconf import OmegaConf
from PIL import Image

from opt.config import OPTConfig
from opt.data import localized_narratives as ln
from opt.data.manifest import SPLITS, dumps, record_key
from opt.data.media import MediaError, load_image

MAX_SIDE = 128


def ln_config(folder, workers: int = 2, **ingest):
    cfg = OmegaConf.structured(OPTConfig)
    cfg.data.workers = workers
    cfg.ingest.annotations, cfg.ingest.images_dir = str(folder.annotations), str(folder.images_dir)
    cfg.ingest.audio_dir, cfg.ingest.max_image_side = str(folder.audio_dir), MAX_SIDE
    for key, value in ingest.items():
        cfg.ingest[key] = value
    return cfg


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    """The mixed dataset ingested once through the process pool: (folder, raw_dir, kept, quarantine)."""
    folder = build_ln_folder(tmp_path_factory.mktemp("ln"))
    raw_dir = folder.root / "raw"
    kept, quarantine = ln.ingest_localized_narratives(ln_config(folder), raw_dir)
    return folder, raw_dir, kept, quarantine


def kept_by_image(kept: list[dict], image_id: str) -> dict:
    return next(r for r in kept if r["image_id"] == image_id and str(r["annotator_id"]) == "0")


def canonical_image(raw_dir: Path, record: dict) -> Image.Image:
    with Image.open(raw_dir / record["image"]) as im:
        assert im.format == "PNG"
        return im.copy()


def test_every_good_record_is_kept_in_input_order(ingested):
    folder, _, kept, _ = ingested
    assert [record_key(r) for r in kept] == [g.key for g in folder.good]
    assert [r["caption"] for r in kept] == [g.caption for g in folder.good]


def test_every_bad_kind_is_quarantined_once_with_a_reason_naming_it(ingested):
    folder, _, _, quarantine = ingested
    by_line = {entry["line"]: entry for entry in quarantine}
    assert sorted(by_line) == sorted(line for line, _ in folder.bad.values())  # blank lines skipped
    for kind, (line, keyword) in folder.bad.items():
        assert keyword.lower() in by_line[line]["reason"].lower(), (kind, by_line[line]["reason"])
    assert isinstance(by_line[folder.bad["malformed_json"][0]]["record"], str)
    assert by_line[folder.bad["empty_caption"][0]]["record"]["annotator_id"] == 10
    for entry in quarantine:
        dumps(entry)  # quarantine.jsonl can be written


def test_a_duplicate_keeps_the_first_record(ingested):
    folder, _, kept, _ = ingested
    first = folder.good[0]
    copies = [r for r in kept if record_key(r) == first.key]
    assert len(copies) == 1 and copies[0]["caption"] == first.caption


def test_records_carry_ln_fields_and_ours(ingested):
    folder, raw_dir, kept, _ = ingested
    sources = {g.key: g for g in folder.good}
    lines = folder.annotations.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    for record in kept:
        original = json.loads(lines[sources[record_key(record)].line - 1])
        assert record["source_voice_recording"] == original["voice_recording"]
        assert record["timed_caption"] == original["timed_caption"] and record["traces"] == original["traces"]
        assert record["image"].startswith("images/") and record["voice_recording"].startswith("audio/")
        assert record["split"] in SPLITS
        dumps(record)


def test_canonical_images_are_rgb_png_within_the_size_limit(ingested):
    _, raw_dir, kept, _ = ingested
    for record in kept:
        image = canonical_image(raw_dir, record)
        assert image.mode == "RGB" and max(image.size) <= MAX_SIDE
    assert canonical_image(raw_dir, kept_by_image(kept, "big")).size == (MAX_SIDE, round(120 * MAX_SIDE / 300))
    written = sorted(p.name for p in (raw_dir / "images").iterdir())
    assert written == sorted({Path(r["image"]).name for r in kept})  # one file per image_id, no leftovers


def close(pixel, colour, tolerance: int = 40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


def test_image_modes_are_converted_faithfully(ingested):
    _, raw_dir, kept, _ = ingested
    image = {
        name: canonical_image(raw_dir, kept_by_image(kept, name))
        for name in ("rotated", "rgba", "palette", "cmyk", "deep", "gray")
    }
    assert image["rotated"].size == (20, 40)  # EXIF orientation 6 applied: left half is now the top
    assert close(image["rotated"].getpixel((10, 5)), RED) and close(image["rotated"].getpixel((10, 35)), BLUE)
    assert image["rgba"].getpixel((2, 8)) == (255, 255, 255) and close(image["rgba"].getpixel((13, 8)), RED)
    assert image["palette"].getpixel((2, 8)) == (255, 255, 255) and image["palette"].getpixel((13, 8)) == BLUE
    assert close(image["cmyk"].getpixel((8, 8)), (255, 0, 0))
    ramp = [image["deep"].getpixel((x, 4))[0] for x in (0, 16, 31)]  # 16-bit ramp 0..65535
    assert ramp[0] <= 2 and 120 <= ramp[1] <= 140 and ramp[2] >= 253
    assert image["gray"].getpixel((3, 3)) == (100, 100, 100)


def test_audio_is_16k_mono_flac_of_the_right_duration(ingested):
    folder, raw_dir, kept, _ = ingested
    seconds = {g.key: g.seconds for g in folder.good}
    assert max(seconds.values()) >= 30  # a long narration is kept like any other
    for record in kept:
        info = sf.info(raw_dir / record["voice_recording"])
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        assert info.frames / 16000 == pytest.approx(seconds[record_key(record)], rel=0.01)
        assert record["audio_seconds"] == pytest.approx(seconds[record_key(record)], rel=0.01)
    assert len(list((raw_dir / "audio").rglob("*"))) == len(kept)  # none for quarantined lines


def test_splits_honour_the_record_and_keep_an_image_in_one_split(ingested):
    _, _, kept, _ = ingested
    assert kept_by_image(kept, "gray")["split"] == "test_compositional"  # never drawn by the hash
    assert kept_by_image(kept, "rgba")["split"] in ("train", "val", "test")  # "bogus" is replaced
    assert len({r["split"] for r in kept if r["image_id"] == "rgb"}) == 1


def test_hashed_splits_follow_the_configured_fractions():
    splits = [ln.assign_split({"image_id": f"img{i}"}, 0.1, 0.2) for i in range(3000)]
    assert splits == [ln.assign_split({"image_id": f"img{i}"}, 0.1, 0.2) for i in range(3000)]
    assert splits.count("val") / 3000 == pytest.approx(0.1, abs=0.03)
    assert splits.count("test") / 3000 == pytest.approx(0.2, abs=0.03)


def test_nothing_outside_the_folders_is_read_and_one_process_gives_the_same_result(ingested, tmp_path, monkeypatch):
    folder, raw_dir, kept, quarantine = ingested
    opened = []
    for name in ("load_image", "load_audio"):
        original = getattr(ln, name)
        monkeypatch.setattr(ln, name, lambda path, *a, _f=original, **k: opened.append(Path(path)) or _f(path, *a, **k))
    again = ln.ingest_localized_narratives(ln_config(folder, workers=1), tmp_path / "raw")
    assert again == (kept, quarantine)
    assert opened and all(
        p.is_relative_to(folder.images_dir.resolve()) or p.is_relative_to(folder.audio_dir.resolve()) for p in opened
    )
    assert not any(p.is_relative_to(folder.outside) for p in opened)
    assert (folder.outside / "secret.jpg").is_file()  # the target existed: it was refused, not missing
    for record in kept:  # same bytes from the pool and from one process
        for name in (record["image"], record["voice_recording"]):
            assert (raw_dir / name).read_bytes() == (tmp_path / "raw" / name).read_bytes()


def test_output_names_are_safe_and_unique():
    names = ln.MediaNames()
    stems = [names.stem("audio", key) for key in [("d", "a_b", "1"), ("d", "a", "b_1"), ("d", "../x", "1")]]
    assert len(set(stems)) == 3 and stems[0] == "d_a_b_1"
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", stem) for stem in stems)
    assert names.stem("audio", ("d", "a_b", "1")) == stems[0]  # stable for a key
    assert names.stem("image", ("d_a_b_1",)) == "d_a_b_1"  # images and audio do not compete


def test_a_key_whose_first_line_fails_keeps_its_next_good_line(tmp_path):
    folder = build_ln_folder(tmp_path)
    lines = [
        json.dumps(ln_record("gray", 5, "garbage.ogg")),
        json.dumps(ln_record("gray", 5, "cd.flac")),
        json.dumps(ln_record("gray", 5, "mono8k.wav")),
    ]
    folder.annotations.write_text("\n".join(lines) + "\n")
    kept, quarantine = ln.ingest_localized_narratives(ln_config(folder, workers=1), tmp_path / "raw")
    assert [r["source_voice_recording"] for r in kept] == ["cd.flac"]
    assert [(q["line"], q["reason"].split(":")[0]) for q in quarantine] == [
        (1, "corrupt audio"),
        (3, "duplicate of line 2 (same dataset_id, image_id, annotator_id)"),
    ]


@pytest.mark.parametrize("missing", ["annotations", "images_dir", "audio_dir"])
@pytest.mark.parametrize("how", ["unset", "absent"])
def test_missing_config_is_a_clear_error(tmp_path, missing, how):
    folder = LNFolder(tmp_path, tmp_path / "ln.jsonl", tmp_path / "images", tmp_path / "audio", tmp_path / "outside")
    folder.images_dir.mkdir(), folder.audio_dir.mkdir(), folder.annotations.write_text("")
    cfg = ln_config(folder, **{missing: None if how == "unset" else str(tmp_path / "nowhere")})
    with pytest.raises(ValueError, match=f"ingest.{missing}"):
        ln.ingest_localized_narratives(cfg, tmp_path / "raw")


def test_header_is_checked_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(3000, 3000))
    with pytest.raises(MediaError, match="decompression bomb"):
        load_image(bomb, max_pixels=1_000_000)
    with pytest.raises(MediaError, match="truncated"):  # within the limit it decodes and finds no data
        load_image(bomb, max_pixels=10_000_000)


def test_unparsed_lines_are_quarantined_as_truncated_raw_text():
    with pytest.raises(ln.Rejected) as rejected:
        ln.parse_record("{" + "x" * 5000)
    entry = ln.quarantine_entry(7, rejected.value.reason, rejected.value.record)
    assert entry["line"] == 7 and entry["reason"].startswith("malformed JSON")
    assert entry["record"] == ("{" + "x" * 5000)[:2000]


def test_cli_ingest_of_the_mixed_file_exits_0_and_says_kept_and_quarantined(tmp_path):
    """The issue's must-show, as a user runs it: `opt ingest data.source=localized_narratives ...`."""
    import subprocess
    import sys

    folder = build_ln_folder(tmp_path / "ln")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "opt.cli",
            "ingest",
            "data.source=localized_narratives",
            f"ingest.annotations={folder.annotations}",
            f"ingest.images_dir={folder.images_dir}",
            f"ingest.audio_dir={folder.audio_dir}",
            f"paths.root={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"kept {len(folder.good)}, quarantined {len(folder.bad)}" in out.stdout
    raw = tmp_path / "run" / "data" / "raw"
    quarantined = [json.loads(line) for line in (raw / "quarantine.jsonl").read_text().splitlines()]
    assert sorted(q["line"] for q in quarantined) == sorted(line for line, _ in folder.bad.values())
    assert all(q["reason"] for q in quarantined)
