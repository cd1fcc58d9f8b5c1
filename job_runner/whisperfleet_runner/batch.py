"""Transcribe a stream of files into their outputs, on one device: the loop every run uses.

`run_files` (no click, no environment): for each file it confines the output keys, skips
files whose outputs exist, decodes, transcribes (short clips packed, see packing), renders
and publishes every format, and records the outcome. One bad file never stops the others.
A single-device pod runs it in-process; the scheduler runs it in one worker per device.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from whisperfleet_runner import audio, packing, storage
from whisperfleet_runner.chunk_batcher import ChunkBatcher
from whisperfleet_runner.config import (
    GpuIdentity,
    JobOptions,
    Reason,
    ShardReport,
)
from whisperfleet_runner.gpu.nvml import GpuLost
from whisperfleet_runner.lazy_engine import EngineGetter, EngineLoadError, LazyEngine
from whisperfleet_runner.ledger import LedgerRecord, LedgerWriter
from whisperfleet_runner.outbox import Outbox
from whisperfleet_runner.overlap import DEFAULT_PREFETCH_BYTES, Inline, Prefetcher, Publisher
from whisperfleet_runner.prepare import (
    End,
    Event,
    FileFailed,
    Intake,
    Piece,
    Prepared,
    failed,
    size_of,
)
from whisperfleet_runner.speech_chunks import Chunk, Window, speech_chunks
from whisperfleet_runner.transcript import Transcript

log = logging.getLogger(__name__)

Progress = Callable[[LedgerRecord], None]
# In the stream of files: "more may come, but transcribe the short clips held now" (a
# worker at its share of files must free its hand before taking more).
FLUSH = object()


class _StoreLost(Exception):
    """A file failed because the store itself is gone: the run stops. `failure` is what the
    files still in its hands end with."""

    def __init__(self, uri: str, cause: FileFailed) -> None:
        super().__init__(f"stopped at {uri}: {cause}; the files not done are left for a "
                         "re-run once the store is back")
        self.failure = FileFailed(cause.code, "not done: the run stopped when the storage "
                                               f"failed ({cause.code}); a re-run does it")


def run_files(
    files: Iterable[storage.InputFile | object],
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

    Files are read, decoded and cut into chunks as a stream (see prepare), so a file of any
    length holds bounded memory; chunks of consecutive files fill each batch (see
    chunk_batcher), and short files are packed into shared windows (see packing) when the
    options allow. With `overlap`, reading and decoding run ahead (up to `prefetch_bytes`
    of samples) and finished transcripts are published on background threads while the
    model works. Records may therefore arrive out of input order, and several files are
    taken from `files` before the first one is recorded.

    When the model cannot be loaded, or `check_device` (called before each inference)
    raises GpuLost, the loop stops: the report's error_reason says why, files in the
    model's hands fail, and the files not started get no record (a retry, or another
    worker, does them). So it does when a file fails because the store itself is gone
    (`storage.store_lost`): files then fail at once instead of after retries of their own.
    """
    started = time.monotonic()
    report = ShardReport(shard=shard, device=device, gpus=list(gpus or []))
    publisher = Publisher() if overlap else Inline()
    run = _Run(options, LazyEngine(get_engine, options.transcription), publisher,
               check_device=check_device)
    intake = Intake(options, shard=shard, device=device,
                    gpu=gpus[0].uuid if gpus and len(gpus) == 1 else "",
                    noted=run.note, lost=run.lost_failure)

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
        run.process(events, finish)
    except EngineLoadError as exc:
        report.error_reason, report.error_message = exc.reason, str(exc)
        log.error("%s", exc)
    except GpuLost as exc:
        report.error_reason, report.error_message = Reason.GPU_LOST.value, str(exc)
        log.error("%s; the files in its hands fail and will be retried", exc)
        run.fail_in_hands(FileFailed(Reason.GPU_LOST, f"{exc}; retried by the next attempt"),
                          finish)
    except _StoreLost as exc:
        report.error_reason, report.error_message = exc.failure.code.value, str(exc)
        log.error("%s", exc)
        run.fail_in_hands(exc.failure, finish)
    finally:
        if prefetcher is not None:
            prefetcher.close()
        publisher.close()
        run.drain(finish, wait=True)
        if ledger is not None:
            ledger.close()
        report.wall_seconds = time.monotonic() - started
    if run.lost is not None and not report.error_reason:  # lost as the last files were written
        report.error_reason, report.error_message = run.lost.failure.code.value, str(run.lost)
    return report


Finish = Callable[[LedgerRecord], None]


class _Run:
    """The model's side of run_files (main thread): packs short files, batches chunks,
    transcribes windows (sequential mode), and hands transcripts to the publisher."""

    def __init__(self, options: JobOptions, engine: LazyEngine, publisher: Any,
                 check_device: Callable[[], None] | None = None) -> None:
        self.options, self.engine = options, engine
        self.check_device = check_device or (lambda: None)
        self.current: Prepared | None = None  # in the model's hands (sequential, fallback)
        self.clips: list[Prepared] = []  # decoded short files waiting to be packed
        self.clip_seconds = 0.0
        self.batcher: ChunkBatcher | None = None  # made when the model is loaded
        self.windows: dict[int, list[Transcript]] = {}  # sequential mode: per streamed file
        # Set by whichever thread meets a failure of the store itself (storage.store_lost);
        # the others then skip their storage work, and the loop stops.
        self.lost: _StoreLost | None = None
        self.outbox = Outbox(options.output.formats, publisher, self.note, self.lost_failure)

    def note(self, uri: str, failure: FileFailed) -> None:
        if self.lost is None and storage.store_lost(failure.code):
            self.lost = _StoreLost(uri, failure)

    def lost_failure(self) -> FileFailed | None:
        return self.lost.failure if self.lost is not None else None

    def process(self, events: Iterable[Event], finish: Finish) -> None:
        for event in events:
            if event is None:  # FLUSH
                self._flush()
            elif isinstance(event, Piece):
                self._piece(event)
            elif isinstance(event, End):
                self._end(event, finish)
            elif not event.todo:
                self._done(event, finish)
            else:
                self._start(event)
            self.drain(finish, wait=False)
            if self.lost is not None:
                raise self.lost
        self._flush()

    def _model(self) -> Any:
        model = self.engine.get()  # EngineLoadError stops the run
        if self.batcher is None and hasattr(model, "decode_chunks"):
            self.batcher = ChunkBatcher(model, self.options.transcription)
        return model

    @property
    def _sequential(self) -> bool:
        return self.options.transcription.batch_size <= 1 or self.batcher is None

    def _start(self, item: Prepared) -> None:
        """A file to transcribe: whole short samples, or the head of its pieces."""
        model = self._model()
        if item.streamed:
            if self._sequential:
                self.windows[id(item)] = []
            else:
                self.batcher.start(item, item.file.uri)  # type: ignore[union-attr]
        elif self._packable(model, item.samples):  # type: ignore[arg-type]
            self.clips.append(item)
            self.clip_seconds += audio.duration(item.samples) + packing.GAP_SECONDS  # type: ignore[arg-type]
            if self.clip_seconds >= (max(1, self.options.transcription.batch_size)
                                     * packing.WINDOW_CAPACITY):
                self._flush_clips(model)
        elif self._sequential:
            self.current = item
            self.check_device()  # GpuLost stops the run
            self._publish(item, self._infer(model, item))
            self.current = None
        else:  # not packed: its chunks join the others'
            batcher = self.batcher
            assert batcher is not None
            batcher.start(item, item.file.uri)
            for chunk in speech_chunks([item.samples],  # type: ignore[list-item]
                                       vad=self.options.transcription.vad_filter):
                self._add(item, chunk)
            item.samples = None
            self._ready(batcher.end(item, item.seconds), [])

    def _piece(self, piece: Piece) -> None:
        item = piece.item
        if item.closed:
            return  # it failed already (in a batch): the rest of its audio is not needed
        if piece.chunk is not None:
            self._add(item, piece.chunk)
            return
        window = piece.window
        assert window is not None
        self.current = item
        self.check_device()
        result = self._infer_window(self._model(), item, window)
        self.current = None
        if isinstance(result, FileFailed):
            self.windows.pop(id(item), None)
            self._publish(item, result)
        else:
            self.windows[id(item)].append(result)

    def _end(self, end: End, finish: Finish) -> None:
        item = end.item
        if item.closed:
            return
        if end.failure is not None:  # damaged, or the store failed mid-file
            if self.batcher is not None:
                self.batcher.drop(item)
            self.windows.pop(id(item), None)
            failed(item.record, end.failure)
            self._done(item, finish)
        elif id(item) in self.windows:
            self._publish(item, _joined(item, self.windows.pop(id(item))))
        elif self.batcher is not None:
            self._ready(self.batcher.end(item, item.seconds), [])

    def _add(self, item: Prepared, chunk: Chunk) -> None:
        batcher = self.batcher
        assert batcher is not None
        batcher.add(item, chunk)
        if batcher.full:
            self._ready(*batcher.run(self.check_device))

    def _ready(self, ready: list[tuple[Any, Transcript]],
               failures: list[tuple[Any, Exception]]) -> None:
        for item, transcript in ready:
            self._publish(item, transcript)
        for item, exc in failures:
            log.error("transcription of %s failed: %s", item.file.uri, exc)
            self._publish(item, _transcription_failed(exc))

    def _flush(self) -> None:
        """Transcribe what is held: packed clips, and the chunks waiting for a full batch."""
        if self.clips:
            self._flush_clips(self._model())
        if self.batcher is not None:
            self._ready(*self.batcher.run_all(self.check_device))

    def fail_in_hands(self, failure: FileFailed, finish: Finish) -> None:
        """After a lost device or store: the files being transcribed, the clips waiting to
        be packed and the files with chunks in hand end failed."""
        items: list[Prepared] = [*([self.current] if self.current else []), *self.clips]
        if self.batcher is not None:
            items += self.batcher.holding()
            for item in self.batcher.holding():
                self.batcher.drop(item)
        self.current, self.clips, self.clip_seconds = None, [], 0.0
        for item in dict.fromkeys(items):
            if not item.closed:
                item.samples = None
                failed(item.record, failure)
                self._done(item, finish)

    def _packable(self, model: Any, samples: np.ndarray) -> bool:
        return (hasattr(model, "transcribe_windows")
                and packing.can_pack(self.options.transcription, model.multilingual)
                and packing.is_short(audio.duration(samples)))

    def _flush_clips(self, model: Any) -> None:
        self.check_device()  # GpuLost stops the run; the clips are still held
        items, self.clips, self.clip_seconds = self.clips, [], 0.0
        clips = [packing.Clip(i.file.uri, i.samples) for i in items]  # type: ignore[arg-type]
        try:
            transcripts = packing.transcribe_packed(model, clips, self.options.transcription)
        except Exception:  # one clip must not poison the others: fall back to one by one
            log.exception("packed transcription of %d files failed; transcribing them one "
                          "by one", len(items))
            for item in items:
                self._publish(item, self._infer(model, item))
            return
        for item, transcript in zip(items, transcripts, strict=True):
            self._publish(item, transcript)

    def _infer(self, model: Any, item: Prepared) -> Transcript | FileFailed:
        try:
            return model.transcribe(item.samples, item.file.uri, self.options.transcription)
        except Exception as exc:  # one file's inference error must not stop the others
            log.exception("transcription of %s failed", item.file.uri)
            return _transcription_failed(exc)

    def _infer_window(self, model: Any, item: Prepared, window: Window
                      ) -> Transcript | FileFailed:
        try:
            result = model.transcribe(window.samples, item.file.uri, self.options.transcription)
        except Exception as exc:
            log.exception("transcription of %s failed", item.file.uri)
            return _transcription_failed(exc)
        shift = window.start / audio.SAMPLE_RATE
        for segment in result.segments:  # window time -> file time
            segment.start, segment.end = segment.start + shift, segment.end + shift
            for word in segment.words or []:
                word.start, word.end = word.start + shift, word.end + shift
        return result

    def _publish(self, item: Prepared, result: Transcript | FileFailed) -> None:
        self.outbox.send(item, result)

    def drain(self, finish: Finish, *, wait: bool) -> None:
        self.outbox.drain(finish, wait=wait)

    def _done(self, item: Prepared, finish: Finish) -> None:
        self.outbox.close(item, finish)


def _transcription_failed(exc: BaseException) -> FileFailed:
    return FileFailed(Reason.TRANSCRIPTION_FAILED,
                      f"transcription failed: {type(exc).__name__}: {exc}")


def _joined(item: Prepared, windows: list[Transcript]) -> Transcript:
    """A streamed file's transcript from its windows' (sequential mode)."""
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
