"""Publish finished transcripts behind the model, and record each file once, in order.

`send` hands a file's transcript (or its failure) to the publisher thread: render every
format, then write them as a complete-or-absent set (json last). `drain` turns finished
writes into ledger records, in the order they were sent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from whisperfleet_runner import storage
from whisperfleet_runner.contract import Reason
from whisperfleet_runner.contract.transcript import Transcript
from whisperfleet_runner.pipeline import formats
from whisperfleet_runner.pipeline.events import FileItem
from whisperfleet_runner.pipeline.failures import (
    FileFailed,
    StoreHealth,
    fail,
    storage_failure,
)
from whisperfleet_runner.pipeline.ledger import SUCCEEDED, LedgerRecord
from whisperfleet_runner.pipeline.overlap import Inline, Publisher

log = logging.getLogger(__name__)

Finish = Callable[[LedgerRecord], None]


class Outbox:
    """`publisher` runs the writes (in the background, or inline); storage failures are told
    to `store`, and once the store is lost, writes fail at once."""

    def __init__(self, formats_: Sequence[str], publisher: Publisher | Inline,
                 store: StoreHealth) -> None:
        self.formats, self.publisher, self.store = formats_, publisher, store
        self.pending: list[tuple[FileItem, Future[float]]] = []

    def send(self, item: FileItem, result: Transcript | FileFailed) -> None:
        if item.closed:
            return
        item.closed = True

        def write() -> float:
            if isinstance(result, FileFailed):
                raise result
            lost = self.store.failure()
            if lost is not None:  # would fail only after retries of its own
                raise lost
            if item.damage:
                result.partial, result.damage = True, item.damage
            rendered = formats.render_all(result, self.formats)
            try:
                # json last: a reader that sees a file's json sees its other outputs too.
                storage.publish_set({item.outputs[fmt]: text for fmt, text in rendered.items()})
            except storage.StorageError as exc:
                failure = storage_failure("writing outputs", exc)
                self.store.note(item.file.uri, failure)
                raise failure from exc
            return float(result.duration or item.seconds)

        self.pending.append((item, self.publisher.submit(write)))

    def drain(self, finish: Finish, *, wait: bool) -> None:
        """Record published files (in submission order); with `wait`, all of them."""
        while self.pending and (wait or self.pending[0][1].done()):
            item, future = self.pending.pop(0)
            try:
                item.record.audio_seconds = future.result()
                item.record.status = SUCCEEDED
                if item.damage:
                    item.record.partial, item.record.reason = True, item.damage
            except FileFailed as exc:
                fail(item.record, exc)
            except Exception as exc:  # a renderer bug must still end in a record
                log.exception("publishing %s failed", item.file.uri)
                fail(item.record, FileFailed(
                    Reason.TRANSCRIPTION_FAILED,
                    f"writing outputs failed: {type(exc).__name__}: {exc}"))
            _record(item, finish)

    def close(self, item: FileItem, finish: Finish) -> None:
        """Record a file that ends without publishing (skipped, or failed before)."""
        item.closed = True
        _record(item, finish)


def _record(item: FileItem, finish: Finish) -> None:
    item.record.wall_seconds = time.monotonic() - item.started
    item.record.time = time.time()
    finish(item.record)
