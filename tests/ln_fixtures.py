"""Test-data factory: a small Localized Narratives folder mixing good media of many formats
with one line of every bad kind ingestion must quarantine."""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

DATASET = "ln_test"
RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


@dataclass
class Good:
    line: int
    key: tuple
    seconds: float  # duration of the source audio
    caption: str


@dataclass
class LNFolder:
    """Paths of the fake dataset and what ingestion should make of each line."""

    root: Path
    annotations: Path
    images_dir: Path
    audio_dir: Path
    outside: Path  # files here exist but must never be read
    good: list[Good] = field(default_factory=list)
    bad: dict[str, tuple[int, str]] = field(default_factory=dict)  # kind -> (line, reason keyword)
    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> int:
        self.lines.append(text)
        return len(self.lines)

    def add_good(self, image_id: str, annotator: int, voice: str, seconds: float, **extra) -> dict:
        record = ln_record(image_id, annotator, voice, caption=f"In this image we can see {image_id} {annotator}.")
        record.update(extra)
        line = self.add(json.dumps(record))
        self.good.append(Good(line, (DATASET, image_id, str(annotator)), seconds, record["caption"]))
        return record

    def add_bad(self, kind: str, keyword: str, record=None, text: str | None = None) -> None:
        self.bad[kind] = (self.add(text if text is not None else json.dumps(record)), keyword)

    def write(self) -> None:
        text = "\n".join(self.lines).encode("utf-8", errors="surrogateescape")
        self.annotations.write_bytes(b"\xef\xbb\xbf" + text + b"\n")  # a byte-order mark, as some editors write


def ln_record(image_id: str, annotator, voice: str, caption: str = "In this image we can see a dog.") -> dict:
    """A Localized Narratives record as the real files spell it."""
    return {
        "dataset_id": DATASET,
        "image_id": image_id,
        "annotator_id": annotator,
        "caption": caption,
        "timed_caption": [{"utterance": caption, "start_time": 0.0, "end_time": 1.0}],
        "traces": [[{"x": 0.5, "y": 0.5, "t": 0.1}]],
        "voice_recording": voice,
    }


def halves(size: tuple[int, int], left, right, mode: str = "RGB") -> Image.Image:
    """An image whose left half is `left` and right half is `right`."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def write_images(images: Path) -> None:
    """Good images: one per mode / format the ingestion must accept."""
    halves((24, 16), RED, BLUE).save(images / "rgb.jpg", quality=95)
    Image.new("L", (16, 16), 100).save(images / "gray.png")
    halves((16, 16), RED + (0,), RED + (255,), "RGBA").save(images / "rgba.png")
    palette = halves((16, 16), 0, 1, "P")
    palette.putpalette([*GREEN, *BLUE])
    palette.save(images / "palette.png", transparency=0)
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(images / "cmyk.jpeg", quality=95)
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    Image.fromarray(ramp).save(images / "deep.png")  # 16-bit grayscale (I;16)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    halves((40, 20), RED, BLUE).save(images / "rotated.JPG", exif=exif.tobytes(), quality=95)
    Image.new("RGB", (16, 16), GREEN).save(images / "green.webp", lossless=True)
    Image.new("RGB", (300, 120), BLUE).save(images / "big.png")
    Image.new("RGB", (12, 12), GREEN).save(images / "tiny.bmp")


def tone(seconds: float, rate: int, channels: int = 1, hz: float = 330.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    wave = (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_audio(audio: Path) -> dict[str, float]:
    """Good recordings in several formats, rates and channel counts; returns name -> seconds."""
    clips = {
        "stereo48k.ogg": (1.5, 48000, 2, "OGG", "VORBIS"),
        "mono8k.wav": (1.0, 8000, 1, "WAV", "PCM_16"),
        "cd.flac": (1.2, 44100, 1, "FLAC", "PCM_16"),
        "long_narration.ogg": (40.0, 8000, 1, "OGG", "VORBIS"),
        "sub/nested.wav": (0.8, 22050, 2, "WAV", "FLOAT"),
    }
    for name, (seconds, rate, channels, fmt, subtype) in clips.items():
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        write_in_blocks(audio / name, tone(seconds, rate, channels), rate, fmt, subtype)
    return {name: spec[0] for name, spec in clips.items()}


def write_in_blocks(path: Path, samples: np.ndarray, rate: int, fmt: str, subtype: str) -> None:
    """Write one second at a time: libvorbis overflows its stack on one long write (libsndfile #1095)."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with sf.SoundFile(path, "w", rate, channels, format=fmt, subtype=subtype) as f:
        for start in range(0, len(samples), rate):
            f.write(samples[start : start + rate])


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header promises width x height pixels but whose data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_bad_media(folder: LNFolder) -> None:
    """Broken images and recordings, plus valid files outside the folders reached by links."""
    images, audio, outside = folder.images_dir, folder.audio_dir, folder.outside
    jpeg = images / "rgb.jpg"
    (images / "truncated.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    (images / "garbage.png").write_bytes(b"this is not an image at all" * 10)
    (images / "bomb.png").write_bytes(png_header_only(7500, 7500))  # 56 Mpx > default 50 Mpx limit
    (images / "pillow_bomb.png").write_bytes(png_header_only(40000, 40000))  # over Pillow's own limit
    (audio / "garbage.ogg").write_bytes(b"OggS" + os.urandom(16) + b"not vorbis" * 40)
    sf.write(audio / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(audio / "nan.wav", np.array([0.1, np.nan, 0.2] * 200, np.float32), 16000, subtype="FLOAT")
    sf.write(audio / "inf.wav", np.array([0.1, np.inf, 0.2] * 200, np.float32), 16000, subtype="FLOAT")
    outside.mkdir()
    Image.new("RGB", (8, 8), RED).save(outside / "secret.jpg")
    write_in_blocks(outside / "secret.ogg", tone(1.0, 16000), 16000, "OGG", "VORBIS")
    (images / "linked.jpg").symlink_to(outside / "secret.jpg")
    (audio / "linked.ogg").symlink_to(outside / "secret.ogg")


def add_good_lines(folder: LNFolder, seconds: dict[str, float]) -> None:
    """One good line per image format, cycling the audio formats; two annotators of one image."""
    voices = list(seconds)
    images = ["rgb", "gray", "rgba", "palette", "cmyk", "deep", "rotated", "green", "big", "tiny"]
    for i, image_id in enumerate(images):
        voice = voices[i % len(voices)]
        extra = (
            {"split": "test_compositional"} if image_id == "gray" else {"split": "bogus"} if image_id == "rgba" else {}
        )
        folder.add_good(image_id, 0, voice, seconds[voice], **extra)
        if i == 2:
            folder.add("")  # blank lines are skipped, not quarantined
            folder.add("   \t ")
    folder.add_good("rgb", 1, "mono8k.wav", seconds["mono8k.wav"])  # second annotator of one image


def add_bad_lines(folder: LNFolder) -> None:
    """Exactly one line of every bad kind, each with the keyword its reason must name."""
    good = "mono8k.wav"
    folder.add_bad("malformed_json", "malformed json", text='{"dataset_id": "ln_test", "image_id": ')
    folder.add_bad("non_finite_json", "non-finite", text=json.dumps(ln_record("gray", 7, good))[:-1] + ', "x": NaN}')
    folder.add_bad("not_utf8", "utf-8", text='{"caption": "caf\udce9"}')
    folder.add_bad("not_object", "not a json object", text="[1, 2, 3]")
    folder.add_bad(
        "missing_field", "missing required", {k: v for k, v in ln_record("gray", 8, good).items() if k != "caption"}
    )
    folder.add_bad("wrong_type", "wrong type", {**ln_record("gray", 9, good), "caption": 42})
    folder.add_bad("empty_caption", "empty caption", ln_record("gray", 10, good, caption="  \n "))
    folder.add_bad("missing_image", "missing image", ln_record("no_such_image", 0, good))
    folder.add_bad("missing_audio", "missing audio", ln_record("gray", 11, "no_such_recording.ogg"))
    folder.add_bad("truncated_image", "truncated", ln_record("truncated", 0, good))
    folder.add_bad("corrupt_image", "corrupt image", ln_record("garbage", 0, good))
    folder.add_bad("corrupt_audio", "corrupt audio", ln_record("gray", 12, "garbage.ogg"))
    folder.add_bad("empty_audio", "empty audio", ln_record("gray", 13, "empty.wav"))
    folder.add_bad("nan_audio", "nan", ln_record("gray", 14, "nan.wav"))
    folder.add_bad("inf_audio", "inf", ln_record("gray", 15, "inf.wav"))
    folder.add_bad("bomb_image", "decompression bomb", ln_record("bomb", 0, good))
    folder.add_bad("pillow_bomb_image", "decompression bomb", ln_record("pillow_bomb", 0, good))
    folder.add_bad("absolute_image_id", "absolute", ln_record(str(folder.outside / "secret"), 0, good))
    folder.add_bad("dotdot_image_id", "'..'", ln_record("../outside/secret", 0, good))
    folder.add_bad("symlink_image", "outside", ln_record("linked", 0, good))
    folder.add_bad("absolute_voice", "absolute", ln_record("gray", 16, str(folder.outside / "secret.ogg")))
    folder.add_bad("dotdot_voice", "'..'", ln_record("gray", 17, "../outside/secret.ogg"))
    folder.add_bad("symlink_voice", "outside", ln_record("gray", 18, "linked.ogg"))
    first = folder.good[0]
    folder.add_bad("duplicate", "duplicate", {**ln_record(first.key[1], 0, good), "caption": "A later copy."})


def build_ln_folder(root: Path) -> LNFolder:
    """Write the whole fake dataset under `root` (the outside folder is root/outside)."""
    folder = LNFolder(root, root / "annotations.jsonl", root / "images", root / "audio", root / "outside")
    folder.images_dir.mkdir(parents=True)
    folder.audio_dir.mkdir()
    write_images(folder.images_dir)
    seconds = write_audio(folder.audio_dir)
    write_bad_media(folder)
    add_good_lines(folder, seconds)
    add_bad_lines(folder)
    folder.write()
    return folder
