"""Chunks of several files fill each batch; every file gets back exactly its own transcript.

Real tiny.en on CPU, real talks (espeak-ng). The baseline is faster-whisper's own
`BatchedInferencePipeline`, one file at a time, on the same model.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import jiwer
import pytest
from faster_whisper import BatchedInferencePipeline, decode_audio

from whisperfleet_runner.contract import ModelOptions, OutputOptions, WorkOrder
from whisperfleet_runner.decode import chunk_decode
from whisperfleet_runner.decode.engine import WhisperEngine, get_engine
from whisperfleet_runner.media import audio
from whisperfleet_runner.media.speech_chunks import speech_chunks
from whisperfleet_runner.pipeline.ledger import LedgerRecord
from whisperfleet_runner.pipeline.run import run_files
from whisperfleet_runner.storage import InputFile

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                 reason="the talks are read by espeak-ng")]
TINY = ModelOptions(name="tiny.en", compute_type="int8")


@pytest.fixture(scope="module")
def engine() -> WhisperEngine:
    return get_engine(TINY, device="cpu", compute_type="int8")


@pytest.fixture(scope="module")
def talks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from benchmarks import corpus

    folder = tmp_path_factory.mktemp("talks")
    corpus.build("long", folder, 4)
    return folder


def inputs(folder: Path) -> list[InputFile]:
    return [InputFile(uri=str(p), key=p.name, size=p.stat().st_size)
            for p in sorted(folder.glob("*.wav"))]


def options(out: Path, batch_size: int = 8) -> Any:
    order = WorkOrder(job_uid="uid", input_uri="unused",
                      output=OutputOptions(uri=str(out), formats=("json",)))
    order.transcription.batch_size = batch_size
    return order.options


class Spy:
    """The real engine, recording which files' chunks each model call held."""

    def __init__(self, real: WhisperEngine) -> None:
        self.real = real
        self.calls: list[list[str]] = []
        self.fail_key = ""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def decode_chunks(self, items: list[chunk_decode.Item], *args: Any) -> Any:
        keys = [item.owner.file.key for item in items]
        self.calls.append(keys)
        if self.fail_key in keys:
            raise RuntimeError(f"injected failure of a chunk of {self.fail_key}")
        return self.real.decode_chunks(items, *args)


def chunk_count(path: Path) -> int:
    return len(list(speech_chunks([decode_audio(str(path))], vad=True)))


def transcript(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / f"{Path(name).stem}.json").read_text())


def test_each_file_gets_the_transcript_faster_whisper_gives_it_alone(
    engine: WhisperEngine, talks: Path, tmp_path: Path
) -> None:
    spy = Spy(engine)
    report = run_files(inputs(talks), options(tmp_path), lambda: spy, device="cpu")
    assert report.succeeded == 4
    # Batches were filled across files: every call but the last held 8 chunks.
    total = sum(chunk_count(p) for p in talks.glob("*.wav"))
    assert [len(c) for c in spy.calls[:-1]] == [8] * (len(spy.calls) - 1)
    assert len(spy.calls) == math.ceil(total / 8)
    assert any(len(set(call)) > 1 for call in spy.calls)
    ours, alone = [], []
    for path in sorted(talks.glob("*.wav")):
        segments, _ = BatchedInferencePipeline(engine.whisper).transcribe(
            decode_audio(str(path)), batch_size=8, beam_size=5)
        expected = [(s.start, s.end, s.text) for s in segments]
        got = [(s["start"], s["end"], s["text"])
               for s in transcript(tmp_path, path.name)["segments"]]
        ours.append(" ".join(t for *_, t in got))
        alone.append(" ".join(t for *_, t in expected))
        assert [t for *_, t in got] and got[0][0] == pytest.approx(expected[0][0], abs=0.02)
    assert jiwer.wer(alone, ours) <= 0.005


def test_a_file_is_published_as_soon_as_its_last_chunk_is_done(
    engine: WhisperEngine, talks: Path, tmp_path: Path
) -> None:
    spy = Spy(engine)
    seen: list[tuple[str, int]] = []  # (file, model calls made when its record came)

    def progress(record: LedgerRecord) -> None:
        seen.append((record.key, len(spy.calls)))

    report = run_files(inputs(talks), options(tmp_path, batch_size=2), lambda: spy,
                       device="cpu", progress=progress, overlap=False)
    assert report.succeeded == 4
    first = sorted(talks.glob("*.wav"))[0].name
    last_call_with_first = max(n for n, call in enumerate(spy.calls, 1) if first in call)
    assert dict(seen)[first] == last_call_with_first < len(spy.calls)


def test_a_chunk_that_fails_fails_only_its_file(
    engine: WhisperEngine, talks: Path, tmp_path: Path
) -> None:
    spy = Spy(engine)
    names = [p.name for p in sorted(talks.glob("*.wav"))]
    spy.fail_key = names[1]
    report = run_files(inputs(talks), options(tmp_path), lambda: spy, device="cpu")
    assert (report.succeeded, report.failed) == (3, 1)
    assert report.failures[0].uri.endswith(names[1])
    assert "injected failure" in report.failures[0].reason
    assert not (tmp_path / f"{Path(names[1]).stem}.json").exists()
    for name in names[:1] + names[2:]:
        assert transcript(tmp_path, name)["text"].strip()


def test_a_long_file_damaged_past_its_first_batches_fails_and_loses_nothing_else(
    engine: WhisperEngine, talks: Path, tmp_path: Path
) -> None:
    from tests.support import damaged_media

    samples = (decode_audio(str(sorted(talks.glob("*.wav"))[0])) * 32767).astype("int16")
    clean = damaged_media.mp3_cbr(samples)
    folder = tmp_path / "in"
    folder.mkdir()
    for path in sorted(talks.glob("*.wav"))[1:]:
        shutil.copy(path, folder / path.name)
    # Garbage three quarters in: the file's first chunks are batched with the others'
    # before decoding meets it.
    (folder / "damaged.mp3").write_bytes(damaged_media.overwrite(clean, len(clean) * 3 // 4, 2000))
    out = tmp_path / "out"
    damaged = InputFile(str(folder / "damaged.mp3"), "damaged.mp3", len(clean))
    report = run_files([*inputs(folder), damaged], options(out), lambda: engine, device="cpu")
    assert (report.succeeded, report.failed, report.bad_input) == (3, 1, 1)
    assert "damaged audio: 1 undecodable frame at" in report.failures[0].reason
    assert not list(out.glob("damaged*"))
    kept = options(tmp_path / "kept")
    kept.output.keep_partial = True
    again = run_files([damaged], kept, lambda: engine, device="cpu")
    assert again.succeeded == 1
    partial = transcript(tmp_path / "kept", "damaged.mp3")
    assert partial["partial"] is True and "undecodable frame" in partial["damage"]
    assert partial["duration"] < audio.duration(samples) - 0.05
