"""The chunk lane: files cut into chunks of at most 30 s of speech, and chunks of several files
filling each batch (decode.chunk_batcher), so a batch of 8 is full even with short talks."""

from __future__ import annotations

import logging

import numpy as np

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.contract.transcript import Transcript
from whisperfleet_runner.decode.chunk_batcher import ChunkBatcher
from whisperfleet_runner.decode.protocols import ChunkDecoding
from whisperfleet_runner.media.speech_chunks import Chunk, ChunkJoiner, speech_chunks
from whisperfleet_runner.pipeline.events import FileItem
from whisperfleet_runner.pipeline.failures import transcription_failure
from whisperfleet_runner.pipeline.lanes.base import Audio, CheckDevice, Publish

log = logging.getLogger(__name__)


class ChunkLane:
    """Batched transcription across files (see Lane for the methods)."""

    def __init__(self, engine: ChunkDecoding, options: TranscriptionOptions, publish: Publish,
                 check_device: CheckDevice) -> None:
        self.options, self.publish, self.check_device = options, publish, check_device
        self.batcher: ChunkBatcher[FileItem] = ChunkBatcher(engine, options)
        self.joiners: dict[int, ChunkJoiner] = {}  # per open file: its chunk being filled

    def open(self, item: FileItem) -> None:
        self.batcher.start(item, item.file.uri)
        self.joiners[id(item)] = ChunkJoiner()

    def add(self, item: FileItem, audio: Audio) -> None:
        if isinstance(audio, np.ndarray):  # a short file, whole
            chunks = list(speech_chunks([audio], vad=self.options.vad_filter))
        else:
            chunks = self.joiners[id(item)].add(audio)
        for chunk in chunks:
            self._queue(item, chunk)

    def close(self, item: FileItem) -> None:
        joiner = self.joiners.pop(id(item), None)
        for chunk in joiner.end() if joiner is not None else []:
            self._queue(item, chunk)
        self._results(self.batcher.end(item, item.seconds), [])

    def flush(self) -> None:
        self._results(*self.batcher.run_all(self.check_device))

    def drop(self, item: FileItem) -> None:
        self.batcher.drop(item)
        self.joiners.pop(id(item), None)

    def release(self) -> list[FileItem]:
        held = self.batcher.holding()
        for item in held:
            self.drop(item)
        return held

    def _queue(self, item: FileItem, chunk: Chunk) -> None:
        self.batcher.add(item, chunk)
        if self.batcher.full:
            self._results(*self.batcher.run(self.check_device))

    def _results(self, ready: list[tuple[FileItem, Transcript]],
                 failures: list[tuple[FileItem, Exception]]) -> None:
        for item, transcript in ready:
            self.publish(item, transcript)
        for item, exc in failures:
            log.error("transcription of %s failed: %s", item.file.uri, exc)
            self.joiners.pop(id(item), None)
            self.publish(item, transcription_failure(exc))
