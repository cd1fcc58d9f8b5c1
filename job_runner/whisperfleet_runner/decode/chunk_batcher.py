"""Fill every batch with chunks of several files, and put each file's transcript together.

faster-whisper fills a batch with the chunks of one file, so a 30 s talk (one or two
chunks) runs a batch of 8 mostly empty. Here chunks (speech_chunks) from consecutive files
wait in one queue, and a batch runs as soon as `batch_size` of them wait, whichever files
they come from. A file's transcript is ready as soon as its last chunk is decoded, so it can
be published at once instead of when its batch's neighbours finish. The queue never holds
more than a batch of chunks, so memory does not grow with files or their length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from whisperfleet_runner.contract import TranscriptionOptions
from whisperfleet_runner.contract.transcript import Segment, Transcript
from whisperfleet_runner.decode.chunk_decode import Item
from whisperfleet_runner.decode.protocols import ChunkDecoding
from whisperfleet_runner.media.audio import duration
from whisperfleet_runner.media.speech_chunks import Chunk, speech_chunks

log = logging.getLogger(__name__)


Owner = TypeVar("Owner", bound=Hashable)  # the caller's handle for a file


@dataclass(eq=False)
class _File(Generic[Owner]):
    owner: Owner
    source: str
    language: str = ""  # "" until known
    probability: float = 1.0
    segments: dict[int, list[Segment]] = field(default_factory=dict)
    received: int = 0  # chunks given
    ended: bool = False
    seconds: float = 0.0
    last_speech: float = 0.0  # word alignment's memory, across this file's batches


class ChunkBatcher(Generic[Owner]):
    """Chunks in, per-file transcripts out, through `engine`'s chunk decoding."""

    def __init__(self, engine: ChunkDecoding, options: TranscriptionOptions) -> None:
        self.engine, self.options = engine, options
        self.batch_size = max(1, options.batch_size)
        self._files: dict[int, _File[Owner]] = {}
        self._queue: list[tuple[_File[Owner], int, Chunk]] = []

    @property
    def full(self) -> bool:
        return len(self._queue) >= self.batch_size

    def holding(self) -> list[Owner]:
        """The files in hand (started, not yet returned)."""
        return [f.owner for f in self._files.values()]

    def start(self, owner: Owner, source: str) -> None:
        language = self.options.language or ""
        if not self.engine.multilingual:
            language = "en"  # what faster-whisper does with an English-only model
        self._files[id(owner)] = _File(owner, source, language)

    def add(self, owner: Owner, chunk: Chunk) -> None:
        file = self._files[id(owner)]
        self._queue.append((file, file.received, chunk))
        file.received += 1

    def end(self, owner: Owner, seconds: float) -> list[tuple[Owner, Transcript]]:
        """No more chunks for `owner`; its transcript if every chunk is already decoded."""
        file = self._files[id(owner)]
        file.ended, file.seconds = True, seconds
        return self._collect([file])

    def drop(self, owner: Owner) -> None:
        """Forget a file (it failed elsewhere): its queued chunks are not decoded."""
        file = self._files.pop(id(owner), None)
        self._queue = [q for q in self._queue if q[0] is not file]

    def run(self, check: Callable[[], None] = lambda: None
            ) -> tuple[list[tuple[Owner, Transcript]], list[tuple[Owner, Exception]]]:
        """Decode one batch (the first `batch_size` queued chunks). An error fails only the
        files whose chunk caused it: the batch is retried a chunk at a time."""
        batch, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size:]
        if not batch:
            return [], []
        check()  # GpuLost stops the run with the chunks still in hand
        failed: list[tuple[Owner, Exception]] = []
        try:
            self._decode(batch)
        except Exception as exc:
            if len(batch) == 1:
                failed.append((batch[0][0].owner, exc))
                self._forget(batch[0][0])
            else:
                log.warning("a batch of %d chunks failed (%s); decoding them one at a time",
                            len(batch), exc)
                for entry in batch:
                    if id(entry[0].owner) not in self._files:
                        continue  # failed with an earlier chunk
                    try:
                        self._decode([entry])
                    except Exception as one:
                        failed.append((entry[0].owner, one))
                        self._forget(entry[0])
        files = list(dict.fromkeys(f for f, _, _ in batch if id(f.owner) in self._files))
        return self._collect(files), failed

    def run_all(self, check: Callable[[], None] = lambda: None
                ) -> tuple[list[tuple[Owner, Transcript]], list[tuple[Owner, Exception]]]:
        ready: list[tuple[Owner, Transcript]] = []
        failed: list[tuple[Owner, Exception]] = []
        while self._queue:
            done, lost = self.run(check)
            ready += done
            failed += lost
        return ready, failed

    def _decode(self, batch: list[tuple[_File[Owner], int, Chunk]]) -> None:
        decoder = self.engine.chunk_decoder()
        features = [decoder.features(chunk) for _, _, chunk in batch]
        for file in dict.fromkeys(f for f, _, _ in batch):
            if not file.language:
                # The pipeline's rule: the language of the file's first 30 s of speech, here
                # the first chunks in hand (a chunk is at most 30 s).
                mine = [x for (f, _, _), x in zip(batch, features, strict=True) if f is file]
                file.language, file.probability = decoder.detect_language(
                    mine, self.options.language_candidates)
        items = [Item(chunk, x, f.language, f.owner, f.last_speech)
                 for (f, _, chunk), x in zip(batch, features, strict=True)]
        results = self.engine.decode_chunks(items, self.options, batch[0][0].source)
        for (file, index, _), item, segments in zip(batch, items, results, strict=True):
            file.segments[index] = segments
            file.last_speech = item.last_speech

    def _forget(self, file: _File[Owner]) -> None:
        self._files.pop(id(file.owner), None)
        self._queue = [q for q in self._queue if q[0] is not file]

    def _collect(self, files: list[_File[Owner]]) -> list[tuple[Owner, Transcript]]:
        ready = []
        for file in files:
            if file.ended and len(file.segments) == file.received:
                del self._files[id(file.owner)]
                ready.append((file.owner, self._transcript(file)))
        return ready

    def _transcript(self, file: _File[Owner]) -> Transcript:
        segments = [s for n in range(file.received) for s in file.segments[n]]
        for number, segment in enumerate(segments, 1):
            segment.id = number
        return Transcript(
            source=file.source, language=file.language or "en",
            language_probability=file.probability, duration=file.seconds,
            model=self.engine.options.name, compute_type=self.engine.compute_type,
            device=self.engine.device_label, segments=segments,
        )


def transcribe_file(engine: ChunkDecoding, audio: np.ndarray, source: str,
                    options: TranscriptionOptions) -> Transcript:
    """`audio` transcribed alone as faster-whisper's batched mode would: its chunks in
    batches of `options.batch_size` (1: the engine's sequential mode instead)."""
    if options.batch_size <= 1:
        return engine.transcribe(audio, source, options)
    batcher: ChunkBatcher[str] = ChunkBatcher(engine, options)
    batcher.start(source, source)
    for chunk in speech_chunks([audio], vad=options.vad_filter):
        batcher.add(source, chunk)
    ready = batcher.end(source, duration(audio))
    done, failed = batcher.run_all()
    if failed:
        raise failed[0][1]
    return (ready or done)[0][1]
