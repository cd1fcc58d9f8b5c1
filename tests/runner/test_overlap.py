"""Prefetcher and Publisher: order, overlap, bounded memory, errors, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from whisperfleet_runner.pipeline.overlap import Inline, Prefetcher, Publisher

DEADLINE = 10.0


def wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_results_come_in_order() -> None:
    with Prefetcher(range(50), lambda i: i * i) as prefetcher:
        assert list(prefetcher) == [i * i for i in range(50)]


def test_work_runs_ahead_of_the_consumer() -> None:
    produced: list[int] = []

    def produce(i: int) -> int:
        produced.append(i)
        return i

    with Prefetcher(range(10), produce, max_items=4) as prefetcher:
        items = iter(prefetcher)
        assert next(items) == 0
        # While the consumer holds item 0, the next ones are decoded in the background.
        wait_for(lambda: len(produced) >= 4, "read-ahead")
        assert list(items) == list(range(1, 10))


def test_memory_budget_bounds_the_read_ahead() -> None:
    produced: list[int] = []

    def produce(i: int) -> bytes:
        produced.append(i)
        return bytes(100)

    with Prefetcher(range(20), produce, size_of=len, max_items=100, max_bytes=350) as pre:
        items = iter(pre)
        next(items)
        wait_for(lambda: pre.waiting_bytes >= 300, "the budget to fill")
        time.sleep(0.2)  # give a runaway producer the chance to overshoot (none must)
        assert pre.waiting_bytes <= 350
        assert len(produced) <= 1 + 3 + 1  # taken, waiting, and one blocked in hand
        assert len(list(items)) == 19


def test_an_item_larger_than_the_budget_still_passes() -> None:
    with Prefetcher(range(3), lambda i: bytes(1000), size_of=len, max_bytes=10) as pre:
        assert [len(x) for x in pre] == [1000] * 3


def test_errors_surface_at_their_position() -> None:
    def produce(i: int) -> int:
        if i == 2:
            raise ValueError("bad item 2")
        return i

    with Prefetcher(range(5), produce) as prefetcher:
        items = iter(prefetcher)
        assert [next(items), next(items)] == [0, 1]
        with pytest.raises(ValueError, match="bad item 2"):
            next(items)


def test_failing_input_iterator_is_reported() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise OSError("listing broke")

    with Prefetcher(source(), lambda i: i) as prefetcher, pytest.raises(OSError, match="listing"):
        list(prefetcher)


def test_close_stops_the_producer_early() -> None:
    produced: list[int] = []
    prefetcher = Prefetcher(range(10_000), lambda i: produced.append(i) or i, max_items=2)
    next(iter(prefetcher))
    prefetcher.close()
    count = len(produced)
    assert count < 100
    time.sleep(0.1)
    assert len(produced) == count


def test_publisher_runs_jobs_in_order_off_the_calling_thread() -> None:
    caller = threading.get_ident()
    seen: list[tuple[int, int]] = []
    with Publisher() as publisher:
        futures = [publisher.submit(lambda i=i: seen.append((i, threading.get_ident())) or i)
                   for i in range(20)]
    assert [f.result() for f in futures] == list(range(20))
    assert [i for i, _ in seen] == list(range(20))
    assert all(thread != caller for _, thread in seen)


def test_publisher_queue_is_bounded() -> None:
    gate = threading.Event()
    publisher = Publisher(max_pending=2)
    publisher.submit(gate.wait)  # occupies the worker
    publisher.submit(lambda: None)
    publisher.submit(lambda: None)  # the queue is now full
    blocked = threading.Thread(target=lambda: publisher.submit(lambda: None))
    blocked.start()
    blocked.join(timeout=0.2)
    assert blocked.is_alive(), "submit must wait while the queue is full"
    gate.set()
    blocked.join(timeout=DEADLINE)
    assert not blocked.is_alive()
    publisher.close()


def test_publisher_and_inline_report_failures_in_the_future() -> None:
    def boom() -> None:
        raise RuntimeError("disk full")

    with Publisher() as publisher:
        future = publisher.submit(boom)
    with pytest.raises(RuntimeError, match="disk full"):
        future.result()
    with pytest.raises(RuntimeError, match="disk full"):
        Inline().submit(boom).result()


def test_a_long_recordings_windows_wait_one_at_a_time_in_the_read_ahead() -> None:
    """A streamed file's later windows weigh the whole budget (events.size_of): one waits at
    a time, so a recording of any length does not keep 32 MiB of windows beside the model
    for its whole length; its first window, and short clips, still queue by their bytes. All
    of them still come through, in order."""
    import numpy as np

    from whisperfleet_runner.media.speech_chunks import Window
    from whisperfleet_runner.pipeline.events import Clip, Closed, FileItem, Opened, Part, size_of
    from whisperfleet_runner.pipeline.ledger import LedgerRecord
    from whisperfleet_runner.pipeline.overlap import DEFAULT_PREFETCH_BYTES
    from whisperfleet_runner.storage import InputFile

    def item(key: str) -> FileItem:
        return FileItem(InputFile(uri=f"/in/{key}", key=key, size=1),
                        LedgerRecord(uri=f"/in/{key}", key=key, status="failed"))

    window = 100 * 16000  # samples: 6.4 MB, five fit in the budget
    talk, clip = item("talk.mp3"), item("clip.wav")
    events = [Clip(clip, np.zeros(16000, np.float32)), Opened(talk),
              *[Part(talk, Window(n * window, np.zeros(window, np.float32)))
                for n in range(6)], Closed(talk)]
    weights = [size_of(e) for e in events]
    assert weights[0] == 64000 and weights[2] == window * 4
    assert all(w > DEFAULT_PREFETCH_BYTES for w in weights[3:8])
    with Prefetcher(events, lambda e: e, size_of=size_of) as prefetcher:
        assert list(prefetcher) == events
