"""Short-clip packing: several short files share one 30-second Whisper encoder pass.

Whisper pads every input to a 30 s window, so a 2 s clip costs the encoder as much as 30 s
of speech. Here short clips are laid end to end, separated by silence gaps, into windows of
up to `WINDOW_CAPACITY` seconds, and a batch of windows is encoded at once. Each clip is
then decoded alone, from an encoder output that holds only its own frames (see
packed_decode): a word is never given to a file it was not spoken in, because the decoder
for one file never hears another. Timestamps come back relative to each file.

With VAD on, each clip is first reduced to its speech span (leading/trailing silence cut),
and a clip without speech gets an empty transcript without reaching the model. On a
multilingual model each clip's language, unless given, is detected from its own frames of
the shared encoder pass, and clips are decoded grouped by language (packed_decode).

The trade-off: a packed clip's encoder frames attend to the whole window, so its transcript
can change (a word or so) with what it was packed with. The layout is a function of the set
of clips alone, so the same inputs give the same transcripts; `pack_short_clips=False`
(`--no-pack`) gives per-file reproducibility whatever the batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.contract.transcript import Segment, Transcript
from whisperfleet_runner.decode.packed_decode import FRAME_SECONDS, Decoded
from whisperfleet_runner.decode.protocols import ClipPacking
from whisperfleet_runner.media.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

# Seconds of a 30 s window used: the last 2 s stay silent, or a clip ending there may be
# decoded cut short (benchmarks/README.md, "Measurements behind design choices").
WINDOW_CAPACITY = 28.0
GAP_SECONDS = 1.0  # silence between clips: keeps neighbours' frames out of a clip's margin
MAX_CLIP_SECONDS = 14.0  # longer files gain little (at most one neighbour fits): normal path
_SPEECH_PAD = 0.2  # seconds kept around the VAD's speech span


@dataclass
class Clip:
    """One decoded short file to be packed."""

    source: str
    audio: np.ndarray
    # filled by prepare(): the part of `audio` that goes into the window
    trim_start: float = 0.0
    trim_end: float = 0.0

    @property
    def duration(self) -> float:
        return float(self.audio.shape[-1]) / SAMPLE_RATE

    @property
    def packed_seconds(self) -> float:
        return self.trim_end - self.trim_start


@dataclass
class Window:
    """Clips laid out in one window: `starts[i]` is clip `members[i]`'s offset in it."""

    members: list[int] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    length: float = 0.0


def is_short(duration: float) -> bool:
    """Whether a file of `duration` seconds is worth packing."""
    return 0.0 < duration <= MAX_CLIP_SECONDS


def shares_windows(options: TranscriptionOptions, multilingual: bool) -> bool:
    """Whether clips share windows, or each has a window of its own. A clip whose language
    must be detected needs an encoder pass of its own for that (packed_decode); decoding it
    from that same pass costs nothing more, where packing clips of one language afterwards
    would add the shared passes: 23.0 s of CPU against 16.7 s for the mixed corpus's 12
    files on Whisper base (benchmarks/README.md, "Measurements behind design choices")."""
    return bool(options.language) or not multilingual


def can_pack(options: TranscriptionOptions) -> bool:
    """Whether the run packs short clips: on unless switched off (`--no-pack`), for
    English-only and multilingual models alike (benchmarks/README.md, "Whisper base and
    mixed languages")."""
    return options.pack_short_clips


def plan_windows(
    durations: Sequence[float],
    capacity: float = WINDOW_CAPACITY,
    gap: float = GAP_SECONDS,
) -> list[Window]:
    """First-fit decreasing: clips (longest first; equal lengths in the given order) into as
    few windows as possible."""
    windows: list[Window] = []
    for index in sorted(range(len(durations)), key=lambda i: -durations[i]):
        length = durations[index]
        if length > capacity:
            raise ValueError(f"clip {index} ({length:.1f} s) does not fit a {capacity} s window")
        for window in windows:
            if window.length + gap + length <= capacity:
                window.members.append(index)
                window.starts.append(window.length + gap)
                window.length += gap + length
                break
        else:
            windows.append(Window(members=[index], starts=[0.0], length=length))
    return windows


def prepare(clips: Sequence[Clip], vad: bool) -> None:
    """Set each clip's trim span: its speech span with VAD (empty when no speech), else all."""
    if vad:
        from faster_whisper.vad import VadOptions, get_speech_timestamps

        for clip in clips:
            speech = get_speech_timestamps(clip.audio, VadOptions())
            if not speech:
                clip.trim_start = clip.trim_end = 0.0
                continue
            clip.trim_start = max(0.0, speech[0]["start"] / SAMPLE_RATE - _SPEECH_PAD)
            clip.trim_end = min(clip.duration, speech[-1]["end"] / SAMPLE_RATE + _SPEECH_PAD)
    else:
        for clip in clips:
            clip.trim_start, clip.trim_end = 0.0, clip.duration


def transcribe_packed(
    engine: ClipPacking, clips: Sequence[Clip], options: TranscriptionOptions
) -> list[Transcript]:
    """Transcripts of `clips` (in order) from packed windows, run as one batched call.

    Exceptions from the model propagate: the caller falls back to per-file transcription.
    """
    prepare(clips, options.vad_filter)
    # The layout depends only on the set of clips, not on the order they arrived in: a clip's
    # transcript can depend on its window's neighbours, so the same set must give the same
    # windows (re-running a job reproduces its transcripts).
    speaking = sorted((i for i, c in enumerate(clips) if c.packed_seconds > 0),
                      key=lambda i: (-_on_grid(clips[i].packed_seconds), clips[i].source))
    # Clip lengths rounded up to the encoder's frame grid, so every start lies on it.
    lengths = [_on_grid(clips[i].packed_seconds) for i in speaking]
    if shares_windows(options, engine.multilingual):
        windows = plan_windows(lengths, gap=_on_grid(GAP_SECONDS))
    else:
        windows = [Window(members=[n], starts=[0.0], length=length)
                   for n, length in enumerate(lengths)]
    laid_out: list[list[tuple[float, np.ndarray]]] = []
    owners: list[int] = []  # the clip of each placed piece, in transcribe_windows' order
    for window in windows:
        pieces = []
        for member, start in zip(window.members, window.starts, strict=True):
            clip = clips[speaking[member]]
            begin = round(clip.trim_start * SAMPLE_RATE)
            part = clip.audio[begin: begin + round(clip.packed_seconds * SAMPLE_RATE)]
            pieces.append((_on_grid(start), part))
            owners.append(speaking[member])
        laid_out.append(pieces)
    per_clip: dict[int, Decoded] = {}
    if laid_out:
        label = f"{len(clips)} packed clips ({clips[0].source} …)"
        results = engine.transcribe_windows(laid_out, options, label)
        per_clip = dict(zip(owners, results, strict=True))
    # A clip without speech never reaches the model: it has the language asked for, or
    # English as faster-whisper reports for a file without speech.
    silent = Decoded(options.language or "en", 1.0, [])
    return [
        Transcript(
            source=clip.source,
            language=per_clip.get(i, silent).language,
            language_probability=per_clip.get(i, silent).language_probability,
            duration=clip.duration,
            model=engine.options.name,
            compute_type=engine.compute_type,
            device=engine.device_label,
            segments=_in_file_time(per_clip.get(i, silent).segments, clip.trim_start,
                                   clip.duration),
        )
        for i, clip in enumerate(clips)
    ]


def _on_grid(seconds: float) -> float:
    """`seconds` rounded up to a whole number of encoder frames."""
    return math.ceil(round(seconds / FRAME_SECONDS, 6)) * FRAME_SECONDS


def _in_file_time(segments: list[Segment], offset: float, duration: float) -> list[Segment]:
    """Segments from clip time (the packed, trimmed part) to file time, numbered from 1."""

    def at(value: float) -> float:
        return min(round(value + offset, 3), duration)  # rounding must not pass the end

    return [
        dataclasses.replace(
            segment, id=n, start=at(segment.start), end=at(segment.end),
            words=None if segment.words is None else [
                dataclasses.replace(w, start=at(w.start), end=at(w.end)) for w in segment.words
            ],
        )
        for n, segment in enumerate(segments, start=1)
    ]
