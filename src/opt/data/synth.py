"""The built-in narrated scenes: `generate_synth(cfg, raw_dir) -> records`.

Scene i is drawn by its own generator `np.random.default_rng([seed, i])` (scene, caption,
voice, noise, in that order) under the dataset plan (splits, held-out pairs). Scenes go to
worker processes in fixed blocks of `SCENES_PER_ENGINE` consecutive indices; each block starts
from a freshly reloaded eSpeak engine (`opt.data.tts.reset`), so files and records are
byte-identical whatever the number of workers.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from math import gcd
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm import tqdm
from tqdm._monitor import TMonitor

from opt.data import tts
from opt.data.grammar import describe
from opt.data.media import SAMPLE_RATE, save_png
from opt.data.render import render_scene, stamp_catalogue
from opt.data.scenes import SHAPES, PairPlan, ScenePlan, plan_dataset, sample_scene

DATASET_ID = "opt_synth"
NOISE_KINDS = ("white", "pink", "brown")
SPEECH_GAIN = 0.5  # eSpeak speaks near full scale: leave headroom for the noise
MAX_PEAK = 0.98
RESAMPLING_HALF_TAPS = 10  # resample_poly's default filter length (taps a side per phase)
SCENES_PER_ENGINE = 16  # part of the data's definition: changing it changes the audio bytes
PINK_FILTER = ([0.049922035, -0.095993537, 0.050612699, -0.004408786], [1.0, -2.494956002, 2.017265875, -0.522189400])


@dataclass(frozen=True)
class WorkerContext:
    """Everything a worker needs besides the scene's plan (picklable)."""

    data: SimpleNamespace  # cfg.data as plain values
    pairs: PairPlan
    raw_dir: Path
    stamps: dict


_context: WorkerContext | None = None


def _set_context(context: WorkerContext) -> None:
    global _context
    _context = context


def image_id(index: int) -> str:
    return f"synth_{index:06d}"


def background_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Unit-RMS noise (n,): white, pink (1/f power, IIR approximation) or brown (1/f^2)."""
    from scipy.signal import lfilter

    noise = rng.standard_normal(n, dtype=np.float32)
    if kind == "pink":
        noise = lfilter(*PINK_FILTER, noise)
    elif kind == "brown":
        noise = lfilter([1.0], [1.0, -0.995], noise)
        noise -= noise.mean()
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


@lru_cache(maxsize=4)
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The Kaiser low-pass FIR that `scipy.signal.resample_poly` (and `media.resample`) design
    for up/down on every call (~2 ms for 22050 -> 16000 Hz), designed once per process."""
    from scipy.signal import firwin

    max_rate = max(up, down)
    return firwin(2 * RESAMPLING_HALF_TAPS * max_rate + 1, 1.0 / max_rate, window=("kaiser", 5.0)).astype(np.float32)


def to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """int16 samples (T,) at `rate` -> float32 (T',) at 16 kHz."""
    from scipy.signal import resample_poly

    up, down = _up_down(rate)
    audio = samples.astype(np.float32) / 32768.0
    return resample_poly(audio, up, down, window=_resampling_filter(up, down)).astype(np.float32)


def _up_down(rate: int) -> tuple[int, int]:
    """Resampling factors from `rate` to 16 kHz: 22050 -> (320, 441)."""
    g = gcd(rate, SAMPLE_RATE)
    return SAMPLE_RATE // g, rate // g


def write_flac(audio: np.ndarray, path: Path) -> None:
    """Float audio (T,) in [-1, 1] as 16-bit 16 kHz mono FLAC, fastest compression level.

    Same format as `media.save_flac`; level 0, encoded in memory, is ~2x faster for ~0.5%
    more bytes.
    """
    import soundfile as sf

    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16", compression_level=0.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())


def add_noise(speech: np.ndarray, rng: np.random.Generator, data) -> tuple[np.ndarray, float | None]:
    """With probability `noise_probability`, mix in background noise at a random SNR (dB)."""
    if rng.random() >= data.noise_probability:
        return speech, None
    lo, hi = data.snr_db_range
    snr_db = round(float(rng.uniform(lo, hi)), 2)
    kind = NOISE_KINDS[rng.integers(len(NOISE_KINDS))]
    noise = background_noise(rng, speech.size, kind)
    speech_rms = float(np.sqrt(np.mean(speech.astype(np.float64) ** 2)))
    mixed = speech + noise * speech_rms * 10.0 ** (-snr_db / 20.0)
    return mixed.astype(np.float32), snr_db


def choose_voice(rng: np.random.Generator, data) -> dict:
    return {
        "name": str(data.voices[rng.integers(len(data.voices))]),
        "rate": int(rng.integers(data.rate_range[0], data.rate_range[1] + 1)),
        "pitch": int(rng.integers(data.pitch_range[0], data.pitch_range[1] + 1)),
    }


def narrate(caption: str, voice: dict, rng: np.random.Generator, data) -> tuple[np.ndarray, list, float | None]:
    """Speak a caption: 16 kHz float audio (T,), timed words and the SNR of added noise."""
    seed = int(rng.integers(2**31))
    utterance = tts.speak(caption, voice["name"], voice["rate"], voice["pitch"], seed=seed, fresh=False)
    audio = SPEECH_GAIN * to_16k(utterance.samples, utterance.sample_rate)
    audio, snr_db = add_noise(audio, rng, data)
    audio = audio / max(1.0, float(np.abs(audio).max()) / MAX_PEAK)  # never clip
    timed = tts.word_timings(utterance, caption, duration=round(audio.size / SAMPLE_RATE, 3))
    return audio, timed, snr_db


def make_scene(plan: ScenePlan) -> dict:
    """Draw, render and narrate scene `plan.index`; write its PNG and FLAC; return its record."""
    ctx, data = _context, _context.data
    rng = np.random.default_rng([int(data.seed), plan.index])
    scene = sample_scene(rng, plan, ctx.pairs, int(data.image_size), int(data.max_objects))
    caption = describe(scene, rng)
    voice = choose_voice(rng, data)
    name = image_id(plan.index)
    save_png(render_scene(scene, int(data.image_size), ctx.stamps), ctx.raw_dir / "images" / f"{name}.png")
    audio, timed, snr_db = narrate(caption, voice, rng, data)
    write_flac(audio, ctx.raw_dir / "audio" / f"{name}_0.flac")
    return {
        "dataset_id": DATASET_ID,
        "image_id": name,
        "annotator_id": 0,
        "caption": caption,
        "timed_caption": timed,
        "traces": [],
        "voice_recording": f"audio/{name}_0.flac",
        "image": f"images/{name}.png",
        "split": scene.split,
        "audio_seconds": round(audio.size / SAMPLE_RATE, 3),
        "objects": [obj.to_record() for obj in scene.objects],
        "relations": [{"subject": s, "relation": r, "object": o} for s, r, o in scene.relations],
        "voice": {**voice, "snr_db": snr_db},
    }


def make_block(plans: list[ScenePlan]) -> list[dict]:
    """Make consecutive scenes on a freshly reset engine; their records in order."""
    tts.reset(_context.data.voices)
    return [make_scene(plan) for plan in plans]


def worker_count(data, n_blocks: int) -> int:
    """`data.workers`, 0 meaning every core this process may run on; at most one per block."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(int(data.workers) or cores or 1, n_blocks))


class _Bar(tqdm):
    monitor_interval = 0  # no monitor thread, so a later run may still fork


def _other_python_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t is not threading.main_thread() and not isinstance(t, TMonitor)]


def _pool_context() -> multiprocessing.context.BaseContext:
    """fork while no other Python thread runs (fast; native BLAS threads are harmless),
    otherwise forkserver or spawn, which re-import the caller's main module (guard it)."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and not _other_python_threads():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _run_blocks(blocks: list[list[ScenePlan]], workers: int, context: WorkerContext) -> Iterator[list[dict]]:
    """Records of each block, in order: in this process, or over a pool of `workers` processes.

    A pool whose workers cannot start raises BrokenProcessPool (never hangs).
    """
    _set_context(context)
    if workers == 1:
        yield from map(make_block, blocks)
        return
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork beside native threads
        warnings.filterwarnings("ignore", message=".*multi-threaded.*fork", category=DeprecationWarning)
        pool = ProcessPoolExecutor(workers, _pool_context(), initializer=_set_context, initargs=(context,))
        try:
            yield from pool.map(make_block, blocks)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _plain(data_cfg) -> SimpleNamespace:
    """cfg.data as plain picklable values."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(data_cfg):
        return SimpleNamespace(**OmegaConf.to_container(data_cfg, resolve=True))
    return SimpleNamespace(**vars(data_cfg))


def synth_block(context: WorkerContext, plans: list[ScenePlan]) -> list[dict]:
    """One block anywhere (another process or node sharing `context.raw_dir`): its records."""
    _set_context(context)
    return make_block(plans)


def generate_synth(cfg, raw_dir: Path) -> list[dict]:
    """Generate `cfg.data.n` narrated scenes under `raw_dir` (images/, audio/); records in index order.

    Blocks run in a local process pool, or with `data.executor=prefect` as Prefect tasks on
    `data.task_runner` (same bytes either way: each block resets its engine).
    """
    data = _plain(cfg.data)
    stamps = stamp_catalogue(data)
    plan = plan_dataset(data, SHAPES + tuple(stamps))
    context = WorkerContext(data, plan.pairs, Path(raw_dir), stamps)
    blocks = [plan.scenes[i : i + SCENES_PER_ENGINE] for i in range(0, len(plan.scenes), SCENES_PER_ENGINE)]
    workers = worker_count(data, len(blocks))
    tts_rate = tts.reset(data.voices)  # unknown voices fail here; forked workers inherit the warm
    _resampling_filter(*_up_down(tts_rate))  # engine, scipy.signal and the designed filter
    records: list[dict] = []
    with _Bar(total=len(plan.scenes), desc=f"synth scenes ({workers} workers)", unit="scene", mininterval=0.5) as bar:
        if data.executor == "prefect":
            from opt.data.fanout import map_blocks_with_prefect

            results = map_blocks_with_prefect(blocks, workers, context, data.task_runner)
        elif data.executor == "processes":
            results = _run_blocks(blocks, workers, context)
        else:
            raise ValueError(f"data.executor must be processes or prefect, got {data.executor!r}")
        for block_records in results:
            records.extend(block_records)
            bar.update(len(block_records))
    return records
