"""`opt prepare`: tokenizer from train only, shards that read back equal, the Dataset, params, contact sheet."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from conftest import write_handmade_raw
from PIL import Image

from opt.cli import main as opt_main
from opt.config import load_config, path
from opt.data.contact_sheet import CELL_HEIGHT, CELL_WIDTH, IMAGE_SIDE, MARGIN, grid_shape, sheet_size
from opt.data.dataset import PreparedDataset, read_params
from opt.data.manifest import MANIFEST, SPLITS, read_manifest, write_jsonl
from opt.data.media import load_audio
from opt.data.mel import log_mel, pad_value
from opt.data.prepare import prepare
from opt.data.shards import SplitWriter, open_shard, read_index, read_records
from opt.data.text import CaptionTokenizer

TEST_ONLY_WORD = "xylophones"
LONG_SECONDS = 3.0
MAX_SECONDS = 2.0  # every handmade recording (1.0-1.75 s) fits; the long one does not


def write_raw_with_extras(raw_dir):
    """Handmade records, plus a test caption with a word never in train and one long recording."""
    records = write_handmade_raw(raw_dir, n=16)
    test = next(r for r in records if r["split"] == "test")
    test["caption"] = f"In this image we can see {TEST_ONLY_WORD} quietly jumping."
    long_record = next(r for r in records if r["split"] == "train")
    t = np.arange(int(LONG_SECONDS * 16000)) / 16000
    from opt.data.media import save_flac

    save_flac(0.3 * np.sin(2 * np.pi * 523.0 * t), raw_dir / long_record["voice_recording"])
    long_record["audio_seconds"] = LONG_SECONDS
    write_jsonl(raw_dir / MANIFEST, records)
    return records


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(cfg, records, summary) of one prepare run through the CLI entry point, 2 workers."""
    root = tmp_path_factory.mktemp("prep")
    records = write_raw_with_extras(root / "data" / "raw")
    overrides = [
        f"paths.root={root}",
        "prepare.vocab_size=200",
        "prepare.shard_size=3",
        f"prepare.max_audio_seconds={MAX_SECONDS}",
        "prepare.workers=2",
        "prepare.contact_sheet_items=6",
    ]
    assert opt_main(["prepare", *overrides]) == 0
    return load_config(overrides), records


def test_tokenizer_is_trained_on_train_captions_and_questions_only(prepared):
    cfg, records = prepared
    tokenizer = CaptionTokenizer.load(path(cfg, "prepared") / "tokenizer.json")
    vocab = tokenizer.tokenizer.get_vocab()
    assert not any(TEST_ONLY_WORD in token or "quietly" in token for token in vocab)
    assert all(f"\u2581{word}" in vocab for word in ("image", "square", "red", "blue", "green"))
    assert all(f"\u2581{word}" in vocab for word in ("what", "colour", "shape", "how", "many")) and "?" in vocab
    train_caption = next(r["caption"] for r in records if r["split"] == "train")
    ids, counts = tokenizer.encode([train_caption, f"a {TEST_ONLY_WORD}"])
    assert tokenizer.decode(ids[0]) == train_caption.lower()
    assert ids.shape == (2, cfg.prepare.max_text_tokens) and ids.dtype == np.int32
    assert ids[0, 0] == tokenizer.cls_id and ids[0, counts[0] - 1] == tokenizer.sep_id
    assert (ids[0, counts[0] :] == tokenizer.pad_id).all() and tokenizer.pad_id == 0
    assert tokenizer.decode(ids[1]) != f"a {TEST_ONLY_WORD}"  # not a whole token: pieces or [UNK]


def test_tokenizer_truncates_to_fixed_length_keeping_sep(prepared):
    cfg, _ = prepared
    tokenizer = CaptionTokenizer.load(path(cfg, "prepared") / "tokenizer.json")
    ids, counts = tokenizer.encode(["a red square " * 100])
    assert counts[0] == cfg.prepare.max_text_tokens and ids[0, -1] == tokenizer.sep_id


def test_shards_span_several_files_and_read_back_equal_to_the_inputs(prepared):
    cfg, records = prepared
    prepared_dir, raw_dir = path(cfg, "prepared"), path(cfg, "raw")
    for split in SPLITS:
        expected = [r for r in records if r["split"] == split]
        index = read_index(prepared_dir / split)
        assert index["count"] == len(expected)
        assert len(index["shards"]) == -(-len(expected) // cfg.prepare.shard_size)
        for stored, record in zip(read_records(prepared_dir / split), expected):
            arrays = open_shard(prepared_dir / split / stored["shard"])
            row = stored["row"]
            image = np.asarray(Image.open(raw_dir / record["image"]).convert("RGB")).transpose(2, 0, 1)
            np.testing.assert_array_equal(arrays["images"][row], image)
            wave = torch.from_numpy(load_audio(raw_dir / record["voice_recording"])[: int(MAX_SECONDS * 16000)])
            mel = log_mel(wave, cfg.prepare).numpy()
            frames = int(arrays["mel_frames"][row])
            assert frames == mel.shape[1]
            np.testing.assert_allclose(arrays["mel"][row, :, :frames].astype(np.float32), mel, atol=1e-2, rtol=2e-3)
            assert (arrays["mel"][row, :, frames:] == np.float16(pad_value(cfg.prepare))).all()
            assert stored["caption"] == record["caption"] and stored["objects"] == record["objects"]
    assert len(read_index(prepared_dir / "train")["shards"]) >= 3


def test_split_writer_round_trip_with_ragged_mel(tmp_path):
    rng = np.random.default_rng(1)
    items = [
        {
            "images": rng.integers(0, 256, (3, 8, 8), dtype=np.uint8),
            "mel": rng.standard_normal((4, int(w))).astype(np.float16),
            "mel_frames": np.int32(w),
            "tokens": rng.integers(0, 50, 6).astype(np.int32),
            "token_count": np.int32(6),
        }
        for w in (5, 9, 2, 7, 3)
    ]
    writer = SplitWriter(tmp_path / "train", pad_values={"mel": -7.0})
    for start in range(0, 5, 2):
        writer.write_shard(items[start : start + 2], [{"id": i} for i in range(start, min(start + 2, 5))])
    assert writer.close()["count"] == 5
    rows = [(s["name"], r) for s in read_index(tmp_path / "train")["shards"] for r in range(s["count"])]
    for item, (name, row) in zip(items, rows):
        arrays = open_shard(tmp_path / "train" / name)
        assert isinstance(arrays["mel"], np.memmap)
        np.testing.assert_array_equal(arrays["images"][row], item["images"])
        np.testing.assert_array_equal(arrays["mel"][row, :, : item["mel_frames"]], item["mel"])
        assert (arrays["mel"][row, :, item["mel_frames"] :] == -7.0).all()
        np.testing.assert_array_equal(arrays["tokens"][row], item["tokens"])
    assert [r["index"] for r in read_records(tmp_path / "train")] == list(range(5))


def test_dataset_items_have_the_documented_shapes_and_dtypes(prepared):
    cfg, records = prepared
    p = cfg.prepare
    dataset = PreparedDataset(path(cfg, "prepared"), "train")
    assert len(dataset) == sum(r["split"] == "train" for r in records)
    max_frames = 1 + int(MAX_SECONDS * p.sample_rate) // p.hop_length
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["image"].shape == (4, 3, p.image_size, p.image_size) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert batch["mel"].shape == (4, p.n_mels, max_frames) and batch["mel"].dtype == torch.float32
    assert batch["tokens"].shape == (4, p.max_text_tokens) and batch["tokens"].dtype == torch.int64
    for key in ("mel_frames", "token_count", "index"):
        assert batch[key].shape == (4,) and batch[key].dtype == torch.int64
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert (batch["tokens"] != 0).sum(dim=1).tolist() == batch["token_count"].tolist()
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_dataset_reads_memmaps_and_pickles_without_the_arrays(prepared):
    cfg, _ = prepared
    dataset = PreparedDataset(path(cfg, "prepared"), "train", max_frames=40)
    item = dataset[len(dataset) - 1]
    assert item["mel"].shape[1] == 40 and int(item["mel_frames"]) <= 40
    arrays = dataset.arrays(len(dataset.shard_names) - 1)
    assert all(isinstance(a, np.memmap) and a.mode == "r" for a in arrays.values())
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._open == {} and len(pickle.dumps(dataset)) < 10_000
    torch.testing.assert_close(clone[3], dataset[3])


def test_long_audio_is_truncated_not_rejected_and_frames_recorded(prepared):
    cfg, records = prepared
    long_id = next(r["image_id"] for r in records if r["audio_seconds"] == LONG_SECONDS)
    stored = next(r for r in read_records(path(cfg, "prepared") / "train") if r["image_id"] == long_id)
    assert stored["audio_truncated"] is True and stored["audio_seconds"] == pytest.approx(LONG_SECONDS)
    assert stored["mel_frames"] == 1 + int(MAX_SECONDS * 16000) // cfg.prepare.hop_length
    short = [r for r in read_records(path(cfg, "prepared") / "train") if r["image_id"] != long_id]
    assert all(
        not r["audio_truncated"] and r["mel_frames"] == 1 + int(r["audio_seconds"] * 16000) // 160 for r in short
    )
    assert read_params(path(cfg, "prepared"))["splits"]["train"]["truncated_audio"] == 1


def test_params_hold_every_preprocessing_parameter_and_the_counts(prepared):
    cfg, records = prepared
    params = read_params(path(cfg, "prepared"))
    for key, value in cfg.prepare.items():
        assert params["prepare"][key] == value, key
    assert params["mel"]["max_frames"] == 1 + int(MAX_SECONDS * 16000) // cfg.prepare.hop_length
    assert params["mel"]["n_mels"] == cfg.prepare.n_mels and params["image"]["size"] == cfg.prepare.image_size
    assert params["text"]["special_tokens"]["[PAD]"] == 0 and params["text"]["vocab_size"] <= cfg.prepare.vocab_size
    for split in SPLITS:
        assert params["splits"][split]["records"] == sum(r["split"] == split for r in records)
    assert len(params["mel_stats"]["mean"]) == cfg.prepare.n_mels and min(params["mel_stats"]["std"]) >= 0
    import hashlib

    manifest = (path(cfg, "raw") / MANIFEST).read_bytes()
    assert params["source"]["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()


def test_contact_sheet_shows_prepared_images_with_captions(prepared):
    cfg, _ = prepared
    sheet = Image.open(path(cfg, "prepared") / "contact_sheet.png").convert("RGB")
    n_items = cfg.prepare.contact_sheet_items
    assert (
        sheet.size == sheet_size(n_items) == (grid_shape(n_items)[0] * CELL_WIDTH, grid_shape(n_items)[1] * CELL_HEIGHT)
    )
    first = next(r for r in read_records(path(cfg, "prepared") / "train"))
    image = open_shard(path(cfg, "prepared") / "train" / first["shard"])["images"][first["row"]]
    scale = IMAGE_SIDE // image.shape[-1]
    left = (CELL_WIDTH - IMAGE_SIDE) // 2
    cell = np.asarray(sheet)[MARGIN : MARGIN + IMAGE_SIDE, left : left + IMAGE_SIDE]
    np.testing.assert_array_equal(cell[::scale, ::scale].transpose(2, 0, 1), image)
    text_band = np.asarray(sheet)[MARGIN + IMAGE_SIDE + MARGIN // 2 : CELL_HEIGHT, :CELL_WIDTH]
    assert (text_band.min(axis=2) < 100).sum() > 200, "caption text is drawn under the image"


def test_prepare_is_deterministic_and_worker_count_does_not_change_bytes(prepared, tmp_path):
    cfg, _ = prepared
    raw = path(cfg, "raw")
    write_raw_with_extras(tmp_path / "data" / "raw")
    assert read_manifest(raw) == read_manifest(tmp_path / "data" / "raw")
    again = load_config(
        [
            f"paths.root={tmp_path}",
            "prepare.vocab_size=200",
            "prepare.shard_size=3",
            f"prepare.max_audio_seconds={MAX_SECONDS}",
            "prepare.workers=1",
            "prepare.contact_sheet_items=6",
        ]
    )
    summary = prepare(again)
    assert summary["counts"]["train"] == read_index(path(again, "prepared") / "train")["count"]
    first, second = path(cfg, "prepared"), path(again, "prepared")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in files:
        if name.name != "params.json":
            assert (first / name).read_bytes() == (second / name).read_bytes(), name
    strip = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k != "prepare"}  # noqa: E731
    assert strip(first / "params.json") == strip(second / "params.json")


def test_prepare_refuses_a_dataset_without_train_records(handmade_raw):
    cfg, records = handmade_raw
    write_jsonl(path(cfg, "raw") / MANIFEST, [{**r, "split": "val"} for r in records])
    with pytest.raises(ValueError, match="no train records"):
        prepare(cfg)


def test_images_of_any_size_are_resized_to_a_square_rgb_chw(handmade_raw):
    cfg, records = handmade_raw
    left_red_right_blue = Image.new("RGB", (96, 48), (0, 0, 255))
    left_red_right_blue.paste((255, 0, 0), (0, 0, 48, 48))
    first_train = next(r for r in records if r["split"] == "train")
    left_red_right_blue.save(path(cfg, "raw") / first_train["image"])
    cfg.prepare.image_size, cfg.prepare.workers = 32, 1
    threads = torch.get_num_threads()
    prepare(cfg)
    assert torch.get_num_threads() == threads, "inline decoding gives the caller its torch threads back"
    image = PreparedDataset(path(cfg, "prepared"), "train")[0]["image"]  # (3, 32, 32)
    assert image.shape == (3, 32, 32)
    left, right = image[:, :, :12].mean(dim=(1, 2)), image[:, :, -12:].mean(dim=(1, 2))
    torch.testing.assert_close(left, torch.tensor([1.0, 0.0, 0.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(right, torch.tensor([0.0, 0.0, 1.0]), atol=0.02, rtol=0)
