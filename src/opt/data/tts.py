"""eSpeak NG in-process (ctypes on the library shipped by `espeakng-loader`).

The engine runs in synchronous mode: `espeak_Synth` blocks and hands every chunk of 22050 Hz
int16 samples and its events (WORD events carry word start times) to our callback.

eSpeak keeps synthesis state in C statics (pitch flutter phase, gain control, echo buffer,
libc `rand()` for breath noise), so the same text spoken twice gives different samples.
`reset()` reloads the library (`dlclose` + `dlopen` of a private copy gives fresh statics,
~0.3-1.5 ms, plus ~2.5 ms the first time each non-default voice loads), so what a fresh
engine says is a pure function of (texts in order, voices, rates, pitches, seeds).
`speak(..., fresh=True)` resets before speaking; the generator resets once per fixed block
of scenes instead, which is as deterministic and cheaper. Voice names are resolved once per
process to voice-file identifiers ("en-us+f3" -> "gmw/en-US+f3"), which load without
scanning every voice file.
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_DONT_EXIT = 0x8000
POS_CHARACTER = 1
CHARS_UTF8 = 1
PARAM_RATE, PARAM_PITCH = 1, 3
EVENT_LIST_TERMINATED, EVENT_WORD = 0, 1
EE_OK = 0
BUFFER_MS = 1000  # samples reach the callback in chunks of this length


class EspeakError(RuntimeError):
    """eSpeak NG refused a call (unknown voice, failed initialisation, synthesis error)."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """`espeak_EVENT` from speak_lib.h."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    """The head of `espeak_VOICE` (the fields we read)."""

    _fields_ = [("name", ctypes.c_char_p), ("languages", ctypes.c_char_p), ("identifier", ctypes.c_char_p)]


_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Utterance:
    """Speech of one text: `samples` int16 (T,) at `sample_rate`; `word_starts` from WORD events
    as (0-based character offset of the word in the text, start seconds), in order."""

    samples: np.ndarray
    sample_rate: int
    word_starts: list[tuple[int, float]]

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


class _Engine:
    """The process's eSpeak NG library, reloadable, and the buffers its callback fills."""

    def __init__(self) -> None:
        import espeakng_loader

        self.library_path = _private_copy(espeakng_loader.get_library_path())
        self.data_path = espeakng_loader.get_data_path().encode()
        self.lib: ctypes.CDLL | None = None
        self.sample_rate = 0
        self.voice_ids: dict[str, bytes] = {}  # voice name -> voice-file identifier
        self._chunks: list[np.ndarray] = []
        self._word_events: list[tuple[int, int, int]] = []  # (text_position, length, audio ms)
        self._callback = _CALLBACK_TYPE(self._on_synth)  # referenced for the process's lifetime
        self._libc = _load_libc()
        self.load()

    def load(self) -> None:
        """(Re)load the library: a fresh copy of every C static, then initialise it."""
        if self.lib is not None:
            import _ctypes

            self.lib.espeak_Terminate()
            _ctypes.dlclose(self.lib._handle)
        self.lib = _declare_signatures(ctypes.CDLL(self.library_path))
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS, self.data_path, INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed ({rate}) with data at {self.data_path!r}")
        self.sample_rate = int(rate)
        self.lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, n_samples, events) -> int:
        if n_samples > 0 and wav:
            self._chunks.append(np.frombuffer(ctypes.string_at(wav, 2 * n_samples), dtype=np.int16))
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            event = events[i]
            if event.type == EVENT_WORD:
                self._word_events.append((event.text_position, event.length, event.audio_position))
            i += 1
        return 0  # 0: continue synthesis

    def voice_id(self, voice: str) -> bytes:
        """The voice-file identifier of a voice name; unknown names raise EspeakError."""
        if voice not in self.voice_ids:
            code = self.lib.espeak_SetVoiceByName(voice.encode())
            if code != EE_OK:
                raise EspeakError(f"unknown eSpeak voice {voice!r} (espeak_SetVoiceByName returned {code})")
            self.voice_ids[voice] = self.lib.espeak_GetCurrentVoice().contents.identifier
        return self.voice_ids[voice]

    def set_voice(self, voice: str, rate: int, pitch: int) -> None:
        """Select a voice and its rate (words/min) and pitch (0-100)."""
        code = self.lib.espeak_SetVoiceByName(self.voice_id(voice))
        if code != EE_OK:
            raise EspeakError(f"eSpeak voice {voice!r} failed to load (returned {code})")
        for param, value in ((PARAM_RATE, rate), (PARAM_PITCH, pitch)):
            code = self.lib.espeak_SetParameter(param, int(value), 0)
            if code != EE_OK:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) returned {code}")

    def seed(self, seed: int) -> None:
        """Seed eSpeak's own generator and libc `rand()` (breath noise uses both)."""
        if hasattr(self.lib, "espeak_ng_SetRandSeed"):
            self.lib.espeak_ng_SetRandSeed(seed)
        if self._libc is not None:
            self._libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))

    def synthesize(self, text: str) -> Utterance:
        """Speak `text` with the current voice; blocks until all samples are collected."""
        self._chunks, self._word_events = [], []
        data = text.encode("utf-8")
        code = self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
        if code != EE_OK:
            raise EspeakError(f"espeak_Synth returned {code}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        starts = [(position - 1, audio_ms / 1000.0) for position, _, audio_ms in self._word_events]
        return Utterance(samples, self.sample_rate, starts)


def _declare_signatures(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK_TYPE]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_GetCurrentVoice.restype = ctypes.POINTER(_Voice)
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint),
        ctypes.c_void_p,
    ]
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    return lib


def _private_copy(library: str) -> str:
    """A copy of the library that only this engine loads, so `dlclose` really unloads it
    even when other code in the process holds the original. Removed when the process
    exits (multiprocessing's finalizers also run in worker processes, unlike atexit)."""
    import shutil
    import tempfile
    from multiprocessing.util import Finalize

    folder = tempfile.mkdtemp(prefix="opt-espeak-")
    Finalize(None, shutil.rmtree, args=(folder, True), exitpriority=0)
    return shutil.copy(library, folder)


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None)
        libc.srand.argtypes = [ctypes.c_uint]
        return libc
    except (OSError, AttributeError):
        return None


_engine: _Engine | None = None
_lock = threading.RLock()


def _get_engine() -> _Engine:
    global _engine
    if _engine is None:
        _engine = _Engine()
    return _engine


def reset(voices: Sequence[str] = ()) -> int:
    """Give this process a fresh engine (every C static as after loading); its sample rate.

    `voices` are resolved (and validated) first: a block of `speak(..., fresh=False)` calls
    may only use voices resolved before its reset, as resolving changes the engine's state.
    """
    with _lock:
        engine = _get_engine()
        for voice in voices:
            engine.voice_id(voice)
        engine.load()
        return engine.sample_rate


def speak(
    text: str, voice: str = "en", rate: int = 175, pitch: int = 50, seed: int = 0, fresh: bool = True
) -> Utterance:
    """Speak `text` with a voice (e.g. "en-us+f3"), rate in words/min and pitch 0-100.

    With `fresh` the samples depend only on the arguments; without, also on what the
    process spoke since its last `reset()`.
    """
    with _lock:
        engine = _get_engine()
        if fresh:
            engine.voice_id(voice)  # resolve (and validate) before the reload
            engine.load()
        elif voice not in engine.voice_ids:
            raise EspeakError(f"voice {voice!r} was not resolved by the last reset(voices)")
        engine.seed(seed)
        engine.set_voice(voice, rate, pitch)
        return engine.synthesize(text)


def word_timings(utterance: Utterance, text: str, duration: float | None = None) -> list[dict]:
    """Localized Narratives `timed_caption`, one entry per word of `text`.

    A word starts at its WORD event; words eSpeak spoke as one ("of the") or without an event
    get a start interpolated by character offset. A word ends where the next begins, the last
    at `duration` (default: the utterance's length). Seconds, rounded to ms, monotone.
    Without any WORD event, one entry spans the whole text.
    """
    end = round(utterance.seconds if duration is None else duration, 3)
    tokens = [(m.start(), m.group().strip(",.;:!?")) for m in re.finditer(r"\S+", text)]
    tokens = [(offset, word) for offset, word in tokens if word]
    known = dict(utterance.word_starts)
    anchors = [(offset, known[offset]) for offset, _ in tokens if offset in known]
    if not anchors:
        return [{"utterance": text, "start_time": 0.0, "end_time": end}]
    offsets = [offset for offset, _ in tokens]
    starts = np.interp(offsets, [o for o, _ in anchors], [s for _, s in anchors])
    starts = np.minimum(np.maximum.accumulate(np.round(starts, 3)), end)
    ends = list(starts[1:]) + [end]
    return [
        {"utterance": word, "start_time": float(s), "end_time": float(e)}
        for (_, word), s, e in zip(tokens, starts, ends)
    ]
