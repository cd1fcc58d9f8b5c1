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
from typing import Any

from whisperfleet_runner import audio, formats, storage
from whisperfleet_runner.config import Reason
from whisperfleet_runner.ledger import SUCCEEDED, LedgerRecord
from whisperfleet_runner.prepare import FileFailed, Prepared, failed, storage_failure
from whisperfleet_runner.transcript import Transcript

log = logging.getLogger(__name__)

Finish = Callable[[LedgerRecord], None]


class Outbox:
    """`publisher` runs the writes (overlap.Publisher or Inline); `note` hears of storage
    failures, and `lost()` says when the store is gone (writes then fail at once)."""

    def __init__(self, formats_: Sequence[str], publisher: Any,
                 note: Callable[[str, FileFailed], None],
                 lost: Callable[[], FileFailed | None]) -> None:
        self.formats, self.publisher, self.note, self.lost = formats_, publisher, note, lost
        self.pending: list[tuple[Prepared, Future[float]]] = []

    def send(self, item: Prepared, result: Transcript | FileFailed) -> None:
        if item.closed:
            return
        item.closed = True
        if item.samples is not None:
            item.seconds = item.seconds or audio.duration(item.samples)
        item.samples = None  # decoded audio is large; the transcript is all that is needed now

        def write() -> float:
            if isinstance(result, FileFailed):
                raise result
            lost = self.lost()
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
                self.note(item.file.uri, failure)
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
                failed(item.record, exc)
            except Exception as exc:  # a renderer bug must still end in a record
                log.exception("publishing %s failed", item.file.uri)
                failed(item.record, FileFailed(
                    Reason.TRANSCRIPTION_FAILED,
                    f"writing outputs failed: {type(exc).__name__}: {exc}"))
            _record(item, finish)

    def close(self, item: Prepared, finish: Finish) -> None:
        """Record a file that ends without publishing (skipped, or failed before)."""
        item.closed = True
        _record(item, finish)


def _record(item: Prepared, finish: Finish) -> None:
    item.record.wall_seconds = time.monotonic() - item.started
    item.record.time = time.time()
    finish(item.record)
