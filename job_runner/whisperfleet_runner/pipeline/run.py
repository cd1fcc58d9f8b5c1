"""Transcribe a stream of files into their outputs, on one device: the loop every run uses.

`run_files` (no click, no environment) strings the stages together: the intake (fetch,
decode, cut) runs ahead on a background thread, the router hands each file's audio to its
lane on this thread, and the outbox renders and publishes behind the model, recording each
file once. One bad file never stops the others. A single-device pod runs it in-process; the
fleet's scheduler runs it in one worker per device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from whisperfleet_runner import storage
from whisperfleet_runner.contract import GpuIdentity, JobOptions, Reason, ShardReport
from whisperfleet_runner.decode.lazy_engine import EngineGetter, EngineLoadError, LazyEngine
from whisperfleet_runner.gpu.nvml import GpuLost
from whisperfleet_runner.pipeline.events import Event, Flush, size_of
from whisperfleet_runner.pipeline.failures import FileFailed, StoreHealth, StoreLost
from whisperfleet_runner.pipeline.intake import Intake
from whisperfleet_runner.pipeline.ledger import LedgerRecord, LedgerWriter
from whisperfleet_runner.pipeline.outbox import Outbox
from whisperfleet_runner.pipeline.overlap import (
    DEFAULT_PREFETCH_BYTES,
    Inline,
    Prefetcher,
    Publisher,
)
from whisperfleet_runner.pipeline.router import Router

log = logging.getLogger(__name__)

Progress = Callable[[LedgerRecord], None]


def run_files(
    files: Iterable[storage.InputFile | Flush],  # FLUSH: transcribe what is held now
    options: JobOptions,
    get_engine: EngineGetter,
    *,
    ledger: LedgerWriter | None = None,
    shard: int = 0,
    device: str = "",
    gpus: list[GpuIdentity] | None = None,
    progress: Progress | None = None,
    overlap: bool = True,
    prefetch_bytes: int = DEFAULT_PREFETCH_BYTES,
    check_device: Callable[[], None] | None = None,
) -> ShardReport:
    """Transcribe `files` as `options` say; every file attempted ends in one ledger record.

    Files are read, decoded and cut into windows as a stream (see intake), so a file of any
    length holds bounded memory; each goes to its lane (see lanes): chunks of consecutive
    files fill each batch, short files are packed into shared windows when the options
    allow, or files go one by one (sequential mode). With `overlap`, reading and decoding
    run ahead (up to `prefetch_bytes` of samples) and finished transcripts are published on
    background threads while the model works. Records may therefore arrive out of input
    order, and several files are taken from `files` before the first one is recorded.

    When the model cannot be loaded, or `check_device` (called before each inference)
    raises GpuLost, the loop stops: the report's error_reason says why, files in the
    model's hands fail, and the files not started get no record (a retry, or another
    worker, does them). So it does when a file fails because the store itself is gone
    (`storage.store_lost`): files then fail at once instead of after retries of their own.
    """
    started = time.monotonic()
    report = ShardReport(shard=shard, device=device, gpus=list(gpus or []))
    publisher = Publisher() if overlap else Inline()
    store = StoreHealth()
    outbox = Outbox(options.output.formats, publisher, store)
    router = Router(options, LazyEngine(get_engine, options.transcription), outbox, store,
                    check_device or (lambda: None))
    intake = Intake(options, store, shard=shard, device=device,
                    gpu=gpus[0].uuid if gpus and len(gpus) == 1 else "")

    def finish(record: LedgerRecord) -> None:
        report.add(record)
        if ledger is not None:
            ledger.add(record)
        if progress is not None:
            progress(record)

    events: Iterable[Event]
    prefetcher: Prefetcher[Event] | None = None
    if overlap:
        # One file is many events (its chunks): room for three batches of them ahead.
        ahead = 3 * max(1, options.transcription.batch_size) + 4
        prefetcher = Prefetcher(intake.events(files), lambda event: event, size_of=size_of,
                                max_bytes=prefetch_bytes, max_items=ahead)
        events = prefetcher
    else:
        events = intake.events(files)
    try:
        for event in events:
            router.handle(event, finish)
            outbox.drain(finish, wait=False)
            if store.lost is not None:
                raise store.lost
        router.flush()
    except EngineLoadError as exc:
        report.error_reason, report.error_message = exc.reason, str(exc)
        log.error("%s", exc)
    except GpuLost as exc:
        report.error_reason, report.error_message = Reason.GPU_LOST.value, str(exc)
        log.error("%s; the files in its hands fail and will be retried", exc)
        router.fail_held(FileFailed(Reason.GPU_LOST, f"{exc}; retried by the next attempt"),
                         finish)
    except StoreLost as exc:
        report.error_reason, report.error_message = exc.failure.code.value, str(exc)
        log.error("%s", exc)
        router.fail_held(exc.failure, finish)
    finally:
        if prefetcher is not None:
            prefetcher.close()
        publisher.close()
        outbox.drain(finish, wait=True)
        if ledger is not None:
            ledger.close()
        report.wall_seconds = time.monotonic() - started
    if store.lost is not None and not report.error_reason:  # lost as the last files were written
        report.error_reason, report.error_message = store.lost.failure.code.value, str(store.lost)
    return report
