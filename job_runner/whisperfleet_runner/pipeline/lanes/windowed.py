"""The window lane: each file transcribed alone, in faster-whisper's sequential mode (each
30 s window conditioned on the text before it); a long file window by window (cut at
silence, see media.speech_chunks), its windows' transcripts joined in file time."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.contract.transcript import Transcript
from whisperfleet_runner.decode.protocols import Engine
from whisperfleet_runner.media.audio import SAMPLE_RATE
from whisperfleet_runner.pipeline.events import FileItem
from whisperfleet_runner.pipeline.failures import FileFailed, transcription_failure
from whisperfleet_runner.pipeline.lanes.base import Audio, CheckDevice, Publish

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Open:
    item: FileItem
    windows: list[Transcript] = field(default_factory=list)  # a long file's, in order
    whole: Transcript | None = None  # a short file's, as the engine gave it


class WindowLane:
    """Sequential transcription, file by file (see Lane for the methods)."""

    def __init__(self, engine: Engine, options: TranscriptionOptions, publish: Publish,
                 check_device: CheckDevice) -> None:
        self.engine, self.options = engine, options
        self.publish, self.check_device = publish, check_device
        self.files: dict[int, _Open] = {}

    def open(self, item: FileItem) -> None:
        self.files[id(item)] = _Open(item)

    def add(self, item: FileItem, audio: Audio) -> None:
        held = self.files.get(id(item))
        if held is None:
            return  # failed already: the rest of its audio is not needed
        self.check_device()  # GpuLost stops the run with the file in hand
        samples = audio if isinstance(audio, np.ndarray) else audio.samples
        result = self._transcribe(item, samples)
        if isinstance(result, FileFailed):
            del self.files[id(item)]
            self.publish(item, result)
        elif isinstance(audio, np.ndarray):
            held.whole = result
        else:
            _shift(result, audio.start / SAMPLE_RATE)  # window time -> file time
            held.windows.append(result)

    def close(self, item: FileItem) -> None:
        held = self.files.pop(id(item), None)
        if held is not None:
            self.publish(item, held.whole or _joined(item, held.windows))

    def flush(self) -> None:
        pass  # nothing waits: every window is transcribed as it comes

    def drop(self, item: FileItem) -> None:
        self.files.pop(id(item), None)

    def release(self) -> list[FileItem]:
        held, self.files = [f.item for f in self.files.values()], {}
        return held

    def _transcribe(self, item: FileItem, samples: np.ndarray) -> Transcript | FileFailed:
        try:
            return self.engine.transcribe(samples, item.file.uri, self.options)
        except Exception as exc:  # one file's inference error must not stop the others
            log.exception("transcription of %s failed", item.file.uri)
            return transcription_failure(exc)


def _shift(transcript: Transcript, seconds: float) -> None:
    for segment in transcript.segments:
        segment.start, segment.end = segment.start + seconds, segment.end + seconds
        for word in segment.words or []:
            word.start, word.end = word.start + seconds, word.end + seconds


def _joined(item: FileItem, windows: list[Transcript]) -> Transcript:
    """A long file's transcript from its windows'."""
    first = windows[0] if windows else None
    segments = [s for w in windows for s in w.segments]
    for number, segment in enumerate(segments, 1):
        segment.id = number
    return Transcript(
        source=item.file.uri, language=first.language if first else "en",
        language_probability=first.language_probability if first else 1.0,
        duration=item.seconds, model=first.model if first else "",
        compute_type=first.compute_type if first else "", device=first.device if first else "",
        segments=segments)
