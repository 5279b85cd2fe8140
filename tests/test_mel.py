"""Log-mel features against an independent numpy reference and physical expectations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from opt.data.mel import hz_to_mel, log_mel, max_frames, mel_filterbank, mel_to_hz

SR = 16000


def settings(**overrides) -> SimpleNamespace:
    base = dict(
        sample_rate=SR,
        n_fft=400,
        hop_length=160,
        n_mels=64,
        f_min=0.0,
        f_max=8000.0,
        mel_scale="htk",
        mel_norm="none",
        log_eps=1e-6,
        max_audio_seconds=12.0,
    )
    return SimpleNamespace(**{**base, **overrides})


def tone(freq: float, seconds: float = 0.5, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def reference_log_mel(wave: np.ndarray, s: SimpleNamespace) -> np.ndarray:
    """A direct numpy transcription of the definition: frames, periodic Hann, rfft, HTK triangles."""
    half = s.n_fft // 2
    padded = np.pad(wave.astype(np.float64), half, mode="reflect")
    n_frames = 1 + wave.size // s.hop_length
    window = np.hanning(s.n_fft + 1)[:-1]  # periodic Hann
    frames = np.stack([padded[i * s.hop_length : i * s.hop_length + s.n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (F, n_freqs)
    freqs = np.linspace(0, s.sample_rate / 2, s.n_fft // 2 + 1)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(s.f_min), mel(s.f_max), s.n_mels + 2) / 2595) - 1)
    bank = np.zeros((freqs.size, s.n_mels))
    for m in range(s.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        bank[:, m] = np.clip(np.minimum(rising, falling), 0, None)
    return np.log(power @ bank + s.log_eps).T  # (n_mels, F)


def test_log_mel_matches_numpy_reference():
    rng = np.random.default_rng(0)
    wave = (0.3 * rng.standard_normal(7_777) + tone(440, 7_777 / SR)).astype(np.float32)
    ours = log_mel(torch.from_numpy(wave), settings()).numpy()
    expected = reference_log_mel(wave, settings())
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, atol=2e-3, rtol=1e-4)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 2500.0, 6000.0])
def test_pure_tone_peaks_in_the_mel_bin_of_its_frequency(freq):
    s = settings()
    mel = log_mel(torch.from_numpy(tone(freq)), s)  # (n_mels, F)
    centres_hz = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + s.f_max / 700), s.n_mels + 2) / 2595) - 1)[1:-1]
    nearest = int(np.argmin(np.abs(centres_hz - freq)))
    peak = int(mel[:, 5:-5].mean(dim=1).argmax())
    assert abs(peak - nearest) <= 1, (peak, nearest)
    assert mel[peak, 5:-5].mean() > mel[:, 5:-5].mean() + 5.0  # the energy is concentrated there


@pytest.mark.parametrize("scale,norm", [("htk", "none"), ("slaney", "none"), ("slaney", "slaney")])
def test_filterbank_is_nonnegative_and_covers_the_range(scale, norm):
    n_freqs = 201
    fb = mel_filterbank(n_freqs, 0.0, 8000.0, 64, SR, scale, norm)
    assert fb.shape == (n_freqs, 64)
    assert (fb >= 0).all()
    assert (fb.sum(dim=0) > 0).all(), "every mel filter sees some frequency"
    assert (fb[1:-1].sum(dim=1) > 0).all(), "every frequency strictly inside (f_min, f_max) is covered"
    peaks = fb.argmax(dim=0)
    assert (peaks[1:] >= peaks[:-1]).all(), "filters are ordered by frequency"


def test_mel_scales_invert_and_slaney_is_linear_below_1khz():
    hz = torch.tensor([0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0], dtype=torch.float64)
    for scale in ("htk", "slaney"):
        torch.testing.assert_close(mel_to_hz(hz_to_mel(hz, scale), scale), hz)
    assert float(hz_to_mel(torch.tensor(1000.0), "slaney")) == pytest.approx(15.0)
    assert float(hz_to_mel(torch.tensor(500.0), "slaney")) == pytest.approx(7.5)
    assert float(hz_to_mel(torch.tensor(1000.0), "htk")) == pytest.approx(2595 * math.log10(1 + 1000 / 700))


@pytest.mark.parametrize("n_samples", [50, 200, 1600, 16_001])
def test_shape_is_n_mels_by_one_plus_samples_over_hop(n_samples):
    s = settings()
    wave = torch.randn(n_samples) * 0.1
    assert log_mel(wave, s).shape == (s.n_mels, 1 + n_samples // s.hop_length)


def test_batched_equals_one_by_one():
    s = settings(n_mels=40)
    waves = torch.randn(3, 4000) * 0.1
    batched = log_mel(waves, s)  # (3, 40, F)
    assert batched.shape == (3, 40, 1 + 4000 // 160)
    for i in range(3):
        torch.testing.assert_close(batched[i], log_mel(waves[i], s))


def test_silence_sits_at_the_log_eps_floor_and_max_frames_follow_config():
    s = settings(max_audio_seconds=2.5)
    silent = log_mel(torch.zeros(3200), s)
    torch.testing.assert_close(silent, torch.full_like(silent, math.log(s.log_eps)))
    assert max_frames(s) == 1 + int(2.5 * SR) // 160
