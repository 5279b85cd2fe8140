"""Untrusted request inputs -> model-ready tensors, or `BadInput` with a clear reason (a 4xx).

Images: any Pillow-readable file (PNG, JPEG, any mode); the header's pixel count is checked
before decoding (decompression bombs), then RGB, squashed to the model's square as `opt prepare`
does -> (3,S,S) float in [0,1]. Audio: WAV, OGG, FLAC at any rate and channel count; the
header's duration is checked before decoding, then mono at the model's rate (scipy
resample_poly) -> normalised log-mel (M,F) with the train statistics. Text: a non-empty str
under the configured length. Decoding reuses `opt.data.media` and `opt.data.mel`.
`BodySizeLimit` refuses oversized request bodies (413) before they are read.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from http import HTTPStatus
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

from opt.config import ServeLimits
from opt.data import mel as melspec
from opt.data.media import MediaError, load_audio, load_image
from opt.data.splits import mel_normalisation

MODALITIES = ("text", "image", "audio")


class BadInput(ValueError):
    """A request the service refuses; `status` is the HTTP status (4xx)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.status = status


def validation_reason(error) -> str:
    """A pydantic ValidationError (an API's input model refusing a request) as one line, field by field."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in error.errors())


def limits_from_config(limits) -> ServeLimits:
    """`serve.limits` of a config (a DictConfig node, or anything with its attributes) as a plain `ServeLimits`."""
    return ServeLimits(**{f.name: getattr(limits, f.name) for f in fields(ServeLimits)})


def file_reason(error: Exception, file: Path) -> str:
    """A decoder's message without the server's path of the upload."""
    return str(error).replace(str(file), "<upload>")


def check_file(file: Path | None, what: str, limits: ServeLimits) -> Path:
    """An uploaded file that exists, is not empty and is under max_upload_bytes."""
    if file is None:
        raise BadInput(f"missing {what} file")
    size = Path(file).stat().st_size
    if size == 0:
        raise BadInput(f"empty {what} file")
    if size > limits.max_upload_bytes:
        raise BadInput(
            f"{what} file of {size} bytes exceeds max_upload_bytes={limits.max_upload_bytes}",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    return Path(file)


def decode_image(file: Path | None, size: int, limits: ServeLimits) -> torch.Tensor:
    """Image file -> (3,size,size) float32 in [0,1]."""
    file = check_file(file, "image", limits)
    try:
        image = load_image(file, max_pixels=limits.max_image_pixels)
    except MediaError as e:
        raise BadInput(f"bad image: {file_reason(e, file)}") from e
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()).float().div_(255.0)


def check_text(text, what: str, limits: ServeLimits) -> str:
    """A non-empty str of at most max_text_chars characters (stripped)."""
    if not isinstance(text, str):
        raise BadInput(f"{what} must be a string, got {type(text).__name__}")
    text = text.strip()
    if not text:
        raise BadInput(f"empty {what}")
    if len(text) > limits.max_text_chars:
        raise BadInput(f"{what} of {len(text)} characters exceeds max_text_chars={limits.max_text_chars}")
    if "\x00" in text:
        raise BadInput(f"{what} holds a NUL character")
    return text


def check_top_k(k: int, limits: ServeLimits) -> int:
    if not 1 <= int(k) <= limits.max_top_k:
        raise BadInput(f"k={k} must be between 1 and max_top_k={limits.max_top_k}")
    return int(k)


class AudioFeatures:
    """Audio files -> normalised log-mel (M,F), with the packaged model's prepare settings."""

    def __init__(self, params: dict, limits: ServeLimits):
        self.settings = melspec.settings_from_params(params)
        self.max_audio_seconds = float(params["prepare"]["max_audio_seconds"])  # the model's crop
        self.mean, self.std = mel_normalisation(params)  # (M,1) each
        self.limits = limits

    def check_duration(self, file: Path) -> None:
        """Read the header only: refuse unreadable files and recordings over max_audio_seconds."""
        try:
            info = sf.info(str(file))
        except Exception as e:  # libsndfile refuses anything it cannot parse
            raise BadInput(f"bad audio: not a WAV, OGG or FLAC file soundfile can read ({file_reason(e, file)})") from e
        seconds = info.frames / info.samplerate if info.samplerate > 0 else math.inf
        if seconds > self.limits.max_audio_seconds:
            raise BadInput(f"audio of {seconds:.1f} s exceeds max_audio_seconds={self.limits.max_audio_seconds}")

    def __call__(self, file: Path | None) -> torch.Tensor:
        """Audio file -> (M,F) normalised log-mel of its first max_audio_seconds (the model's crop)."""
        file = check_file(file, "audio", self.limits)
        self.check_duration(file)
        try:
            wave = load_audio(file, int(self.settings.sample_rate))
        except MediaError as e:
            raise BadInput(f"bad audio: {file_reason(e, file)}") from e
        wave = wave[: int(round(self.max_audio_seconds * int(self.settings.sample_rate)))]
        mel = melspec.log_mel(torch.from_numpy(wave), self.settings)  # (M,F)
        return (mel - self.mean) / self.std


class BodySizeLimit:
    """ASGI middleware: 413 for an HTTP body over `max_bytes`, before the app reads it.

    A declared Content-Length is checked at once; a chunked body is buffered up to the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                return await self.refuse(send, declared.decode("latin-1"))
            return await self.app(scope, receive, send)
        if headers.get(b"transfer-encoding", b"").lower() != b"chunked":
            return await self.app(scope, receive, send)
        return await self.buffered(scope, receive, send)

    async def buffered(self, scope, receive, send):
        messages, total = [], 0
        while True:
            message = await receive()
            messages.append(message)
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return await self.refuse(send, f"over {total}")
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)

    async def refuse(self, send, size: str) -> None:
        body = json.dumps({"error": f"request body of {size} bytes exceeds max_upload_bytes={self.max_bytes}"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def query_kind(text, audio, image) -> str:
    """Which query a request holds: "text", "audio", "image" or "text_audio" (text with audio)."""
    given = [name for name, value in (("text", text), ("audio", audio), ("image", image)) if value is not None]
    if given == ["text", "audio"]:
        return "text_audio"
    if len(given) != 1:
        raise BadInput(
            "give exactly one of text, audio or image (or text with audio); got " + (", ".join(given) or "none")
        )
    return given[0]


def decode(kind: str, value, image_size: int, audio: AudioFeatures, limits: ServeLimits):
    """One request input of `kind` -> str (text) or float32 array: image (3,S,S), audio log-mel (M,F)."""
    if kind == "text":
        return check_text(value, "text", limits)
    if kind == "image":
        return decode_image(value, image_size, limits).numpy()
    if kind == "audio":
        return audio(value).numpy()
    raise BadInput(f"unknown input kind {kind!r}")
