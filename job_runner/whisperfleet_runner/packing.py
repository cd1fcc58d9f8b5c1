"""Short-clip packing: several short files share one 30-second Whisper window.

Whisper pads every input to a 30 s window, so a 2 s clip costs the encoder as much as 30 s
of speech. Here short clips are laid end to end, separated by silence gaps, into windows of
up to `WINDOW_CAPACITY` seconds; each window is one chunk of a batched-pipeline call (so a
batch of windows fills the batch *and* each window). The model returns word timestamps;
every word goes back to the clip whose span holds its midpoint (a word in the middle of a
gap belongs to no file and is dropped), and each file's words are regrouped into segments
with timestamps relative to that file. A word is never given to a file it was not spoken in.

With VAD on, each clip is first reduced to its speech span (leading/trailing silence cut),
and a clip without speech gets an empty transcript without reaching the model. Packing
needs one language for the whole window: it applies when the language is given or the
model is English-only (`can_pack`); otherwise files take the normal per-file path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisperfleet_runner.audio import SAMPLE_RATE
from whisperfleet_runner.config import TranscriptionOptions
from whisperfleet_runner.transcript import Segment, Transcript, Word

log = logging.getLogger(__name__)

WINDOW_CAPACITY = 29.0  # seconds of a 30 s window used; words at its very end align poorly
GAP_SECONDS = 1.0  # silence between clips: Whisper hears a pause, DTW has room to separate
MAX_CLIP_SECONDS = 14.0  # longer files gain little (at most one neighbour fits): normal path
# A word whose midpoint lies in a gap further than this from both clips is dropped.
_GAP_MARGIN = 0.4
_SPEECH_PAD = 0.2  # seconds kept around the VAD's speech span
_SENTENCE_END = (".", "?", "!")


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


def can_pack(options: TranscriptionOptions, multilingual: bool) -> bool:
    """Packing on, and one language for every window (given, or an English-only model)."""
    return options.pack_short_clips and (bool(options.language) or not multilingual)


def plan_windows(
    durations: Sequence[float],
    capacity: float = WINDOW_CAPACITY,
    gap: float = GAP_SECONDS,
) -> list[Window]:
    """First-fit decreasing: clips (longest first) into as few windows as possible."""
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


def assign_words(
    words: Sequence[Any], spans: Sequence[tuple[float, float]], margin: float = _GAP_MARGIN
) -> list[list[Any]]:
    """Each word (with .start/.end) to the span holding its midpoint, or the nearest span
    within `margin`; words further from every span are dropped. Returns words per span."""
    out: list[list[Any]] = [[] for _ in spans]
    for word in words:
        mid = (float(word.start) + float(word.end)) / 2
        best, best_distance = -1, margin
        for i, (start, end) in enumerate(spans):
            distance = 0.0 if start <= mid <= end else min(abs(mid - start), abs(mid - end))
            if distance <= best_distance:
                best, best_distance = i, distance
                if distance == 0.0:
                    break
        if best >= 0:
            out[best].append(word)
        else:
            log.debug("dropped word %r at %.2f s: it lies in a gap between clips", word.word, mid)
    return out


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
    engine: Any, clips: Sequence[Clip], options: TranscriptionOptions
) -> list[Transcript]:
    """Transcripts of `clips` (in order) from packed windows, run as one batched call.

    `engine` is an engine.Engine (transcribe_windows, options, compute_type, device_label).
    Exceptions from the model propagate: the caller falls back to per-file transcription.
    """
    prepare(clips, options.vad_filter)
    speaking = [i for i, c in enumerate(clips) if c.packed_seconds > 0]
    windows = plan_windows([clips[i].packed_seconds for i in speaking])
    pieces: list[np.ndarray] = []
    chunks: list[dict[str, float]] = []
    spans: list[tuple[float, float]] = []  # per speaking clip, in the concatenated audio
    span_owner: list[int] = []
    cursor = 0  # samples
    gap = np.zeros(int(GAP_SECONDS * SAMPLE_RATE), dtype=np.float32)
    for window in windows:
        window_start = cursor
        for n, member in enumerate(window.members):
            clip = clips[speaking[member]]
            if n:
                pieces.append(gap)
                cursor += gap.shape[0]
            begin = round(clip.trim_start * SAMPLE_RATE)
            part = clip.audio[begin: begin + round(clip.packed_seconds * SAMPLE_RATE)]
            spans.append((cursor / SAMPLE_RATE, (cursor + part.shape[0]) / SAMPLE_RATE))
            span_owner.append(speaking[member])
            pieces.append(part)
            cursor += part.shape[0]
        chunks.append({"start": window_start / SAMPLE_RATE, "end": cursor / SAMPLE_RATE})
    per_clip: list[list[tuple[Any, Any]]] = [[] for _ in clips]
    language, probability = options.language or "en", 1.0
    if chunks:
        label = f"{len(clips)} packed clips ({clips[0].source} …)"
        raw, info = engine.transcribe_windows(np.concatenate(pieces), chunks, options, label)
        language, probability = info.language, float(info.language_probability)
        for segment in raw:
            # Only the spans of this segment's own window may receive its words.
            window_index = _window_of(chunks, float(segment.start))
            owned = [k for k, s in enumerate(spans)
                     if chunks[window_index]["start"] - 1e-3 <= s[0] < chunks[window_index]["end"]]
            assigned = assign_words(segment.words or [], [spans[k] for k in owned])
            for k, words in zip(owned, assigned, strict=True):
                per_clip[span_owner[k]].extend((w, segment) for w in words)
        offsets = {span_owner[k]: spans[k][0] for k in range(len(spans))}
    else:
        offsets = {}
    return [
        Transcript(
            source=clip.source,
            language=language,
            language_probability=probability,
            duration=clip.duration,
            model=engine.options.name,
            compute_type=engine.compute_type,
            device=engine.device_label,
            segments=_segments(per_clip[i], offsets.get(i, 0.0) - clip.trim_start,
                               clip.duration, options.word_timestamps),
        )
        for i, clip in enumerate(clips)
    ]


def _window_of(chunks: Sequence[dict[str, float]], time: float) -> int:
    """The window a segment came from: a batched segment starts at its window's start
    (rounded to milliseconds by faster-whisper), so the nearest start is its window."""
    return min(range(len(chunks)), key=lambda i: abs(chunks[i]["start"] - time))


def _segments(
    words: list[tuple[Any, Any]], shift: float, duration: float, keep_words: bool
) -> list[Segment]:
    """Regroup a file's words into sentence segments, in file time (`time - shift`)."""
    segments: list[Segment] = []
    group: list[tuple[Any, Any]] = []

    def flush() -> None:
        if not group:
            return
        words_out = [
            Word(start=_clamp(float(w.start) - shift, duration),
                 end=_clamp(float(w.end) - shift, duration),
                 word=w.word, probability=float(w.probability))
            for w, _ in group
        ]
        source = group[0][1]
        segments.append(Segment(
            id=len(segments) + 1,
            start=words_out[0].start,
            end=max(words_out[-1].end, words_out[0].start),
            text="".join(w.word for w in words_out),
            avg_logprob=float(source.avg_logprob),
            no_speech_prob=float(source.no_speech_prob),
            words=words_out if keep_words else None,
        ))
        group.clear()

    for item in words:
        group.append(item)
        if item[0].word.strip().endswith(_SENTENCE_END):
            flush()
    flush()
    return segments


def _clamp(value: float, duration: float) -> float:
    # Rounded to milliseconds like faster-whisper's times, never beyond the file's end.
    return min(max(round(value, 3), 0.0), duration)
