"""The windowing of long audio, over random layouts of speech: no speech at all, one span,
many, at the file's edges, longer than a window. Whatever the layout, every sample of speech
lands in exactly one chunk, in order, and no chunk is longer than Whisper's window.

The speech detector here is a stand-in for Silero with Silero's contract as faster-whisper
calls it (sorted spans, none longer than `max_speech_duration_s` = 30 s): it reports the
non-zero runs of the audio it is given, so the truth is known. Real Silero over real speech
is tested in test_speech_chunks.py and test_long_silence.py.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whisperfleet_runner.media.audio import SAMPLE_RATE
from whisperfleet_runner.media.speech_chunks import (
    CHUNK_SECONDS,
    Span,
    chunk_windows,
    cut_windows,
)

CHUNK = CHUNK_SECONDS * SAMPLE_RATE
# Window and tail of the real windowing, and of a smaller one (more cuts per recording).
WINDOWS = [(150.0, 45.0), (60.0, 20.0)]


def nonzero_runs(audio: np.ndarray) -> list[Span]:
    """Speech as the stand-in detector hears it: runs of non-zero samples, cut into
    pieces of at most a chunk, as Silero cuts speech longer than max_speech_duration_s."""
    speech = np.concatenate(([False], audio != 0, [False]))
    edges = np.flatnonzero(speech[1:] != speech[:-1])
    spans: list[Span] = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        spans += [(int(x), int(min(b, x + CHUNK))) for x in range(int(a), int(b), CHUNK)]
    return spans


@st.composite
def layouts(draw: st.DrawFn) -> tuple[np.ndarray, list[Span], float, float]:
    """A recording (speech = 1.0, silence = 0.0), its speech spans and window sizes."""
    window, tail = draw(st.sampled_from(WINDOWS))
    seconds = st.one_of(
        st.floats(0.05, 3.0),  # words
        st.floats(3.0, 40.0),  # sentences, some longer than a chunk
        st.floats(window, 2.5 * window),  # talk without a pause, longer than a window
    )
    pauses = st.one_of(st.just(0.0), st.floats(0.01, 2.0), st.floats(window, 3 * window))
    parts = draw(st.lists(st.tuples(pauses, seconds), max_size=8))
    end_pause = draw(pauses)
    spans, at = [], 0
    for pause, length in parts:
        start = at + int(pause * SAMPLE_RATE)
        at = start + max(1, int(length * SAMPLE_RATE))
        if spans and start == spans[-1][1]:  # no pause: one run
            spans[-1] = (spans[-1][0], at)
        else:
            spans.append((start, at))
    total = max(1, at + int(end_pause * SAMPLE_RATE))
    audio = np.zeros(total, np.float32)
    for a, b in spans:
        audio[a:b] = 1.0
    return audio, spans, window, tail


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.data_too_large])
@given(layouts(), st.sampled_from([7 * SAMPLE_RATE, 30 * SAMPLE_RATE, 10**9]))
def test_every_speech_sample_lands_in_exactly_one_chunk_in_order(
    layout: tuple[np.ndarray, list[Span], float, float], block: int,
) -> None:
    audio, spans, window, tail = layout
    blocks = [audio[i: i + block] for i in range(0, audio.shape[0], block)]
    windows = list(cut_windows(blocks, vad=True, window_seconds=window, tail_seconds=tail,
                               detect=nonzero_runs))
    # The windows are the recording, once, in order.
    assert np.array_equal(np.concatenate([w.samples for w in windows]), audio)
    assert [w.start for w in windows] == [sum(v.samples.shape[0] for v in windows[:i])
                                          for i in range(len(windows))]
    chunks = list(chunk_windows(windows))
    taken = [span for chunk in chunks for span in chunk.spans]
    # In order, never overlapping: no sample twice.
    assert all(a < b for a, b in taken)
    assert all(prev[1] <= nxt[0] for prev, nxt in itertools.pairwise(taken))
    # Exactly the speech: every speech sample is in a chunk, no silence is.
    covered = np.zeros(audio.shape[0], bool)
    for a, b in taken:
        covered[a:b] = True
    assert np.array_equal(covered, audio != 0), spans
    for chunk in chunks:
        assert chunk.samples.shape[0] <= CHUNK
        assert np.array_equal(chunk.samples, np.concatenate([audio[a:b] for a, b in chunk.spans]))
    # Offsets are faster-whisper's: the chunked audio before each chunk.
    assert [round(c.offset * SAMPLE_RATE) for c in chunks] == \
        [sum(c.samples.shape[0] for c in chunks[:i]) for i in range(len(chunks))]


def test_a_window_without_speech_is_a_window_with_no_spans() -> None:
    # Five minutes of silence, then a word: the first windows hold no speech at all.
    audio = np.zeros(300 * SAMPLE_RATE + SAMPLE_RATE, np.float32)
    audio[-SAMPLE_RATE // 2:] = 1.0
    windows = list(cut_windows([audio], vad=True, detect=nonzero_runs))
    assert windows[0].spans == []
    [chunk] = list(chunk_windows(windows))
    assert chunk.spans == [(audio.shape[0] - SAMPLE_RATE // 2, audio.shape[0])]
