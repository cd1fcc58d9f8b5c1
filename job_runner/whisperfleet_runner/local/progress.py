"""What a person sees during and after a local run: a rich progress display, or log lines.

`LiveProgress` shows files done/total, audio hours done, the real-time factor (audio seconds
per wall second), an ETA and one line per worker. `LogProgress` (for --quiet) logs one line
per file instead. `print_summary` renders the final table and the failures.
"""

from __future__ import annotations

import logging
import posixpath
import time
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from whisperfleet_runner.ledger import FAILED, SKIPPED, SUCCEEDED, LedgerRecord
from whisperfleet_runner.scheduler import RunSummary
from whisperfleet_runner.worker import WorkerSpec

log = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Tally:
    """Counts shared by both displays; the ETA is bytes still to do at the byte rate so far
    (transcribed bytes only: skipped files cost nothing and would make it optimistic)."""

    def __init__(self) -> None:
        self.files = self.done = self.succeeded = self.failed = self.skipped = 0
        self.total_bytes = self.done_bytes = self.work_bytes = 0
        self.audio = 0.0
        self.started = time.monotonic()
        self.workers: list[WorkerSpec] = []
        self.current: dict[int, str] = {}
        self.per_worker: dict[int, list[float]] = {}  # files, audio seconds
        self.stopping = False

    def started_run(self, files: int, total_bytes: int, workers: list[WorkerSpec]) -> None:
        self.files, self.total_bytes, self.workers = files, total_bytes, workers
        self.per_worker = {w.index: [0, 0.0] for w in workers}
        self.started = time.monotonic()

    def finished(self, worker: int, record: LedgerRecord, size: int) -> None:
        self.done += 1
        self.done_bytes += size
        self.current.pop(worker, None)
        self.per_worker.setdefault(worker, [0, 0.0])[0] += 1
        if record.status == SUCCEEDED:
            self.succeeded += 1
            self.work_bytes += size
            self.audio += record.audio_seconds
            self.per_worker[worker][1] += record.audio_seconds
        elif record.status == SKIPPED:
            self.skipped += 1
        elif record.status == FAILED:
            self.failed += 1
            self.work_bytes += size

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rtf(self) -> float:
        return self.audio / self.elapsed if self.elapsed > 0 else 0.0

    def eta(self) -> str:
        left = self.total_bytes - self.done_bytes
        if left <= 0:
            return "0:00:00"
        if self.work_bytes <= 0:
            return "?"
        return _clock(self.elapsed * left / self.work_bytes)


class LiveProgress:
    """The rich display (an Observer for local.run), on `console` (stderr by default)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.tally = _Tally()
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def started(self, files: int, total_bytes: int, workers: list[WorkerSpec]) -> None:
        self.tally.started_run(files, total_bytes, workers)

    def file_started(self, worker: int, uri: str) -> None:
        self.tally.current[worker] = uri

    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None:
        self.tally.finished(worker, record, size)

    def stopping(self) -> None:
        self.tally.stopping = True
        self.console.print("[yellow]Stopping: finishing the files in progress "
                           "(Ctrl-C again to abandon them; a re-run redoes them).[/]")

    def __rich__(self) -> RenderableType:
        t = self.tally
        fraction = t.done_bytes / t.total_bytes if t.total_bytes else (1.0 if t.files else 0.0)
        width = 30
        bar = "█" * int(fraction * width) + "░" * (width - int(fraction * width))
        head = Text.assemble(
            ("stopping " if t.stopping else "", "yellow"), (bar, "cyan"),
            f" {t.done}/{t.files} files  {t.audio / 3600:.2f} h audio  "
            f"RTF {t.rtf:.1f}x  elapsed {_clock(t.elapsed)}  ETA {t.eta()}",
            (f"  ({t.failed} failed)" if t.failed else "", "red"),
        )
        lines = [head]
        for worker in t.workers:
            count, audio = t.per_worker.get(worker.index, [0, 0.0])
            current = t.current.get(worker.index)
            doing = posixpath.basename(current.rstrip("/")) if current else "idle"
            lines.append(Text(f"  {worker.label:<8} {worker.model_device}/{worker.compute_type}"
                              f"  {int(count)} files  {audio / 60:.1f} min audio  {doing}"))
        return Group(*lines)


class LogProgress:
    """--quiet: no live display, one log line per finished file."""

    def __init__(self) -> None:
        self.tally = _Tally()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, files: int, total_bytes: int, workers: list[WorkerSpec]) -> None:
        self.tally.started_run(files, total_bytes, workers)
        log.info("%d files on %s", files, ", ".join(w.label for w in workers))

    def file_started(self, worker: int, uri: str) -> None:
        self.tally.current[worker] = uri

    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None:
        t = self.tally
        t.finished(worker, record, size)
        log.info("[%d/%d] %s %s (%.1f s audio) ETA %s", t.done, t.files, record.status,
                 record.uri, record.audio_seconds, t.eta())

    def stopping(self) -> None:
        log.warning("stopping: finishing the files in progress; a re-run does the rest")


def print_summary(summary: RunSummary, console: Console, *, skipped_note: bool = True) -> None:
    """The final table (one row per worker plus the total) and every failure with its reason."""
    table = Table(title="whisperfleet transcribe")
    for column in ("worker", "device", "files", "done", "skipped", "failed", "audio", "RTF"):
        table.add_column(column, justify="left" if column in ("worker", "device") else "right")
    for row in summary.workers:
        gpu: dict[str, Any] | None = row.get("gpu")
        device = f"{row['model_device']} {row['compute_type']}"
        if gpu:
            device = f"{gpu['name']} {gpu['uuid'][:12]}… ({device})"
        rtf = row["audio_seconds"] / row["wall_seconds"] if row["wall_seconds"] else 0.0
        table.add_row(row["label"], device, str(row["files"]), str(row["succeeded"]),
                      str(row["skipped"]), str(row["failed"]),
                      _clock(row["audio_seconds"]), f"{rtf:.1f}x")
    table.add_row("total", "", str(summary.total), str(summary.succeeded), str(summary.skipped),
                  str(summary.failed), _clock(summary.audio_seconds),
                  f"{summary.real_time_factor:.1f}x", style="bold")
    console.print(table)
    for line in summary_lines(summary, skipped_note=skipped_note):
        console.print(line, markup=False, highlight=False)


def summary_lines(summary: RunSummary, *, skipped_note: bool = True) -> list[str]:
    """The plain-text gist of a run (used by --quiet and under the table)."""
    lines = [
        f"{summary.succeeded} transcribed, {summary.skipped} skipped, {summary.failed} failed "
        f"of {summary.total} files; {summary.audio_seconds / 3600:.2f} h audio in "
        f"{_clock(summary.wall_seconds)} (RTF {summary.real_time_factor:.1f}x)"
    ]
    if summary.skipped and skipped_note:
        lines.append(f"Skipped {summary.skipped} files whose outputs already exist "
                     "(--overwrite redoes them).")
    if summary.duplicates:
        lines.append(f"{summary.duplicates} files were named by more than one INPUT; "
                     "each ran once.")
    if summary.interrupted:
        lines.append(f"Interrupted: {summary.not_attempted} files not attempted; "
                     "run the same command again to finish them.")
    lines.extend(f"worker error: {e}" for e in summary.errors)
    if summary.failures:
        lines.append(f"Failed files ({len(summary.failures)}):")
        lines.extend(f"  {f.uri}: {f.reason}" for f in summary.failures)
    return lines
