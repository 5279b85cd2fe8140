"""Canonical media: images as RGB PNG, audio as FLAC 16 kHz mono float in [-1, 1].

Reading untrusted files raises `MediaError` with a readable reason; callers quarantine.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageOps

SAMPLE_RATE = 16000


class MediaError(ValueError):
    """An input media file that cannot become canonical data (the message is the reason)."""


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=False, compress_level=6)


def save_flac(samples: np.ndarray, path: Path, sample_rate: int = SAMPLE_RATE) -> None:
    """Write mono float samples (T,) as 16-bit FLAC."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.clip(samples, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")


def load_image(path: Path, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """Open any Pillow-readable image as RGB (EXIF rotation applied, alpha on white).

    The header's pixel count is checked before any pixel is decoded. Raises MediaError for
    corrupt, truncated or oversized (decompression bomb) images.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                check_pixel_count(im.size, max_pixels)
                im.load()
                rgb = to_rgb(ImageOps.exif_transpose(im))
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError(f"decompression bomb: {e}") from e
    except Exception as e:  # any decoder failure on untrusted bytes is a bad file, not a crash
        kind = "truncated image" if "truncat" in str(e).lower() else "corrupt image"
        raise MediaError(f"{kind}: {type(e).__name__}: {e}") from e
    if max_side and max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return rgb


def check_pixel_count(size: tuple[int, int], max_pixels: int) -> None:
    """Reject a header that promises more than `max_pixels` pixels (or none)."""
    w, h = size
    if w * h > max_pixels:
        raise MediaError(f"decompression bomb: {w}x{h} pixels exceeds max_image_pixels={max_pixels}")
    if w <= 0 or h <= 0:
        raise MediaError(f"corrupt image: empty size {w}x{h}")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any mode (L, P, RGBA, CMYK, I;16, ...) to 8-bit RGB; transparency composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        im = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def load_audio(path: Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any soundfile-readable audio to mono float32 (T,) at `sample_rate`.

    Raises MediaError for corrupt, empty or non-finite audio.
    """
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile errors and anything odd on untrusted bytes
        raise MediaError(f"corrupt audio: {e}") from e
    if data.size == 0:  # libsndfile reports 0 frames for header-only and badly truncated OGG
        raise MediaError("empty audio: no samples decoded (empty, header-only or truncated file)")
    return canonical_audio(data, rate, sample_rate)


def load_audio_bytes(blob: bytes, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Like `load_audio` for in-memory bytes (uploads)."""
    return load_audio(io.BytesIO(blob), sample_rate)  # type: ignore[arg-type]


def canonical_audio(data: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(T, C) or (T,) samples at `rate` -> mono float32 (T',) at `sample_rate`."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if data.size == 0:
        raise MediaError("empty audio: no samples")
    if not np.all(np.isfinite(data)):
        raise MediaError("audio holds NaN or Inf samples")
    if rate != sample_rate:
        data = resample(data, rate, sample_rate)
    return data.astype(np.float32)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (scipy) from `rate` to `target` Hz."""
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(samples, target // g, rate // g).astype(np.float32)
