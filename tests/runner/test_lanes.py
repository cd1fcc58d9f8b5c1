"""The model stage picks its lanes once, from the options and what the model can do, and a
model that offers only sequential transcription still transcribes every file at batch size 8
(it used to be handed chunks it could not decode).

Real tiny.en on the CPU; the stand-in engines below wrap it and hide capabilities.
"""

from __future__ import annotations

import json
import logging
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from whisperfleet_runner.contract import ModelOptions, TranscriptionOptions, WorkOrder
from whisperfleet_runner.contract.options import OutputOptions
from whisperfleet_runner.decode.engine import WhisperEngine, get_engine
from whisperfleet_runner.decode.protocols import ChunkDecoding, ClipPacking, Engine
from whisperfleet_runner.media import audio
from whisperfleet_runner.pipeline import lanes
from whisperfleet_runner.pipeline.run import run_files
from whisperfleet_runner.storage import InputFile

TINY = ModelOptions(name="tiny.en", compute_type="int8")


class SequentialOnly:
    """The `Engine` protocol and nothing more: no chunk decoding, no clip packing."""

    def __init__(self, real: WhisperEngine) -> None:
        self.real, self.calls = real, 0
        self.options, self.compute_type = real.options, real.compute_type
        self.device_label, self.multilingual = real.device_label, real.multilingual
        self.batch_size, self.oom_halvings = 1, 0

    def unsupported(self, options: TranscriptionOptions) -> str | None:
        return None

    def transcribe(self, samples: np.ndarray, source: str, options: TranscriptionOptions
                   ) -> Any:
        self.calls += 1
        return self.real.transcribe(samples, source, options)


def nothing(*_: Any) -> None:
    return None


@pytest.mark.slow
def test_the_lanes_follow_the_options_and_the_models_capabilities() -> None:
    real = get_engine(TINY, device="cpu", compute_type="int8")
    only = SequentialOnly(real)
    assert isinstance(real, ChunkDecoding) and isinstance(real, ClipPacking)
    assert isinstance(only, Engine) and not isinstance(only, ChunkDecoding | ClipPacking)

    def chosen(engine: Any, **options: Any) -> tuple[str, str | None]:
        picked = lanes.choose(TranscriptionOptions(**options), engine, nothing, nothing)
        return (type(picked.main).__name__,
                type(picked.packed).__name__ if picked.packed else None)

    assert chosen(real) == ("ChunkLane", "PackedLane")
    assert chosen(real, batch_size=1) == ("WindowLane", "PackedLane")
    assert chosen(real, pack_short_clips=False) == ("ChunkLane", None)
    assert chosen(only) == ("WindowLane", None)


@pytest.mark.slow
def test_a_model_without_chunk_decoding_transcribes_every_file_at_batch_size_8(
    tmp_path: Path, audio_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    # A 40 s recording is read as a stream of windows; hello.wav comes whole.
    hello = audio.decode((audio_dir / "hello.wav").read_bytes(), "hello.wav")
    long = np.concatenate([hello, np.zeros(audio.SAMPLE_RATE, np.float32)] * 8)
    with wave.open(str(tmp_path / "long.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(audio.SAMPLE_RATE)
        w.writeframes((long * 32767).astype(np.int16).tobytes())
    (tmp_path / "hello.wav").write_bytes((audio_dir / "hello.wav").read_bytes())
    files = [InputFile(uri=str(tmp_path / n), key=n, size=(tmp_path / n).stat().st_size)
             for n in ("long.wav", "hello.wav")]
    order = WorkOrder(job_uid="lanes", input_uri=str(tmp_path),
                      output=OutputOptions(uri=str(tmp_path / "out"), formats=("json",)),
                      model=TINY, transcription=TranscriptionOptions(batch_size=8))
    only = SequentialOnly(get_engine(TINY, device="cpu", compute_type="int8"))
    with caplog.at_level(logging.WARNING):
        report = run_files(files, order.options, lambda: only, device="cpu")
    assert (report.succeeded, report.failed) == (2, 0), report.failures
    assert only.calls >= 2  # the model's own sequential mode did all the work
    said = json.loads((tmp_path / "out" / "long.json").read_text())
    assert said["segments"][-1]["end"] > 30  # every window of it, in file time
    assert said["text"].lower().count("world") >= 5
    assert "world" in json.loads((tmp_path / "out" / "hello.json").read_text())["text"].lower()
    assert any("does not decode batches of chunks" in r.getMessage() for r in caplog.records)
