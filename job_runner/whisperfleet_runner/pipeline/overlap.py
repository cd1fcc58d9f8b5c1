"""Keep the model busy: fetch and decode ahead, publish behind, within a memory budget.

`Prefetcher` runs a producer (read + decode) in a background thread and hands its results
over through a queue bounded both in items and in bytes: a shard of long talks must not
decode itself into RAM faster than the model can eat it. `Publisher` renders and writes
finished transcripts on a background thread, so storage latency (S3 PUTs) overlaps the next
inference; its queue is bounded too, so a slow store applies back-pressure instead of
piling up transcripts.

PyAV (FFmpeg), numpy and CTranslate2 release the GIL while they work, so one extra thread
per stage is enough to hide I/O and decoding behind inference.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_PREFETCH_ITEMS = 16
# Decoded audio is 64 KB per second (16 kHz float32): 32 MiB is about 8 minutes ahead, which
# hides a read and a decode behind inference. More only holds more of a long recording: with
# 256 MiB a pod's read-ahead grew with the recording up to about 70 minutes of it. Within a
# long recording the run's events weigh its later windows as the whole budget (events.size_of).
DEFAULT_PREFETCH_BYTES = 32 * 1024 * 1024
DEFAULT_PUBLISH_QUEUE = 8
# How soon a consumer waiting for the next item notices `give_up`.
WAKE_SECONDS = 0.2
_DONE = object()


class Prefetcher(Generic[T]):
    """Iterate `produce(item)` for each item, computed ahead by one background thread.

    At most `max_items` results wait in the queue, and the producer stops while the waiting
    results weigh more than `max_bytes` (by `size_of`); one result larger than the budget
    still passes, alone. Results come out in input order. An exception raised by `produce`
    or by iterating `items` is re-raised by the consumer at that position. Closing (or
    leaving a `with` block) stops the producer after its current item. Iteration ends
    early, within WAKE_SECONDS, once `give_up()` is true: a consumer waiting for an item
    the producer is still fetching (retrying a store that is gone) stops waiting.
    """

    def __init__(
        self,
        items: Iterable[T],
        produce: Callable[[T], R],
        *,
        size_of: Callable[[R], int] = lambda _: 0,
        max_items: int = DEFAULT_PREFETCH_ITEMS,
        max_bytes: int = DEFAULT_PREFETCH_BYTES,
        give_up: Callable[[], bool] = lambda: False,
    ) -> None:
        self._items = items
        self._produce = produce
        self._size_of = size_of
        self._give_up = give_up
        self._max_bytes = max_bytes
        self._queue: queue.Queue[tuple[object, int, BaseException | None]] = queue.Queue(
            max(1, max_items)
        )
        self._cond = threading.Condition()
        self._waiting_bytes = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="whisperfleet-prefetch",
                                        daemon=True)
        self._thread.start()

    @property
    def waiting_bytes(self) -> int:
        """Bytes of produced results not yet taken by the consumer."""
        with self._cond:
            return self._waiting_bytes

    def _run(self) -> None:
        try:
            for item in self._items:
                if self._closed.is_set():
                    return
                try:
                    result = self._produce(item)
                    size = int(self._size_of(result))
                    error = None
                except BaseException as exc:  # handed to the consumer, in order
                    result, size, error = None, 0, exc
                with self._cond:
                    # Wait for room; an empty queue always admits one result (any size).
                    while (self._waiting_bytes > 0
                           and self._waiting_bytes + size > self._max_bytes
                           and not self._closed.is_set()):
                        self._cond.wait(0.5)
                    self._waiting_bytes += size
                if not self._put((result, size, error)):
                    return
        except BaseException as exc:  # iterating `items` failed
            self._put((None, 0, exc))
        self._put((_DONE, 0, None))

    def _put(self, entry: tuple[object, int, BaseException | None]) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(entry, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[R]:
        while True:
            try:
                result, size, error = self._queue.get(timeout=WAKE_SECONDS)
            except queue.Empty:
                if self._give_up():
                    return
                continue
            if result is _DONE:
                return
            with self._cond:
                self._waiting_bytes -= size
                self._cond.notify_all()
            if error is not None:
                raise error
            yield result  # type: ignore[misc]

    def close(self, *, wait: bool = True) -> None:
        """Stop the producer; with `wait`, wait (up to 30 s) for its current item. Without,
        an item it is still fetching is abandoned (its thread is a daemon)."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
        if wait:
            self._thread.join(timeout=30)

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Publisher:
    """Run jobs (render + write) on one background thread, behind a bounded queue.

    `submit` blocks while `max_pending` jobs wait, so memory stays bounded when storage is
    slower than the model. Jobs run in submission order; each returns a Future.
    """

    def __init__(self, max_pending: int = DEFAULT_PUBLISH_QUEUE) -> None:
        self._queue: queue.Queue[tuple[Callable[[], object], Future[object]] | None] = (
            queue.Queue(max(1, max_pending))
        )
        self._thread = threading.Thread(target=self._run, name="whisperfleet-publish",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            fn, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # the submitter decides what a failure means
                future.set_exception(exc)

    def submit(self, fn: Callable[[], R]) -> Future[R]:
        future: Future[R] = Future()
        self._queue.put((fn, future))  # type: ignore[arg-type]
        return future

    def close(self, *, wait: bool = True) -> None:
        """Finish the queued jobs, then stop the thread. Without `wait`, return at once: the
        queued jobs still run (their futures say how they ended), a job still running is
        abandoned with its thread (a daemon)."""
        if wait:
            self._queue.put(None)
            self._thread.join()
            return
        with contextlib.suppress(queue.Full):  # full: the thread is busy, and stays a daemon
            self._queue.put_nowait(None)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Inline:
    """A Publisher that runs each job at once, in the caller's thread (no overlap)."""

    def submit(self, fn: Callable[[], R]) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self, *, wait: bool = True) -> None:
        pass
