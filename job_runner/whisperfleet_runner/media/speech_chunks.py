"""Cut a file's decoded audio into the chunks Whisper transcribes, in bounded memory.

faster-whisper's batched mode runs Silero VAD over the whole file and joins its speech spans
into chunks of at most 30 s, the silence between spans removed (`collect_chunks`). Here the
same happens over a rolling window: VAD runs on `WINDOW_SECONDS` of audio at a time, the
spans that end before the window's last `TAIL_SECONDS` are taken, and the audio from the
silence after the last of them is carried into the next window. A file of any length thus
holds at most one window of samples, and every span keeps its place in the file, so
timestamps run on across the cuts. Without VAD the chunks are plain 30 s pieces.

`cut_windows` is the layer below: the same windows, cut at silence, for the sequential
(unbatched) mode, which transcribes a window at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from whisperfleet_runner.media.audio import SAMPLE_RATE

CHUNK_SECONDS = 30  # Whisper's window, and faster-whisper's chunk_length
# VAD's view at a time: Silero's working memory grows with it (benchmarks/README.md,
# "Measurements behind design choices"); the cuts come about once per window.
WINDOW_SECONDS = 150.0
TAIL_SECONDS = 45.0  # speech that may still be going on at a window's end waits for the next
_VAD_FRAME = 512  # Silero's frame: cuts fall on its grid, so frames line up with a whole-file run
# Audio before a window that its VAD run hears first and then drops: Silero is recurrent, so
# restarted at a cut it would find other spans than a whole-file run; heard from about 32 s
# before, on the whole-file run's frame grid, its state at the cut is the whole-file run's
# (benchmarks/README.md, "Measurements behind design choices").
WARMUP_SAMPLES = 1000 * _VAD_FRAME

Span = tuple[int, int]  # [start, end) in samples from the start of the file
# Speech in some audio: [start, end) sample spans, sorted, none longer than a chunk.
Detector = Callable[[np.ndarray], list[Span]]


@dataclass
class Window:
    """Consecutive audio of a file: `samples` start at sample `start` of the file; `spans`
    are the speech in it (file samples), None when VAD is off."""

    start: int
    samples: np.ndarray
    spans: list[Span] | None = None


@dataclass
class Chunk:
    """What one 30 s Whisper window holds: speech spans of one file, joined."""

    samples: np.ndarray
    spans: list[Span]  # where the joined samples come from in the file
    offset: float  # seconds of chunked audio before it in the file (faster-whisper's offset)
    vad: bool = True  # times need mapping back through `spans` (silence was removed)

    @property
    def duration(self) -> float:
        return float(self.samples.shape[-1]) / SAMPLE_RATE


def vad_options() -> object:
    """The VAD settings of faster-whisper's batched mode (BatchedInferencePipeline)."""
    from faster_whisper.vad import VadOptions

    return VadOptions(max_speech_duration_s=CHUNK_SECONDS, min_silence_duration_ms=160)


def silero(audio: np.ndarray) -> list[Span]:
    """Speech in `audio` as faster-whisper's batched mode finds it (Silero VAD), in the
    working memory of 16 s of audio (media.vad_steps)."""
    from faster_whisper.vad import get_vad_model

    from whisperfleet_runner.media import vad_steps

    probs = vad_steps.probabilities(get_vad_model().session, audio)
    return vad_steps.spans(probs, audio.shape[0], vad_options())


def cut_windows(
    blocks: Iterable[np.ndarray], *, vad: bool, window_seconds: float = WINDOW_SECONDS,
    tail_seconds: float = TAIL_SECONDS, detect: Detector = silero,
) -> Iterator[Window]:
    """The audio of `blocks` as consecutive windows of at most about `window_seconds`, cut
    in silence (VAD) or every `window_seconds` (no VAD, a multiple of 30 s). A window may
    hold no speech at all (`spans == []`)."""
    size = int(window_seconds * SAMPLE_RATE)
    tail = int(tail_seconds * SAMPLE_RATE)
    if not vad:
        size = max(1, round(window_seconds / CHUNK_SECONDS)) * CHUNK_SECONDS * SAMPLE_RATE
    held = _Held()  # the audio just before `start` that VAD hears first, then from `start` on
    heard = 0  # samples of it before `start`
    start = 0
    for block in blocks:
        # Room for the most it will hold: grown in small steps, two copies were alive often.
        held.append(block, most=WARMUP_SAMPLES + _VAD_FRAME + size + block.shape[0])
        while held.size - heard >= size:
            window = (_cut(held.samples, heard, start, size, tail, detect) if vad
                      else Window(start, held.samples[:size].copy()))
            cut = window.samples.shape[0]
            yield window
            del window  # the consumer's now: not kept alive here while the next is cut
            start += cut
            # VAD hears from a frame boundary of the file: Silero then sees the frames a
            # whole-file run sees (a cut need not fall on one)
            keep = min(start, WARMUP_SAMPLES + start % _VAD_FRAME, heard + cut) if vad else 0
            held.drop(heard + cut - keep)
            heard = keep
    if held.size - heard:
        yield (_last(held.samples, heard, start, detect) if vad
               else Window(start, held.samples[heard:].copy()))


class _Held:
    """Consecutive samples in one array that is reused: blocks are written after what it
    holds, and what is no longer needed is dropped from the front. Concatenating instead
    made a new array of up to a window and its warm-up per block, next to the old one, and
    a long recording makes them beside the model's batches for its whole length."""

    def __init__(self) -> None:
        self._array = np.zeros(0, np.float32)
        self.size = 0

    @property
    def samples(self) -> np.ndarray:
        return self._array[: self.size]

    def append(self, block: np.ndarray, most: int = 0) -> None:
        """`block` after what is held; room doubles, up to `most` if that is more than
        needed (a window of a million seconds, as tests cut a whole file, grows as needed)."""
        need = self.size + block.shape[0]
        if need > self._array.shape[0]:
            grown = np.empty(max(need, min(most, 2 * need)), np.float32)
            grown[: self.size] = self._array[: self.size]
            self._array = grown
        self._array[self.size: need] = block
        self.size = need

    def drop(self, count: int) -> None:
        rest = self.size - count
        self._array[:rest] = self._array[count: self.size]  # numpy copies overlaps safely
        self.size = rest


def _speech(audio: np.ndarray, heard: int, detect: Detector) -> list[Span]:
    """Speech spans in `audio` after its first `heard` samples (positions from there), VAD
    having heard those first; a span that began in them starts at 0."""
    return [(max(0, a - heard), b - heard) for a, b in detect(audio) if b > heard]


def _cut(held: np.ndarray, heard: int, start: int, size: int, tail: int,
         detect: Detector) -> Window:
    """The first window after `held`'s first `heard` samples: VAD over `size` samples, cut
    in the longest pause between spans over the last 30 s before the tail (speech near the
    end may go on past the window, so it waits for the next one, which runs VAD over it
    again)."""
    view = held[heard: heard + size]
    spans = _speech(held[: heard + size], heard, detect)
    limit = size - tail
    # Pauses: (length, where to cut) between consecutive spans that end before the limit,
    # the last span followed by the window's end. No speech at all: no pause, cut at limit.
    following = [*spans[1:], (size, size)][:len(spans)]
    pauses = [(nxt[0] - cur[1], (cur[1] + nxt[0]) // 2)
              for cur, nxt in zip(spans, following, strict=True)
              if cur[1] <= limit and cur[1] >= limit - CHUNK_SECONDS * SAMPLE_RATE]
    if pauses:
        cut = max(pauses)[1]
    elif spans and spans[0][0] < limit:  # speech all the way: cut at a span's edge
        cut = max([b for _, b in spans if b <= limit] or [spans[0][0]])
    else:
        cut = limit
    if cut // _VAD_FRAME * _VAD_FRAME > 0:
        grid = cut // _VAD_FRAME * _VAD_FRAME
        cut = grid if all(not a < grid < b for a, b in spans) else cut
    if cut <= 0:
        cut = limit
    kept = [s for s in spans if s[1] <= cut]
    # A copy: a view would keep the whole held array alive while the window waits in the
    # read-ahead, which counts only the window's own bytes.
    return Window(start, view[:cut].copy(), [(start + a, start + b) for a, b in kept])


def _last(held: np.ndarray, heard: int, start: int, detect: Detector) -> Window:
    return Window(start, held[heard:].copy(),
                  [(start + a, start + b) for a, b in _speech(held, heard, detect)])


class ChunkJoiner:
    """Chunks of at most 30 s from one file's consecutive windows, given one at a time: with
    VAD, speech spans joined in order as faster-whisper's collect_chunks joins them (a span
    that would overflow the chunk starts the next one); without, each window in 30 s
    pieces."""

    def __init__(self) -> None:
        self._limit = CHUNK_SECONDS * SAMPLE_RATE
        self._offset = 0  # samples of chunked audio before the open chunk
        self._parts: list[np.ndarray] = []  # the open chunk's pieces
        self._spans: list[Span] = []
        self._samples = 0

    def add(self, window: Window) -> list[Chunk]:
        """The chunks `window` completes."""
        if window.spans is None:
            done = []
            for first in range(0, window.samples.shape[0], self._limit):
                piece = window.samples[first: first + self._limit].copy()  # not a view
                at = window.start + first
                done.append(Chunk(piece, [(at, at + piece.shape[0])], at / SAMPLE_RATE,
                                  vad=False))
            return done
        done = []
        for a, b in window.spans:
            if self._samples and self._samples + (b - a) > self._limit:
                done.append(self._close())
            self._parts.append(window.samples[a - window.start: b - window.start])
            self._spans.append((a, b))
            self._samples += b - a
        return done

    def end(self) -> list[Chunk]:
        """The last chunk, if any speech is left."""
        return [self._close()] if self._samples else []

    def _close(self) -> Chunk:
        # A copy, never a view: a view would keep its whole window of samples alive while
        # the chunk waits for a batch.
        parts = self._parts
        samples = np.concatenate(parts) if len(parts) > 1 else parts[0].copy()
        chunk = Chunk(samples, self._spans, self._offset / SAMPLE_RATE)
        self._offset += self._samples
        self._parts, self._spans, self._samples = [], [], 0
        return chunk


def chunk_windows(windows: Iterable[Window]) -> Iterator[Chunk]:
    """The chunks of one file's consecutive windows (see ChunkJoiner)."""
    joiner = ChunkJoiner()
    for window in windows:
        yield from joiner.add(window)
    yield from joiner.end()


def speech_chunks(blocks: Iterable[np.ndarray], *, vad: bool) -> Iterator[Chunk]:
    """The chunks of a file's audio, given as consecutive blocks of samples."""
    return chunk_windows(cut_windows(blocks, vad=vad))
