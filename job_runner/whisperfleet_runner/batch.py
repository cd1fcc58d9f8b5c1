"""Transcribe a set of files into their outputs: the shard pod's work, reusable by local workers.

`run_files` is the loop (no click, no environment): for each file it confines the output
keys, skips files whose outputs exist, decodes, transcribes, renders and publishes every
format, and records the outcome. One bad file never stops the others. `pod.shard.run_shard`
wraps it for a pod: read the manifest, pick the allocated devices, run this shard's files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisperfleet_runner import audio, formats, packing, storage
from whisperfleet_runner.config import (
    FileFailure,
    GpuIdentity,
    ShardReport,
    TranscriptionOptions,
    WorkOrder,
)
from whisperfleet_runner.ledger import (
    FAILED,
    SKIPPED,
    SUCCEEDED,
    LedgerRecord,
    LedgerWriter,
)
from whisperfleet_runner.overlap import DEFAULT_PREFETCH_BYTES, Inline, Prefetcher, Publisher
from whisperfleet_runner.transcript import Transcript

log = logging.getLogger(__name__)

MAX_REPORTED_FAILURES = 20  # the report carries the first ones; the ledger has them all

EngineGetter = Callable[[], Any]  # returns an object with .transcribe(audio, source, options)
Progress = Callable[[LedgerRecord], None]


class EngineLoadError(RuntimeError):
    """The model could not be loaded: no file of the shard can run (reported, not per file)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _LazyEngine:
    """Calls the getter at most once, on first use, so an all-skipped shard loads no model;
    then checks once that the model can honour the options (a language it does not know
    would otherwise fail every file, one by one)."""

    def __init__(self, getter: EngineGetter, options: TranscriptionOptions) -> None:
        self._getter = getter
        self._options = options
        self._engine: Any = None

    def get(self) -> Any:
        if self._engine is None:
            try:
                engine = self._getter()
            except Exception as exc:
                from whisperfleet_runner.models import ModelNotFoundError

                reason = "ModelNotFound" if isinstance(exc, ModelNotFoundError) else "ModelLoad"
                raise EngineLoadError(reason, f"cannot load the model: {exc}") from exc
            check = getattr(engine, "unsupported", None)
            problem = check(self._options) if check else None
            if problem:
                raise EngineLoadError("UnsupportedOptions", problem)
            self._engine = engine
        return self._engine


class _FileFailed(Exception):
    def __init__(self, reason: str, *, bad_input: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bad_input = bad_input


def run_files(
    files: Iterable[storage.InputFile],
    order: WorkOrder,
    get_engine: EngineGetter,
    *,
    ledger: LedgerWriter | None = None,
    shard: int = 0,
    device: str = "",
    gpus: list[GpuIdentity] | None = None,
    progress: Progress | None = None,
    overlap: bool = True,
    prefetch_bytes: int = DEFAULT_PREFETCH_BYTES,
) -> ShardReport:
    """Transcribe `files` as `order` says; every file attempted ends in one ledger record.

    With `overlap`, the next files are read and decoded (up to `prefetch_bytes` of samples
    ahead) and finished transcripts are published on background threads while the model
    works; short files are packed into shared windows (see packing) when the options allow.
    Records may therefore arrive out of input order, and several files are taken from
    `files` before the first one is recorded.

    When the model cannot be loaded the loop stops: the report's error_reason says why and
    the remaining files get no record (a retry, or a fixed spec, will do them).
    """
    started = time.monotonic()
    report = ShardReport(shard=shard, device=device, gpus=list(gpus or []))
    run = _Run(order, _LazyEngine(get_engine, order.transcription), shard=shard,
               device=device)

    def finish(record: LedgerRecord, bad_input: bool) -> None:
        _count(report, record)
        report.bad_input += bad_input
        if ledger is not None:
            ledger.add(record)
        if progress is not None:
            progress(record)

    prepared: Iterable[_Prepared]
    if overlap:
        prefetcher = Prefetcher(
            files, run.prepare, size_of=lambda p: 0 if p.samples is None else p.samples.nbytes,
            max_bytes=prefetch_bytes,
        )
        prepared, publisher = prefetcher, Publisher()
    else:
        prefetcher, publisher = None, Inline()
    try:
        run.process(prepared if overlap else map(run.prepare, files), publisher, finish)
    except EngineLoadError as exc:
        report.error_reason, report.error_message = exc.reason, str(exc)
        log.error("%s", exc)
    finally:
        if prefetcher is not None:
            prefetcher.close()
        publisher.close()
        run.drain(finish, wait=True)
        if ledger is not None:
            ledger.close()
        report.wall_seconds = time.monotonic() - started
    return report


def _count(report: ShardReport, record: LedgerRecord) -> None:
    report.total += 1
    if record.status == SUCCEEDED:
        report.succeeded += 1
        report.audio_seconds += record.audio_seconds
    elif record.status == SKIPPED:
        report.skipped += 1
    else:
        report.failed += 1
        if len(report.failures) < MAX_REPORTED_FAILURES:
            report.failures.append(FileFailure(uri=record.uri, reason=record.reason))


@dataclass
class _Prepared:
    """A file after the I/O stage: finished (skipped/failed), or decoded samples to do."""

    file: storage.InputFile
    record: LedgerRecord
    started: float
    outputs: dict[str, str] = field(default_factory=dict)
    samples: np.ndarray | None = None
    bad_input: bool = False


Finish = Callable[[LedgerRecord, bool], None]


class _Run:
    """The three stages of run_files: prepare (I/O, decode), infer (main thread), publish."""

    def __init__(self, order: WorkOrder, engine: _LazyEngine, *, shard: int, device: str) -> None:
        self.order, self.engine, self.shard, self.device = order, engine, shard, device
        self.claimed: dict[str, str] = {}  # output uri -> the input that owns it in this run
        self.pending: list[tuple[_Prepared, Future[float]]] = []
        self.clips: list[_Prepared] = []  # decoded short files waiting to be packed
        self.clip_seconds = 0.0

    def prepare(self, file: storage.InputFile) -> _Prepared:
        """Confine outputs, skip done files, read and decode (the prefetch thread's part)."""
        item = _Prepared(file, LedgerRecord(uri=file.uri, key=file.key, status=FAILED,
                                            shard=self.shard, device=self.device),
                         time.monotonic())
        try:
            item.outputs = _output_uris(file, self.order)
            _claim(file, item.outputs, self.claimed)
            item.record.outputs = list(item.outputs.values())
            if not self.order.output.overwrite and _exists(item.record.outputs):
                item.record.status, item.record.reason = SKIPPED, "outputs exist"
                log.info("%s: skipped, its outputs exist", file.uri)
            else:
                item.samples = _decode(file)
        except _FileFailed as exc:
            item.record.reason, item.bad_input = exc.reason, exc.bad_input
            log.warning("%s failed: %s", file.uri, exc.reason)
        return item

    def process(self, prepared: Iterable[_Prepared], publisher: Any, finish: Finish) -> None:
        options = self.order.transcription
        for item in prepared:
            if item.samples is None:
                self._done(item, finish)
            else:
                model = self.engine.get()  # EngineLoadError stops the run
                if self._packable(model, item.samples):
                    self.clips.append(item)
                    self.clip_seconds += audio.duration(item.samples) + packing.GAP_SECONDS
                    if self.clip_seconds >= max(1, options.batch_size) * packing.WINDOW_CAPACITY:
                        self._flush_clips(model, publisher)
                else:
                    self._publish(item, self._infer(model, item), publisher)
            self.drain(finish, wait=False)
        if self.clips:
            self._flush_clips(self.engine.get(), publisher)

    def _packable(self, model: Any, samples: np.ndarray) -> bool:
        return (hasattr(model, "transcribe_windows")
                and packing.can_pack(self.order.transcription, model.multilingual)
                and packing.is_short(audio.duration(samples)))

    def _flush_clips(self, model: Any, publisher: Any) -> None:
        items, self.clips, self.clip_seconds = self.clips, [], 0.0
        clips = [packing.Clip(i.file.uri, i.samples) for i in items]  # type: ignore[arg-type]
        try:
            transcripts = packing.transcribe_packed(model, clips, self.order.transcription)
        except Exception:  # one clip must not poison the others: fall back to one by one
            log.exception("packed transcription of %d files failed; transcribing them one "
                          "by one", len(items))
            for item in items:
                self._publish(item, self._infer(model, item), publisher)
            return
        for item, transcript in zip(items, transcripts, strict=True):
            self._publish(item, transcript, publisher)

    def _infer(self, model: Any, item: _Prepared) -> Transcript | _FileFailed:
        try:
            return model.transcribe(item.samples, item.file.uri, self.order.transcription)
        except Exception as exc:  # one file's inference error must not stop the others
            log.exception("transcription of %s failed", item.file.uri)
            return _FileFailed(f"transcription failed: {type(exc).__name__}: {exc}",
                               bad_input=False)

    def _publish(self, item: _Prepared, result: Transcript | _FileFailed, publisher: Any) -> None:
        seconds = audio.duration(item.samples)  # type: ignore[arg-type]
        item.samples = None  # decoded audio is large; the transcript is all that is needed now
        formats_ = self.order.output.formats

        def write() -> float:
            if isinstance(result, _FileFailed):
                raise result
            rendered = formats.render_all(result, formats_)
            try:
                # json last: a reader that sees a file's json sees its other outputs too.
                storage.publish_set({item.outputs[fmt]: text for fmt, text in rendered.items()})
            except storage.StorageError as exc:
                raise _FileFailed(_storage_reason("writing outputs", exc),
                                  bad_input=False) from exc
            return float(result.duration or seconds)

        self.pending.append((item, publisher.submit(write)))

    def drain(self, finish: Finish, *, wait: bool) -> None:
        """Record published files (in submission order); with `wait`, all of them."""
        while self.pending and (wait or self.pending[0][1].done()):
            item, future = self.pending.pop(0)
            try:
                item.record.audio_seconds = future.result()
                item.record.status = SUCCEEDED
            except _FileFailed as exc:
                item.record.reason, item.bad_input = exc.reason, exc.bad_input
                log.warning("%s failed: %s", item.file.uri, exc.reason)
            except Exception as exc:  # a renderer bug must still end in a record
                item.record.reason = f"writing outputs failed: {type(exc).__name__}: {exc}"
                log.exception("publishing %s failed", item.file.uri)
            self._done(item, finish)

    def _done(self, item: _Prepared, finish: Finish) -> None:
        item.record.wall_seconds = time.monotonic() - item.started
        item.record.time = time.time()
        finish(item.record, item.bad_input)


def _output_uris(file: storage.InputFile, order: WorkOrder) -> dict[str, str]:
    try:
        return dict(storage.output_uris(file.key, order.output.uri, order.output.formats))
    except storage.UnsafeKeyError as exc:
        raise _FileFailed(str(exc), bad_input=True) from exc


def _claim(file: storage.InputFile, outputs: dict[str, str], claimed: dict[str, str]) -> None:
    """Refuse a file whose outputs belong to an earlier file of this run (talk.wav/talk.mp3):
    it would overwrite them, or be skipped as if it were done."""
    owner = next((claimed[u] for u in outputs.values() if u in claimed), None)
    if owner is not None and owner != file.uri:
        raise _FileFailed(
            f"output collision: its outputs ({next(iter(outputs.values()))} …) are those of "
            f"{owner}; rename one of the two",
            bad_input=True,
        )
    claimed.update(dict.fromkeys(outputs.values(), file.uri))


def _exists(uris: list[str]) -> bool:
    try:
        return storage.outputs_exist(uris)
    except storage.StorageError as exc:
        raise _FileFailed(_storage_reason("checking outputs", exc), bad_input=False) from exc


def _decode(file: storage.InputFile) -> np.ndarray:
    """Read and decode one input; failures are the file's, with a specific reason."""
    try:
        data = storage.read_bytes(file.uri)
    except storage.StorageError as exc:
        raise _FileFailed(_storage_reason("reading the input", exc), bad_input=False) from exc
    try:
        return audio.decode(data, file.key or file.uri)
    except audio.BadMediaError as exc:
        raise _FileFailed(f"bad media: {exc.reason}", bad_input=True) from exc


def _storage_reason(action: str, exc: storage.StorageError) -> str:
    return f"storage error {action} ({exc.reason}): {exc}"
