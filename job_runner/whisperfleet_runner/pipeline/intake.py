"""Fetch, decode and cut: turn input files into what the model stage eats, as a stream of events.

For each file, `Intake.events` confines its output keys, skips it when its outputs exist,
then streams it: bytes read in ranges (storage.open_input), decoded block by block
(audio.open_stream) and cut at silence into windows (speech_chunks.cut_windows). A short
file comes whole instead (`Clip`), for packing. Nothing here holds more than a window of one
file's samples, whatever its length (see events for what is yielded).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator

from whisperfleet_runner import storage
from whisperfleet_runner.contract import JobOptions, Reason
from whisperfleet_runner.decode import packing
from whisperfleet_runner.media import audio
from whisperfleet_runner.media.speech_chunks import cut_windows
from whisperfleet_runner.pipeline.events import (
    FLUSH,
    Clip,
    Closed,
    Event,
    FileItem,
    Opened,
    Part,
    Settled,
)
from whisperfleet_runner.pipeline.failures import (
    FileFailed,
    StoreHealth,
    fail,
    storage_failure,
)
from whisperfleet_runner.pipeline.ledger import FAILED, SKIPPED, LedgerRecord

log = logging.getLogger(__name__)


class Intake:
    """The events of a run's files. Storage failures are told to `store` (so the run can
    stop when the store itself is gone); once it is lost, files fail at once."""

    def __init__(self, options: JobOptions, store: StoreHealth, *, shard: int, device: str,
                 gpu: str) -> None:
        self.options, self.store = options, store
        self.shard, self.device, self.gpu = shard, device, gpu
        self.claimed: dict[str, str] = {}  # output uri -> the input that owns it in this run

    def events(self, files: Iterable[storage.InputFile | object]) -> Iterator[Event]:
        """Each file's events, in order; anything in `files` that is not a file (the
        fleet's FLUSH) is passed on as FLUSH."""
        for file in files:
            if not isinstance(file, storage.InputFile):
                yield FLUSH
                continue
            item, settled = self._item(file)
            if settled:
                yield Settled(item)
            else:
                yield from self._stream(item)

    def _item(self, file: storage.InputFile) -> tuple[FileItem, bool]:
        """The file's item, its outputs confined and claimed, and whether it is settled
        already: skipped (its outputs exist) or failed before any audio is read."""
        item = FileItem(file, LedgerRecord(uri=file.uri, key=file.key, status=FAILED,
                                           shard=self.shard, device=self.device,
                                           gpu=self.gpu))
        try:
            item.outputs = _output_uris(file, self.options)
            _claim(file, item.outputs, self.claimed)
            item.record.outputs = list(item.outputs.values())
            lost = self.store.failure()
            if lost is not None:
                raise lost
            if not self.options.output.overwrite and _done(file, item.record.outputs):
                item.record.status, item.record.reason = SKIPPED, "outputs exist"
                log.info("%s: skipped, its outputs exist", file.uri)
                return item, True
        except FileFailed as exc:
            self.store.note(file.uri, exc)
            fail(item.record, exc)
            return item, True
        return item, False

    def _stream(self, item: FileItem) -> Iterator[Event]:
        file, options = item.file, self.options
        opened = False
        try:
            with storage.open_input(file.uri) as source, audio.open_stream(
                    source, file.key or file.uri,
                    keep_partial=options.output.keep_partial) as stream:
                blocks = iter(stream)
                first = next(blocks)  # a stream without samples raises instead
                second = next(blocks, None)
                if second is None and packing.is_short(audio.duration(first)):
                    item.seconds, item.damage = stream.seconds, stream.damage
                    yield Clip(item, first)
                    return
                opened = True
                yield Opened(item)
                rest = itertools.chain([first], [] if second is None else [second], blocks)
                for window in cut_windows(rest, vad=options.transcription.vad_filter):
                    yield Part(item, window)
                item.seconds, item.damage = stream.seconds, stream.damage
            yield Closed(item)
        except (storage.StorageError, audio.BadMediaError) as exc:
            failure = (storage_failure("reading the input", exc)
                       if isinstance(exc, storage.StorageError)
                       else FileFailed(Reason.BAD_MEDIA, f"bad media: {exc.reason}"))
            self.store.note(file.uri, failure)
            if opened:
                yield Closed(item, failure)
            else:
                fail(item.record, failure)
                yield Settled(item)


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
