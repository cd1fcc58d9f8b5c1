"""Long audio is cut at silence into bounded windows, with timestamps continuous across cuts.

Real Silero VAD (faster-whisper's) and the real tiny.en on the committed talks (espeak-ng); the
baseline is the same audio chunked in one piece, as faster-whisper's batched mode does.
"""

from __future__ import annotations

import itertools
import wave

import jiwer
import numpy as np
import pytest

from whisperfleet_runner.contract import ModelOptions, TranscriptionOptions
from whisperfleet_runner.decode.chunk_batcher import ChunkBatcher
from whisperfleet_runner.decode.engine import get_engine
from whisperfleet_runner.media.audio import SAMPLE_RATE
from whisperfleet_runner.media.speech_chunks import CHUNK_SECONDS, chunk_windows, cut_windows

pytestmark = pytest.mark.slow
BLOCK = 30 * SAMPLE_RATE


@pytest.fixture(scope="module")
def talks(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, str]:
    """Four talks with 2 s pauses (about four minutes), and what espeak-ng read."""
    from benchmarks import corpus

    folder = tmp_path_factory.mktemp("talks")
    parts, script = [], []
    for name, text in sorted(corpus.build("long", folder, 4).items()):
        with wave.open(str(folder / name)) as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), np.int16))
        parts.append(np.zeros(2 * SAMPLE_RATE, np.int16))
        script.append(text)
    return np.concatenate(parts).astype(np.float32) / 32768.0, " ".join(script)


@pytest.fixture(scope="module")
def recording(talks: tuple[np.ndarray, str]) -> np.ndarray:
    return talks[0]


def blocks(samples: np.ndarray) -> list[np.ndarray]:
    return [samples[i: i + BLOCK] for i in range(0, samples.shape[0], BLOCK)]


def transcribe(chunks: list, options: TranscriptionOptions, seconds: float) -> list:
    engine = get_engine(ModelOptions(name="tiny.en"), "cpu", 0, "int8")
    batcher = ChunkBatcher(engine, options)
    batcher.start("file", "file")
    for chunk in chunks:
        batcher.add("file", chunk)
    batcher.end("file", seconds)
    [(_, transcript)], failed = batcher.run_all()
    assert not failed
    return transcript.segments


def test_windows_are_consecutive_bounded_and_cut_in_silence(recording: np.ndarray) -> None:
    windows = list(cut_windows(blocks(recording), vad=True, window_seconds=60,
                               tail_seconds=20))
    assert len(windows) >= 4
    position = 0
    for window in windows:
        assert window.start == position
        assert window.samples.shape[0] <= 60 * SAMPLE_RATE  # never more held than a window
        spans = window.spans or []
        assert all(window.start <= a < b <= position + window.samples.shape[0]
                   for a, b in spans)
        position += window.samples.shape[0]
    assert position == recording.shape[0]  # nothing lost, nothing twice
    # A cut never falls inside speech the window's VAD found (it waits for a pause).
    for window in windows[:-1]:
        end = window.start + window.samples.shape[0]
        assert not any(a < end < b for a, b in window.spans or [])


def test_windowed_transcript_equals_the_one_piece_transcript(
    talks: tuple[np.ndarray, str],
) -> None:
    recording, script = talks
    options = TranscriptionOptions()
    seconds = recording.shape[0] / SAMPLE_RATE
    windows = list(cut_windows(blocks(recording), vad=True, window_seconds=120,
                               tail_seconds=30))
    cuts = [w.start / SAMPLE_RATE for w in windows[1:]]
    windowed = list(chunk_windows(windows))
    whole = list(chunk_windows(cut_windows([recording], vad=True, window_seconds=1e6)))
    assert cuts and all(c.duration <= CHUNK_SECONDS for c in windowed)
    # faster-whisper's chunk offsets: the chunked audio before each chunk, without gaps.
    assert all(b.offset == pytest.approx(a.offset + a.duration)
               for a, b in itertools.pairwise(windowed))
    ours = transcribe(windowed, options, seconds)
    theirs = transcribe(whole, options, seconds)
    assert [s.start for s in ours] == sorted(s.start for s in ours)
    assert ours[-1].end == pytest.approx(theirs[-1].end, abs=1.0) and ours[-1].end <= seconds
    # VAD hears the audio before each cut again, on the same frames, so it finds the speech
    # a whole-file run finds and the chunks are the same (span edges may move a frame).
    assert [(c.spans[0][0], c.spans[-1][1]) for c in windowed] == \
        [(c.spans[0][0], c.spans[-1][1]) for c in whole]
    assert jiwer.wer(words(theirs), words(ours)) <= 0.01, (words(theirs), words(ours))
    # Away from the cuts (a chunk's length either side), word for word and time for time.
    far = [s for s in theirs if all(abs(s.start - c) > 30 and abs(s.end - c) > 30 for c in cuts)]
    assert len(far) >= len(theirs) // 4
    mine = {(round(s.start, 1), s.text) for s in ours}
    assert all((round(s.start, 1), s.text) in mine for s in far)
    assert jiwer.wer(words_of(script), words(ours)) <= jiwer.wer(words_of(script),
                                                                 words(theirs)) + 0.01


def words_of(text: str) -> str:
    return " ".join("".join(c for c in w if c.isalnum()) for w in text.lower().split())


def words(segments: list) -> str:
    """Lower-case words without punctuation (a cut may turn a full stop into a comma)."""
    return words_of(" ".join(s.text for s in segments))


def test_without_vad_chunks_are_the_30_second_pieces_of_the_file(
    recording: np.ndarray,
) -> None:
    chunks = list(chunk_windows(cut_windows(blocks(recording), vad=False, window_seconds=60)))
    assert [c.spans[0][0] for c in chunks] == list(range(0, recording.shape[0],
                                                         CHUNK_SECONDS * SAMPLE_RATE))
    assert np.array_equal(np.concatenate([c.samples for c in chunks]), recording)
    assert all(c.offset == c.spans[0][0] / SAMPLE_RATE for c in chunks)


@pytest.mark.parametrize("extra", [0, 449, 500])  # whole frames; a last frame cut short
def test_vad_in_steps_hears_what_faster_whispers_own_model_hears(
        recording: np.ndarray, extra: int) -> None:
    """Silero run 16 s at a time from the audio itself (vad_steps, for memory) gives every
    frame the probability faster-whisper's model gives it over the whole window at once, bit
    for bit, and the spans are the ones faster-whisper's get_speech_timestamps finds."""
    from faster_whisper.vad import get_speech_timestamps, get_vad_model

    from whisperfleet_runner.media.speech_chunks import silero, vad_options
    from whisperfleet_runner.media.vad_steps import STEP_FRAMES, probabilities

    window = recording[: 182 * SAMPLE_RATE]  # one VAD window: 150 s and the 32 s heard first
    window = window[: window.shape[0] // 512 * 512 - 512 + extra]
    assert window.shape[0] // 512 > 2 * STEP_FRAMES  # several steps, one partial
    model = get_vad_model()
    padded = np.pad(window, (0, 512 - window.shape[0] % 512))  # as get_speech_timestamps does
    assert np.array_equal(probabilities(model.session, window), model(padded))
    spans = silero(window)
    found = get_speech_timestamps(window.copy(), vad_options())  # type: ignore[arg-type]
    assert spans == [(s["start"], s["end"]) for s in found] and len(spans) > 10


def test_cutting_a_long_recording_holds_about_one_window_whatever_its_length(
        recording: np.ndarray) -> None:
    """The intake's working memory while it cuts a recording into windows (Silero included)
    stays within two windows' worth (150 s, the 32 s heard first and a block), from the
    first windows to the last: a long recording cuts beside the model's batches for its
    whole length, so whatever it holds adds to the run's peak (before, 66 MiB: the
    buffer concatenated per block, and get_speech_timestamps' padded and framed copies)."""
    import tracemalloc

    from whisperfleet_runner.media.speech_chunks import WARMUP_SAMPLES, WINDOW_SECONDS, silero

    silero(recording[:SAMPLE_RATE])  # the model loaded before measuring
    long = np.tile(recording, 4)  # about 16 minutes, 6 windows and more
    held = (WARMUP_SAMPLES + int(WINDOW_SECONDS * SAMPLE_RATE) + BLOCK) * 4  # float32 bytes
    peaks = []
    tracemalloc.start()
    try:
        for window in cut_windows((b.copy() for b in blocks(long)), vad=True):
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.reset_peak()
            del window  # taken by the model stage
    finally:
        tracemalloc.stop()
    assert len(peaks) > 6
    assert max(peaks) < 2 * held, [round(p / 2**20) for p in peaks]
