"""The engine with the real bundled tiny.en on CPU (int8): both modes, silence, OOM retry.

Only the out-of-memory error itself is injected (a CPU cannot run out of CUDA memory); the
transcription that follows it runs the real model.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from faster_whisper import WhisperModel

from whisperfleet_runner.contract import ModelOptions, TranscriptionOptions
from whisperfleet_runner.decode import encoder
from whisperfleet_runner.decode.chunk_batcher import transcribe_file
from whisperfleet_runner.decode.chunk_decode import Item
from whisperfleet_runner.decode.engine import (
    OutOfMemoryError,
    WhisperEngine,
    batch_size_for_memory,
    get_engine,
    is_out_of_memory,
)
from whisperfleet_runner.media import audio
from whisperfleet_runner.media.speech_chunks import speech_chunks

pytestmark = pytest.mark.slow
TINY = ModelOptions(name="tiny.en", compute_type="int8")
# The message CTranslate2 raises when a CUDA allocation fails.
CUDA_OOM = "CUDA failed with error out of memory"


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return get_engine(TINY, device="cpu", compute_type="int8")


def load(audio_dir: Path, name: str) -> np.ndarray:
    return audio.decode((audio_dir / name).read_bytes(), name)


@pytest.mark.parametrize("name", ["hello.wav", "hello.mp3"])
@pytest.mark.parametrize("batch_size", [8, 1], ids=["batched", "sequential"])
def test_transcribes_speech(engine: WhisperEngine, audio_dir: Path, name: str,
                            batch_size: int) -> None:
    options = TranscriptionOptions(batch_size=batch_size)
    result = transcribe_file(engine, load(audio_dir, name), f"file:///{name}", options)
    text = result.text.lower()
    assert "hello" in text and "world" in text
    assert result.language == "en"
    assert result.duration == pytest.approx(3.99, abs=0.05)
    assert result.source == f"file:///{name}"
    assert (result.model, result.device) == ("tiny.en", "cpu")
    assert result.compute_type.startswith("int8")
    assert all(0 <= s.start < s.end <= result.duration + 0.5 for s in result.segments)
    assert all(s.words is None for s in result.segments)


@pytest.mark.parametrize("batch_size", [8, 1], ids=["batched", "sequential"])
def test_silence_gives_an_empty_transcript(
    engine: WhisperEngine, audio_dir: Path, batch_size: int
) -> None:
    result = transcribe_file(engine,
        load(audio_dir, "silence.wav"), "silence.wav", TranscriptionOptions(batch_size=batch_size)
    )
    assert result.segments == []
    assert result.text == ""
    assert result.duration == pytest.approx(12.0)


def test_word_timestamps(engine: WhisperEngine, audio_dir: Path) -> None:
    options = TranscriptionOptions(word_timestamps=True, language="en")
    result = transcribe_file(engine, load(audio_dir, "hello.wav"), "hello.wav", options)
    words = [w for s in result.segments for w in s.words or []]
    assert words[0].word.strip().lower().startswith("hello")
    assert all(a.start <= b.start for a, b in itertools.pairwise(words))
    assert result.language_probability == 1.0  # given, not detected


def test_batched_without_vad_handles_audio_longer_than_a_window(
    engine: WhisperEngine, audio_dir: Path
) -> None:
    # faster-whisper 1.2.1 alone raises "No clip timestamps found" here.
    hello = load(audio_dir, "hello.wav")
    gap = np.zeros(audio.SAMPLE_RATE, np.float32)
    long = np.concatenate([hello, gap] * 8)  # ~40 s
    result = transcribe_file(engine, long, "long.wav", TranscriptionOptions(vad_filter=False))
    assert result.duration > 30
    assert result.text.lower().count("hello") >= 6
    assert result.segments[-1].end > 30


def test_get_engine_loads_the_model_once() -> None:
    first = get_engine(TINY, device="cpu", compute_type="int8")
    again = get_engine(ModelOptions(name="tiny.en", compute_type="int8"), "cpu", 0, "int8")
    assert again is first and again.whisper is first.whisper


def test_compute_type_auto_on_cpu_loads_int8() -> None:
    # CTranslate2 reports int8 as int8_float32 on CPUs without int8 float accumulation.
    assert get_engine(TINY, "cpu", 0, "auto").compute_type.startswith("int8")


def test_out_of_memory_is_recognised_by_its_text() -> None:
    assert is_out_of_memory(RuntimeError(CUDA_OOM))
    assert is_out_of_memory(RuntimeError("cuBLAS failed with status CUBLAS_STATUS_ALLOC_FAILED"))
    assert not is_out_of_memory(RuntimeError("unsupported device cuda"))


def _oom_above(calls: list[int], limit: int) -> Any:
    """The encoder pass over a batch of windows, failing as CUDA does when more than `limit`
    windows are encoded at once (the encoder's activations grow with the batch). Injected at
    `encoder.encode`, which hands a GPU the whole batch (on the CPU it splits it itself)."""
    real = encoder.encode

    def encode(whisper: WhisperModel, features: np.ndarray) -> Any:
        calls.append(features.shape[0] if features.ndim == 3 else 1)
        if calls[-1] > limit:
            raise RuntimeError(CUDA_OOM)
        return real(whisper, features)

    return encode


def _items(engine: WhisperEngine, samples: np.ndarray, count: int) -> list[Item]:
    """`count` copies of the file's one chunk, each as a file of its own."""
    [chunk] = list(speech_chunks([samples], vad=True))
    features = engine.chunk_decoder().features(chunk)
    return [Item(chunk, features, "en", owner=object()) for _ in range(count)]


def test_out_of_memory_halves_the_batch_and_retries_the_chunks(
    audio_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fresh = WhisperEngine(TINY, device="cpu", compute_type="int8")  # its batch cap must start unset
    calls: list[int] = []
    monkeypatch.setattr(encoder, "encode", _oom_above(calls, limit=2))
    items = _items(fresh, load(audio_dir, "hello.wav"), 8)
    with caplog.at_level(logging.WARNING, logger="whisperfleet_runner.decode.engine"):
        results = fresh.decode_chunks(items, TranscriptionOptions(batch_size=8), "batch")
    assert calls == [8, 4, 2, 2, 2, 2]
    assert len(results) == 8
    assert all("hello" in " ".join(s.text for s in r).lower() for r in results)
    halvings = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert [m.rsplit(" ", 1)[-1] for m in halvings] == ["4", "2"]
    # The lower size sticks: the next batch starts at 2 instead of failing twice again.
    fresh.decode_chunks(items[:4], TranscriptionOptions(batch_size=8), "again")
    assert calls[6:] == [2, 2]
    assert fresh.batch_cap == 2


def test_out_of_memory_at_batch_size_one_is_a_clear_error(
    audio_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = WhisperEngine(TINY, device="cpu", compute_type="int8")
    calls: list[int] = []
    monkeypatch.setattr(encoder, "encode", _oom_above(calls, limit=0))
    with pytest.raises(OutOfMemoryError, match=r"hello\.wav: CUDA out of memory on cpu even at "
                                                r"batch size 1 .*smaller model"):
        transcribe_file(fresh, load(audio_dir, "hello.wav"), "hello.wav", TranscriptionOptions())
    assert calls == [1, 1, 1, 1]  # one chunk: 8, 4, 2 and 1 asked, one window each time


def test_sequential_out_of_memory_is_not_retried(
    engine: WhisperEngine, audio_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def oom(self: WhisperModel, audio: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        raise RuntimeError(CUDA_OOM)

    monkeypatch.setattr(WhisperModel, "transcribe", oom)
    with pytest.raises(OutOfMemoryError):
        transcribe_file(engine, load(audio_dir, "hello.wav"), "h.wav",
                        TranscriptionOptions(batch_size=1))
    assert attempts == [1]


def test_other_runtime_errors_pass_through(
    engine: WhisperEngine, audio_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: WhisperModel, features: Any) -> Any:
        raise RuntimeError("some other CTranslate2 failure")

    monkeypatch.setattr(WhisperModel, "encode", broken)
    with pytest.raises(RuntimeError, match="some other CTranslate2 failure"):
        transcribe_file(engine, load(audio_dir, "hello.wav"), "h.wav", TranscriptionOptions())
    assert engine.batch_cap is None


@pytest.mark.parametrize(
    ("free_mib", "weights_mib", "expected"),
    [
        (80_000, 3_000, 8),  # an idle H100: the requested batch fits
        (8_000, 3_000, 8),  # ~4.4 GiB of room at 375 MiB per item: 11 would fit, 8 asked
        (5_000, 3_000, 3),  # a busy card: 1.5 GiB of room
        (3_200, 3_000, 1),  # barely the weights: never below 1
        (2_000, 75, 8),  # tiny models: the per-item floor keeps the estimate sane
    ],
)
def test_batch_size_is_bounded_by_free_gpu_memory(
    free_mib: int, weights_mib: int, expected: int
) -> None:
    assert batch_size_for_memory(8, free_mib, weights_mib) == expected


def test_english_only_model_ignores_a_language_with_a_warning(
    engine: WhisperEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="whisperfleet_runner.decode.engine"):
        assert engine.unsupported(TranscriptionOptions(language="de")) is None
    assert any("English-only" in r.getMessage() for r in caplog.records)
    assert engine.unsupported(TranscriptionOptions(language=None)) is None
