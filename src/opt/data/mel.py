"""Log-mel spectrograms: the one implementation used by `prepare` and by serving.

Definition (the parameters come from `PrepareConfig`, and are versioned in params.json):
a periodic Hann window of `n_fft` samples, hop `hop_length`, centred frames (reflect padding,
as torchaudio's `Spectrogram`), power spectrogram |STFT|^2, a triangular mel filterbank
(HTK or Slaney mel scale, as torchaudio's `melscale_fbanks`), then ln(mel + log_eps).
A wave of T samples gives 1 + T // hop_length frames.
"""

from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

import torch

MEL_KEYS = ("sample_rate", "n_fft", "hop_length", "n_mels", "f_min", "f_max", "mel_scale", "mel_norm", "log_eps")


def hz_to_mel(freq: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Hertz -> mel on the HTK scale or Slaney's (linear below 1 kHz, logarithmic above)."""
    if scale == "htk":
        return 2595.0 * torch.log10(1.0 + freq / 700.0)
    if scale != "slaney":
        raise ValueError(f"unknown mel scale {scale!r}: use 'htk' or 'slaney'")
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    linear = freq / f_sp
    log_part = min_log_mel + torch.log(torch.clamp(freq, min=min_log_hz) / min_log_hz) / logstep
    return torch.where(freq >= min_log_hz, log_part, linear)


def mel_to_hz(mels: torch.Tensor, scale: str = "htk") -> torch.Tensor:
    """Inverse of `hz_to_mel`."""
    if scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    if scale != "slaney":
        raise ValueError(f"unknown mel scale {scale!r}: use 'htk' or 'slaney'")
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, math.log(6.4) / 27.0
    return torch.where(mels >= min_log_mel, min_log_hz * torch.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@lru_cache(maxsize=16)
def mel_filterbank(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int, scale: str = "htk", norm: str = "none"
) -> torch.Tensor:
    """Triangular filters (n_freqs, n_mels), float32, as torchaudio's `melscale_fbanks`.

    Filter m rises from mel point m to m+1 and falls to m+2; the n_mels + 2 points are evenly
    spaced in mel between f_min and f_max. norm="slaney" scales each triangle to unit area.
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs, dtype=torch.float64)  # (n_freqs,)
    m_pts = torch.linspace(
        float(hz_to_mel(torch.tensor(float(f_min)), scale)),
        float(hz_to_mel(torch.tensor(float(f_max)), scale)),
        n_mels + 2,
        dtype=torch.float64,
    )
    f_pts = mel_to_hz(m_pts, scale)  # (n_mels + 2,)
    f_diff = f_pts[1:] - f_pts[:-1]  # (n_mels + 1,)
    slopes = f_pts[None, :] - all_freqs[:, None]  # (n_freqs, n_mels + 2)
    down = -slopes[:, :-2] / f_diff[:-1]  # rising edge, (n_freqs, n_mels)
    up = slopes[:, 2:] / f_diff[1:]  # falling edge, (n_freqs, n_mels)
    fb = torch.clamp(torch.minimum(down, up), min=0.0)
    if norm == "slaney":
        fb = fb * (2.0 / (f_pts[2 : n_mels + 2] - f_pts[:n_mels]))[None, :]
    elif norm != "none":
        raise ValueError(f"unknown mel norm {norm!r}: use 'none' or 'slaney'")
    return fb.to(torch.float32)


@lru_cache(maxsize=16)
def _hann(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft, periodic=True)


def num_frames(n_samples: int, hop_length: int) -> int:
    """Frames of a centred STFT over `n_samples` samples."""
    return 1 + int(n_samples) // int(hop_length)


def max_samples(prep) -> int:
    """Samples kept of each recording: `max_audio_seconds` at `sample_rate`."""
    return int(round(float(prep.max_audio_seconds) * int(prep.sample_rate)))


def max_frames(prep) -> int:
    """Frames of the longest kept recording."""
    return num_frames(max_samples(prep), prep.hop_length)


def mel_settings(prep) -> dict:
    """The parameters that define the features, for params.json."""
    return {key: getattr(prep, key) for key in MEL_KEYS}


def settings_from_params(params: dict) -> SimpleNamespace:
    """Rebuild the mel settings from a prepared dataset's params.json (for serving)."""
    return SimpleNamespace(**{key: params["mel"][key] for key in MEL_KEYS})


def power_spectrogram(wave: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """|STFT|^2 with a periodic Hann window, centred frames: (B, T) -> (B, n_fft//2+1, frames)."""
    pad_mode = "reflect" if wave.shape[-1] > n_fft // 2 else "constant"  # reflect needs T > n_fft/2
    spec = torch.stft(
        wave,
        n_fft=n_fft,
        hop_length=hop_length,
        window=_hann(n_fft),
        center=True,
        pad_mode=pad_mode,
        return_complex=True,
    )
    return spec.real.square() + spec.imag.square()


def log_mel(wave: torch.Tensor, prep) -> torch.Tensor:
    """Waveform (T,) or (B, T) at `prep.sample_rate` -> log-mel (n_mels, F) or (B, n_mels, F).

    F = 1 + T // hop_length. `prep` is a PrepareConfig or anything with its mel attributes.
    """
    wave = torch.as_tensor(wave, dtype=torch.float32)
    batched = wave.dim() == 2
    wave = wave if batched else wave[None]  # (B, T)
    power = power_spectrogram(wave, int(prep.n_fft), int(prep.hop_length))  # (B, n_freqs, F)
    fb = mel_filterbank(
        power.shape[1],
        float(prep.f_min),
        float(prep.f_max),
        int(prep.n_mels),
        int(prep.sample_rate),
        str(prep.mel_scale),
        str(prep.mel_norm),
    )  # (n_freqs, n_mels)
    mel = torch.einsum("bft,fm->bmt", power, fb)  # (B, n_mels, F)
    out = torch.log(mel + float(prep.log_eps))
    return out if batched else out[0]


def pad_value(prep) -> float:
    """Value of frames past the end of a recording: the log-mel of silence, ln(log_eps)."""
    return math.log(float(prep.log_eps))
