"""The narrated-scene generator end to end: determinism, records, media, splits, eSpeak."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from opt.config import load_config
from opt.data import tts
from opt.data.manifest import LN_FIELDS, SPLITS
from opt.data.render import STAMP_NOUNS
from opt.data.synth import generate_synth

N = 40  # three engine blocks, so two workers share the work
STAMPS = Path(load_config([]).data.stamps_dir)


def synth(tmp_path: Path, name: str, *overrides: str) -> tuple[Path, list[dict]]:
    raw = tmp_path / name
    cfg = load_config([f"paths.root={tmp_path}", f"data.n={N}", "data.seed=11", *overrides])
    return raw, generate_synth(cfg, raw)


def file_bytes(raw: Path) -> dict[str, bytes]:
    return {str(p.relative_to(raw)): p.read_bytes() for p in sorted(raw.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """One dataset made with one worker: (raw folder, records)."""
    return synth(tmp_path_factory.mktemp("synth"), "raw", "data.workers=1")


def test_same_seed_gives_identical_bytes_whatever_the_workers(generated, tmp_path):
    raw, records = generated
    raw2, records2 = synth(tmp_path, "two_workers", "data.workers=2")
    assert records2 == records
    assert json.dumps(records2, sort_keys=True) == json.dumps(records, sort_keys=True)
    expected = file_bytes(raw)
    assert len(expected) == 2 * N
    assert file_bytes(raw2) == expected


def test_a_smaller_n_gives_the_same_first_scenes(generated, tmp_path):
    raw, records = generated
    raw2, records2 = synth(tmp_path, "prefix", "data.n=20", "data.workers=1")
    assert records2 == records[:20]
    assert file_bytes(raw2) == {k: v for k, v in file_bytes(raw).items() if int(k.split("_")[1][:6]) < 20}


def test_another_seed_gives_other_data(generated, tmp_path):
    raw, records = generated
    raw2, records2 = synth(tmp_path, "seed12", "data.seed=12", "data.n=16", "data.workers=1")
    assert [r["caption"] for r in records2] != [r["caption"] for r in records[:16]]
    assert (raw2 / records2[0]["voice_recording"]).read_bytes() != (raw / records[0]["voice_recording"]).read_bytes()


def test_records_follow_the_format(generated):
    raw, records = generated
    voices = set(load_config([]).data.voices)
    assert [r["image_id"] for r in records] == [f"synth_{i:06d}" for i in range(N)]
    for r in records:
        json.dumps(r, allow_nan=False)
        assert set(LN_FIELDS) <= set(r)
        assert r["dataset_id"] == "opt_synth" and r["annotator_id"] == 0 and r["traces"] == []
        assert r["voice_recording"] == f"audio/{r['image_id']}_0.flac" and r["image"] == f"images/{r['image_id']}.png"
        assert r["split"] in SPLITS
        assert 1 <= len(r["objects"]) <= 3
        for obj in r["objects"]:
            assert set(obj) == {"shape", "color", "size", "position", "bbox"}
        for rel in r["relations"]:
            assert rel["relation"] in ("left of", "right of", "above", "below")
            assert 0 <= rel["subject"] < len(r["objects"]) and 0 <= rel["object"] < len(r["objects"])
        voice = r["voice"]
        assert voice["name"] in voices
        assert 140 <= voice["rate"] <= 200 and 30 <= voice["pitch"] <= 70
        assert voice["snr_db"] is None or 10.0 <= voice["snr_db"] <= 30.0
    assert {r["voice"]["snr_db"] is None for r in records} == {True, False}
    assert len({r["voice"]["name"] for r in records}) >= 4


def test_images_are_rgb_pngs_of_the_configured_size(generated):
    raw, records = generated
    for r in records[:10]:
        with Image.open(raw / r["image"]) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64))
            pixels = np.asarray(im)
        x0, y0, x1, y1 = r["objects"][0]["bbox"]
        background = pixels[0:2, 0:2].reshape(-1, 3)
        inside = pixels[(y0 + y1) // 2, (x0 + x1) // 2]
        assert np.abs(inside.astype(int) - background[0]).sum() > 60  # the object is drawn there


def test_audio_is_16k_mono_flac_speech(generated):
    raw, records = generated
    for r in records:
        info = sf.info(raw / r["voice_recording"])
        assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)
        assert info.duration > 0.5
        assert abs(info.duration - r["audio_seconds"]) < 1e-3
    audio, _ = sf.read(raw / records[0]["voice_recording"])
    assert np.sqrt(np.mean(audio**2)) > 0.01 and np.abs(audio).max() < 1.0


def test_timed_caption_is_monotone_within_the_audio(generated):
    _, records = generated
    for r in records:
        timed = r["timed_caption"]
        starts = [w["start_time"] for w in timed]
        assert starts == sorted(starts) and starts[0] >= 0.0
        assert all(w["start_time"] <= w["end_time"] <= r["audio_seconds"] for w in timed)
        assert timed[-1]["end_time"] == pytest.approx(r["audio_seconds"], abs=1e-3)
        words = [w.strip(".,") for w in r["caption"].split()]
        assert [w["utterance"] for w in timed] == words


def test_splits_hold_out_colour_shape_pairs(tmp_path):
    _, records = synth(tmp_path, "splits", "data.n=60", "data.seed=5", "data.noise_probability=0")
    pairs: dict[str, set] = {}
    for r in records:
        pairs.setdefault(r["split"], set()).update((o["color"], o["shape"]) for o in r["objects"])
    assert set(pairs) == set(SPLITS)
    novel = pairs["test_compositional"] - pairs["train"]
    assert novel, "compositional scenes show no pair unseen in train"
    for r in records:
        if r["split"] == "test_compositional":
            assert {(o["color"], o["shape"]) for o in r["objects"]} & novel
    assert pairs["val"] | pairs["test"] <= pairs["train"]


def test_caption_names_every_object(generated):
    _, records = generated
    for r in records:
        for obj in r["objects"]:
            assert re.search(rf"\b{obj['color']} {obj['shape']}", r["caption"]), (obj, r["caption"])


@pytest.mark.skipif(not STAMPS.is_dir(), reason="tuxpaint-stamps-default is not installed")
def test_stamps_join_the_shapes_when_installed(tmp_path):
    raw, records = synth(tmp_path, "stamps", "data.use_stamps=true", "data.n=24", "data.workers=1")
    stamped = [(r, o) for r in records for o in r["objects"] if o["shape"] in STAMP_NOUNS]
    assert stamped, "no stamp object in 24 scenes"
    for record, obj in stamped:
        assert f"{obj['color']} {obj['shape']}" in record["caption"]  # also inside "two blue dogs"
        with Image.open(raw / record["image"]) as im:
            box = np.asarray(im.crop(tuple(obj["bbox"])), dtype=int)
        assert np.abs(box - box[0, 0]).sum(axis=2).max() > 60  # something is drawn in the box


def test_unknown_voice_raises_and_keeps_nothing_from_it(tmp_path):
    before = tts.speak("a red circle", "en-us", 170, 50, seed=1).samples
    with pytest.raises(tts.EspeakError, match="unknown eSpeak voice"):
        tts.speak("a red circle", "en-gb", 170, 50)
    with pytest.raises(tts.EspeakError):
        generate_synth(load_config(["data.n=2", "data.voices=[en-gb]", "data.workers=1"]), tmp_path)
    assert np.array_equal(tts.speak("a red circle", "en-us", 170, 50, seed=1).samples, before)


def test_fresh_speech_does_not_depend_on_what_was_said_before():
    first = tts.speak("In this image we can see a blue star.", "en-us+f3", 160, 60, seed=3)
    tts.speak("Something else entirely, said slowly.", "en-gb-scotland", 120, 20, seed=9)
    again = tts.speak("In this image we can see a blue star.", "en-us+f3", 160, 60, seed=3)
    assert np.array_equal(first.samples, again.samples) and first.word_starts == again.word_starts
    assert first.sample_rate == 22050 and [offset for offset, _ in first.word_starts][:3] == [0, 3, 8]
    slower = tts.speak("In this image we can see a blue star.", "en-us+f3", 120, 60, seed=3)
    assert slower.seconds > first.seconds * 1.15  # the rate is applied per utterance
