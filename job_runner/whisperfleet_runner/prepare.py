"""Turn input files into what the model eats: fetch, decode and cut, as a stream of events.

For each file, `Intake.events` confines its output keys, skips it when its outputs exist,
then streams it: bytes read in ranges (storage.open_input), decoded block by block
(audio.open_stream) and cut into chunks (speech_chunks) or, for the sequential mode, windows.
The events are the file (`Prepared`), its pieces (`Piece`), then its end (`End`), which
carries a failure found late (damaged media is only known once decoding ends, a store can
fail mid-file). A short file comes whole instead (`Prepared.samples`), for packing. Nothing
here holds more than a window of one file's samples, whatever its length.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from whisperfleet_runner import audio, packing, storage
from whisperfleet_runner.config import JobOptions, Reason
from whisperfleet_runner.ledger import FAILED, SKIPPED, LedgerRecord
from whisperfleet_runner.speech_chunks import Chunk, Window, cut_windows, speech_chunks

log = logging.getLogger(__name__)


class FileFailed(Exception):
    """One file failed: `code` says why for programs, the message for people."""

    def __init__(self, code: Reason, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(eq=False)
class Prepared:
    """A file after the I/O stage: finished (skipped/failed), whole short samples, or the
    head of a stream of pieces (`streamed`)."""

    file: storage.InputFile
    record: LedgerRecord
    started: float
    outputs: dict[str, str] = field(default_factory=dict)
    samples: np.ndarray | None = None
    streamed: bool = False
    seconds: float = 0.0  # decoded audio, once known
    damage: str = ""  # what its damaged media lost, when kept in part (keep_partial)
    closed: bool = False  # its record is written: later events for it are ignored

    @property
    def todo(self) -> bool:
        return self.samples is not None or self.streamed


@dataclass
class Piece:
    """A chunk (batched mode) or a window (sequential mode) of a streamed file."""

    item: Prepared
    chunk: Chunk | None = None
    window: Window | None = None

    @property
    def nbytes(self) -> int:
        part = self.chunk or self.window
        return part.samples.nbytes if part is not None else 0


@dataclass
class End:
    """A streamed file has no more pieces; `failure` when it failed after all."""

    item: Prepared
    failure: FileFailed | None = None


Event = Prepared | Piece | End | None  # None: FLUSH passed through


def size_of(event: Event) -> int:
    """Bytes of samples an event holds (the prefetch budget)."""
    if isinstance(event, Piece):
        return event.nbytes
    if isinstance(event, Prepared) and event.samples is not None:
        return event.samples.nbytes
    return 0


class Intake:
    """The events of a run's files; `noted(uri, failure)` hears of every storage failure
    (so the run can stop when the store itself is gone)."""

    def __init__(self, options: JobOptions, *, shard: int, device: str, gpu: str,
                 noted: Callable[[str, FileFailed], None],
                 lost: Callable[[], FileFailed | None]) -> None:
        self.options, self.shard, self.device, self.gpu = options, shard, device, gpu
        self.noted, self.lost = noted, lost
        self.claimed: dict[str, str] = {}  # output uri -> the input that owns it in this run

    def events(self, files: Iterable[storage.InputFile | object]) -> Iterator[Event]:
        for file in files:
            if not isinstance(file, storage.InputFile):
                yield None
                continue
            item, finished = self._head(file)
            if finished:  # skipped, or failed before reading
                yield item
            else:
                yield from self._stream(item)

    def _head(self, file: storage.InputFile) -> tuple[Prepared, bool]:
        item = Prepared(file, LedgerRecord(uri=file.uri, key=file.key, status=FAILED,
                                           shard=self.shard, device=self.device,
                                           gpu=self.gpu), time.monotonic())
        try:
            item.outputs = _output_uris(file, self.options)
            _claim(file, item.outputs, self.claimed)
            item.record.outputs = list(item.outputs.values())
            lost = self.lost()
            if lost is not None:
                raise lost
            if not self.options.output.overwrite and _done(file, item.record.outputs):
                item.record.status, item.record.reason = SKIPPED, "outputs exist"
                log.info("%s: skipped, its outputs exist", file.uri)
                return item, True
        except FileFailed as exc:
            self.noted(file.uri, exc)
            failed(item.record, exc)
            return item, True
        return item, False

    def _stream(self, item: Prepared) -> Iterator[Event]:
        file, options = item.file, self.options
        sequential = options.transcription.batch_size <= 1
        try:
            with storage.open_input(file.uri) as source, audio.open_stream(
                    source, file.key or file.uri,
                    keep_partial=options.output.keep_partial) as stream:
                blocks = iter(stream)
                first = next(blocks)  # a stream without samples raises instead
                second = next(blocks, None)
                if second is None and packing.is_short(audio.duration(first)):
                    item.samples, item.seconds, item.damage = first, stream.seconds, stream.damage
                    yield item
                    return
                item.streamed = True
                yield item
                rest = itertools.chain([first], [] if second is None else [second], blocks)
                vad = options.transcription.vad_filter
                if sequential:
                    for window in cut_windows(rest, vad=vad):
                        yield Piece(item, window=window)
                else:
                    for chunk in speech_chunks(rest, vad=vad):
                        yield Piece(item, chunk=chunk)
                item.seconds, item.damage = stream.seconds, stream.damage
            yield End(item)
        except (storage.StorageError, audio.BadMediaError) as exc:
            failure = (storage_failure("reading the input", exc)
                       if isinstance(exc, storage.StorageError)
                       else FileFailed(Reason.BAD_MEDIA, f"bad media: {exc.reason}"))
            self.noted(file.uri, failure)
            if item.streamed:
                yield End(item, failure)
            else:
                failed(item.record, failure)
                yield item


def _output_uris(file: storage.InputFile, options: JobOptions) -> dict[str, str]:
    try:
        return dict(storage.output_uris(file.key, options.output.uri, options.output.formats))
    except storage.UnsafeKeyError as exc:
        raise FileFailed(Reason.UNSAFE_KEY, str(exc)) from exc


def _claim(file: storage.InputFile, outputs: dict[str, str], claimed: dict[str, str]) -> None:
    """Refuse a file whose outputs belong to an earlier file of this run (talk.wav/talk.mp3):
    it would overwrite them, or be skipped as if it were done."""
    owner = next((claimed[u] for u in outputs.values() if u in claimed), None)
    if owner is not None and owner != file.uri:
        raise FileFailed(
            Reason.OUTPUT_COLLISION,
            f"output collision: its outputs ({next(iter(outputs.values()))} …) are those of "
            f"{owner}; rename one of the two",
        )
    claimed.update(dict.fromkeys(outputs.values(), file.uri))


def _done(file: storage.InputFile, uris: list[str]) -> bool:
    """Whether every output of the file exists: as a listing already saw it (the planner's
    manifest, the local run's listing of the output), else asked of the store (a HEAD each)."""
    if file.done is not None:
        return file.done
    try:
        return storage.outputs_exist(uris)
    except storage.StorageError as exc:
        raise storage_failure("checking outputs", exc) from exc


def storage_failure(action: str, exc: storage.StorageError) -> FileFailed:
    return FileFailed(exc.reason, f"storage error {action} ({exc.reason}): {exc}")


def failed(record: LedgerRecord, exc: FileFailed) -> None:
    record.status, record.code, record.reason = FAILED, exc.code.value, str(exc)
    log.warning("%s failed: %s", record.uri, record.reason)
