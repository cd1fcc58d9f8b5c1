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
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisperfleet_runner import audio, formats, packing, storage
from whisperfleet_runner.config import (
    GpuIdentity,
    JobOptions,
    Reason,
    ShardReport,
    TranscriptionOptions,
)
from whisperfleet_runner.gpu.nvml import GpuLost
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

EngineGetter = Callable[[], Any]  # returns an object with .transcribe(audio, source, options)
Progress = Callable[[LedgerRecord], None]
# In the stream of files: "more may come, but transcribe the short clips held now" (a
# worker at its share of files must free its hand before taking more).
FLUSH = object()


class EngineLoadError(RuntimeError):
    """The model could not be loaded: no file of the shard can run (reported, not per file)."""

    def __init__(self, reason: Reason, message: str) -> None:
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

                reason = (Reason.MODEL_NOT_FOUND if isinstance(exc, ModelNotFoundError)
                          else Reason.MODEL_LOAD)
                raise EngineLoadError(reason, f"cannot load the model: {exc}") from exc
            check = getattr(engine, "unsupported", None)
            problem = check(self._options) if check else None
            if problem:
                raise EngineLoadError(Reason.UNSUPPORTED_OPTIONS, problem)
            self._engine = engine
        return self._engine


class _FileFailed(Exception):
    """One file failed: `code` says why for programs, the message for people."""

    def __init__(self, code: Reason, message: str) -> None:
        super().__init__(message)
        self.code = code


class _StoreLost(Exception):
    """A file failed because the store itself is gone: the run stops. `failure` is what the
    files still in its hands end with."""

    def __init__(self, uri: str, cause: _FileFailed) -> None:
        super().__init__(f"stopped at {uri}: {cause}; the files not done are left for a "
                         "re-run once the store is back")
        self.failure = _FileFailed(cause.code, "not done: the run stopped when the storage "
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

    With `overlap`, the next files are read and decoded (up to `prefetch_bytes` of samples
    ahead) and finished transcripts are published on background threads while the model
    works; short files are packed into shared windows (see packing) when the options allow.
    Records may therefore arrive out of input order, and several files are taken from
    `files` before the first one is recorded.

    When the model cannot be loaded, or `check_device` (called before each inference)
    raises GpuLost, the loop stops: the report's error_reason says why, files in the
    model's hands fail, and the files not started get no record (a retry, or another
    worker, does them). So it does when a file fails because the store itself is gone
    (`storage.store_lost`): files then fail at once instead of after retries of their own.
    """
    started = time.monotonic()
    report = ShardReport(shard=shard, device=device, gpus=list(gpus or []))
    run = _Run(options, _LazyEngine(get_engine, options.transcription), shard=shard,
               device=device, check_device=check_device)
    run.gpu = gpus[0].uuid if gpus and len(gpus) == 1 else ""

    def finish(record: LedgerRecord) -> None:
        report.add(record)
        if ledger is not None:
            ledger.add(record)
        if progress is not None:
            progress(record)

    prepared: Iterable[_Prepared]
    if overlap:
        prefetcher = Prefetcher(
            files, run.prepare,
            size_of=lambda p: p.samples.nbytes if p and p.samples is not None else 0,
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
    except GpuLost as exc:
        report.error_reason, report.error_message = Reason.GPU_LOST.value, str(exc)
        log.error("%s; the files in its hands fail and will be retried", exc)
        run.fail_in_hands(_FileFailed(Reason.GPU_LOST, f"{exc}; retried by the next attempt"),
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


@dataclass
class _Prepared:
    """A file after the I/O stage: finished (skipped/failed), or decoded samples to do."""

    file: storage.InputFile
    record: LedgerRecord
    started: float
    outputs: dict[str, str] = field(default_factory=dict)
    samples: np.ndarray | None = None
    damage: str = ""  # what its damaged media lost, when kept in part (keep_partial)


Finish = Callable[[LedgerRecord], None]


class _Run:
    """The three stages of run_files: prepare (I/O, decode), infer (main thread), publish."""

    def __init__(self, options: JobOptions, engine: _LazyEngine, *, shard: int, device: str,
                 check_device: Callable[[], None] | None = None) -> None:
        self.options, self.engine, self.shard, self.device = options, engine, shard, device
        self.check_device = check_device or (lambda: None)
        self.current: _Prepared | None = None  # in the model's hands
        self.gpu = ""  # the one GPU's UUID, for records
        self.claimed: dict[str, str] = {}  # output uri -> the input that owns it in this run
        self.pending: list[tuple[_Prepared, Future[float]]] = []
        self.clips: list[_Prepared] = []  # decoded short files waiting to be packed
        self.clip_seconds = 0.0
        # Set by whichever thread meets a failure of the store itself (storage.store_lost);
        # the others then skip their storage work, and the loop stops.
        self.lost: _StoreLost | None = None

    def prepare(self, file: storage.InputFile | object) -> _Prepared | None:
        """Confine outputs, skip done files, read and decode (the prefetch thread's part).
        FLUSH passes through as None."""
        if not isinstance(file, storage.InputFile):
            return None
        item = _Prepared(file, LedgerRecord(uri=file.uri, key=file.key, status=FAILED,
                                            shard=self.shard, device=self.device,
                                            gpu=self.gpu),
                         time.monotonic())
        try:
            item.outputs = _output_uris(file, self.options)
            _claim(file, item.outputs, self.claimed)
            item.record.outputs = list(item.outputs.values())
            if self.lost is not None:
                raise self.lost.failure
            if not self.options.output.overwrite and _done(file, item.record.outputs):
                item.record.status, item.record.reason = SKIPPED, "outputs exist"
                log.info("%s: skipped, its outputs exist", file.uri)
            else:
                decoded = _decode(file, self.options.output.keep_partial)
                item.samples, item.damage = decoded.samples, decoded.damage
        except _FileFailed as exc:
            self._note(file.uri, exc)
            _failed(item.record, exc)
        return item

    def _note(self, uri: str, failure: _FileFailed) -> None:
        if self.lost is None and storage.store_lost(failure.code):
            self.lost = _StoreLost(uri, failure)

    def process(self, prepared: Iterable[_Prepared | None], publisher: Any,
                finish: Finish) -> None:
        options = self.options.transcription
        for item in prepared:
            if item is None:  # FLUSH
                if self.clips:
                    self._flush_clips(self.engine.get(), publisher)
            elif item.samples is None:
                self._done(item, finish)
            else:
                model = self.engine.get()  # EngineLoadError stops the run
                if self._packable(model, item.samples):
                    self.clips.append(item)
                    self.clip_seconds += audio.duration(item.samples) + packing.GAP_SECONDS
                    if self.clip_seconds >= max(1, options.batch_size) * packing.WINDOW_CAPACITY:
                        self._flush_clips(model, publisher)
                else:
                    self.current = item
                    self.check_device()  # GpuLost stops the run
                    self._publish(item, self._infer(model, item), publisher)
                    self.current = None
            self.drain(finish, wait=False)
            if self.lost is not None:
                raise self.lost
        if self.clips:
            self._flush_clips(self.engine.get(), publisher)

    def fail_in_hands(self, failure: _FileFailed, finish: Finish) -> None:
        """After a lost device: the file being transcribed and the clips waiting to be
        packed end failed (their transcripts may be lost with the device)."""
        items = [*([self.current] if self.current else []), *self.clips]
        self.current, self.clips, self.clip_seconds = None, [], 0.0
        for item in items:
            item.samples = None
            _failed(item.record, failure)
            self._done(item, finish)

    def _packable(self, model: Any, samples: np.ndarray) -> bool:
        return (hasattr(model, "transcribe_windows")
                and packing.can_pack(self.options.transcription, model.multilingual)
                and packing.is_short(audio.duration(samples)))

    def _flush_clips(self, model: Any, publisher: Any) -> None:
        self.check_device()  # GpuLost stops the run; the clips are still held
        items, self.clips, self.clip_seconds = self.clips, [], 0.0
        clips = [packing.Clip(i.file.uri, i.samples) for i in items]  # type: ignore[arg-type]
        try:
            transcripts = packing.transcribe_packed(model, clips, self.options.transcription)
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
            return model.transcribe(item.samples, item.file.uri, self.options.transcription)
        except Exception as exc:  # one file's inference error must not stop the others
            log.exception("transcription of %s failed", item.file.uri)
            return _FileFailed(Reason.TRANSCRIPTION_FAILED,
                               f"transcription failed: {type(exc).__name__}: {exc}")

    def _publish(self, item: _Prepared, result: Transcript | _FileFailed, publisher: Any) -> None:
        seconds = audio.duration(item.samples)  # type: ignore[arg-type]
        item.samples = None  # decoded audio is large; the transcript is all that is needed now
        formats_ = self.options.output.formats

        def write() -> float:
            if isinstance(result, _FileFailed):
                raise result
            if self.lost is not None:  # would fail only after retries of its own
                raise self.lost.failure
            if item.damage:
                result.partial, result.damage = True, item.damage
            rendered = formats.render_all(result, formats_)
            try:
                # json last: a reader that sees a file's json sees its other outputs too.
                storage.publish_set({item.outputs[fmt]: text for fmt, text in rendered.items()})
            except storage.StorageError as exc:
                failure = _storage_failure("writing outputs", exc)
                self._note(item.file.uri, failure)
                raise failure from exc
            return float(result.duration or seconds)

        self.pending.append((item, publisher.submit(write)))

    def drain(self, finish: Finish, *, wait: bool) -> None:
        """Record published files (in submission order); with `wait`, all of them."""
        while self.pending and (wait or self.pending[0][1].done()):
            item, future = self.pending.pop(0)
            try:
                item.record.audio_seconds = future.result()
                item.record.status = SUCCEEDED
                if item.damage:
                    item.record.partial, item.record.reason = True, item.damage
            except _FileFailed as exc:
                _failed(item.record, exc)
            except Exception as exc:  # a renderer bug must still end in a record
                log.exception("publishing %s failed", item.file.uri)
                _failed(item.record, _FileFailed(
                    Reason.TRANSCRIPTION_FAILED,
                    f"writing outputs failed: {type(exc).__name__}: {exc}"))
            self._done(item, finish)

    def _done(self, item: _Prepared, finish: Finish) -> None:
        item.record.wall_seconds = time.monotonic() - item.started
        item.record.time = time.time()
        finish(item.record)


def _output_uris(file: storage.InputFile, options: JobOptions) -> dict[str, str]:
    try:
        return dict(storage.output_uris(file.key, options.output.uri, options.output.formats))
    except storage.UnsafeKeyError as exc:
        raise _FileFailed(Reason.UNSAFE_KEY, str(exc)) from exc


def _claim(file: storage.InputFile, outputs: dict[str, str], claimed: dict[str, str]) -> None:
    """Refuse a file whose outputs belong to an earlier file of this run (talk.wav/talk.mp3):
    it would overwrite them, or be skipped as if it were done."""
    owner = next((claimed[u] for u in outputs.values() if u in claimed), None)
    if owner is not None and owner != file.uri:
        raise _FileFailed(
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
        raise _storage_failure("checking outputs", exc) from exc


def _decode(file: storage.InputFile, keep_partial: bool) -> audio.Decoded:
    """Read and decode one input; failures are the file's, with a specific reason."""
    try:
        data = storage.read_bytes(file.uri)
    except storage.StorageError as exc:
        raise _storage_failure("reading the input", exc) from exc
    try:
        return audio.decode_media(data, file.key or file.uri, keep_partial=keep_partial)
    except audio.BadMediaError as exc:
        raise _FileFailed(Reason.BAD_MEDIA, f"bad media: {exc.reason}") from exc


def _storage_failure(action: str, exc: storage.StorageError) -> _FileFailed:
    return _FileFailed(exc.reason, f"storage error {action} ({exc.reason}): {exc}")


def _failed(record: LedgerRecord, exc: _FileFailed) -> None:
    record.status, record.code, record.reason = FAILED, exc.code.value, str(exc)
    log.warning("%s failed: %s", record.uri, record.reason)
