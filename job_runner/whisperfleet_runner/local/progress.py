"""What a person sees during and after a local run: a rich progress display, or log lines.

`LiveProgress` shows files done/total, audio hours done, the real-time factor (audio seconds
per wall second), an ETA and one line per worker. `LogProgress` (for --quiet) logs one line
per file instead. `print_summary` renders the final table and the failures.
"""

from __future__ import annotations

import logging
import posixpath
import time

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from whisperfleet_runner.fleet.accounting import RunSummary
from whisperfleet_runner.pipeline.ledger import SKIPPED, LedgerRecord

log = logging.getLogger(__name__)


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class _Display:
    """What both displays show. Counts are the run summary's own (the scheduler counts each
    record once); kept here: bytes for the ETA (bytes still to do at the byte rate so far,
    transcribed bytes only: skipped files cost nothing and would make it optimistic) and
    what each worker holds now."""

    def __init__(self) -> None:
        self.summary = RunSummary()
        self.files = 0
        self.total_bytes = self.done_bytes = self.work_bytes = 0
        self.started = time.monotonic()
        self.current: dict[int, str] = {}
        self.stopping = False

    def started_run(self, summary: RunSummary, files: int, total_bytes: int) -> None:
        self.summary, self.files, self.total_bytes = summary, files, total_bytes
        self.started = time.monotonic()

    def finished(self, worker: int, record: LedgerRecord, size: int) -> None:
        self.done_bytes += size
        self.current.pop(worker, None)
        if record.status != SKIPPED:
            self.work_bytes += size

    @property
    def done(self) -> int:
        return self.summary.total

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rtf(self) -> float:
        return self.summary.audio_seconds / self.elapsed if self.elapsed > 0 else 0.0

    def eta(self) -> str:
        left = self.total_bytes - self.done_bytes
        if left <= 0:
            return "0:00:00"
        if self.work_bytes <= 0:
            return "?"
        return _clock(self.elapsed * left / self.work_bytes)


class LiveProgress:
    """The rich display (a scheduler Observer), on `console` (stderr by default)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.display = _Display()
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> LiveProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def started(self, summary: RunSummary, files: int, total_bytes: int) -> None:
        self.display.started_run(summary, files, total_bytes)

    def file_started(self, worker: int, uri: str) -> None:
        self.display.current[worker] = uri

    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None:
        self.display.finished(worker, record, size)

    def stopping(self) -> None:
        self.display.stopping = True
        self.console.print("[yellow]Stopping: finishing the files in progress "
                           "(Ctrl-C again to abandon them; a re-run redoes them).[/]")

    def __rich__(self) -> RenderableType:
        d, s = self.display, self.display.summary
        fraction = d.done_bytes / d.total_bytes if d.total_bytes else (1.0 if d.files else 0.0)
        width = 30
        bar = "█" * int(fraction * width) + "░" * (width - int(fraction * width))
        head = Text.assemble(
            ("stopping " if d.stopping else "", "yellow"), (bar, "cyan"),
            f" {d.done}/{d.files} files  {s.audio_seconds / 3600:.2f} h audio  "
            f"RTF {d.rtf:.1f}x  elapsed {_clock(d.elapsed)}  ETA {d.eta()}",
            (f"  ({s.failed} failed)" if s.failed else "", "red"),
        )
        lines = [head]
        for row in s.workers:
            current = d.current.get(row.worker)
            doing = posixpath.basename(current.rstrip("/")) if current else "idle"
            lines.append(Text(f"  {row.label:<8} {row.model_device}/{row.compute_type}"
                              f"  {row.total} files  {row.audio_seconds / 60:.1f} min audio"
                              f"  {doing}"))
        return Group(*lines)


class LogProgress:
    """--quiet: no live display, one log line per finished file."""

    def __init__(self) -> None:
        self.display = _Display()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, summary: RunSummary, files: int, total_bytes: int) -> None:
        self.display.started_run(summary, files, total_bytes)
        log.info("%d files on %s", files, ", ".join(r.label for r in summary.workers))

    def file_started(self, worker: int, uri: str) -> None:
        self.display.current[worker] = uri

    def file_finished(self, worker: int, record: LedgerRecord, size: int) -> None:
        d = self.display
        d.finished(worker, record, size)
        log.info("[%d/%d] %s %s (%.1f s audio) ETA %s", d.done, d.files, record.status,
                 record.uri, record.audio_seconds, d.eta())

    def stopping(self) -> None:
        log.warning("stopping: finishing the files in progress; a re-run does the rest")


def print_summary(summary: RunSummary, console: Console, *, skipped_note: bool = True) -> None:
    """The final table (one row per worker plus the total) and every failure with its reason."""
    table = Table(title="whisperfleet transcribe")
    partial = bool(summary.partial)  # a column only when --keep-partial kept some
    columns = ("worker", "device", "files", "done", *(("partial",) if partial else ()),
               "skipped", "failed", "audio", "RTF")
    for column in columns:
        table.add_column(column, justify="left" if column in ("worker", "device") else "right")
    for row in summary.workers:
        device = f"{row.model_device} {row.compute_type}"
        if row.gpu:
            device = f"{row.gpu.name} {row.gpu.uuid[:12]}… ({device})"
        rtf = row.audio_seconds / row.wall_seconds if row.wall_seconds else 0.0
        table.add_row(row.label, device, str(row.total), str(row.succeeded),
                      *((str(row.partial),) if partial else ()), str(row.skipped),
                      str(row.failed), _clock(row.audio_seconds), f"{rtf:.1f}x")
    table.add_row("total", "", str(summary.total), str(summary.succeeded),
                  *((str(summary.partial),) if partial else ()), str(summary.skipped),
                  str(summary.failed), _clock(summary.audio_seconds),
                  f"{summary.real_time_factor:.1f}x", style="bold")
    console.print(table)
    for line in summary_lines(summary, skipped_note=skipped_note):
        console.print(line, markup=False, highlight=False)


def _held(summary: RunSummary) -> str:
    return "GPU" if any(w.gpu for w in summary.workers) else "device"


def summary_lines(summary: RunSummary, *, skipped_note: bool = True) -> list[str]:
    """The plain-text gist of a run (used by --quiet and under the table)."""
    partial = f" ({summary.partial} partial)" if summary.partial else ""
    lines = [
        f"{summary.succeeded} transcribed{partial}, {summary.skipped} skipped, "
        f"{summary.failed} failed "
        f"of {summary.total} files; {summary.audio_seconds / 3600:.2f} h audio in "
        f"{_clock(summary.wall_seconds)} (RTF {summary.real_time_factor:.1f}x; "
        f"{summary.throughput:.1f} audio h per {_held(summary)} h)"
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
    if summary.partial_files:
        lines.append(f"Partial transcripts of damaged media ({len(summary.partial_files)}, "
                     "kept by --keep-partial):")
        lines.extend(f"  {f.uri}: {f.reason}" for f in summary.partial_files)
    if summary.failures:
        lines.append(f"Failed files ({len(summary.failures)}):")
        lines.extend(f"  {f.uri}: {f.reason}" for f in summary.failures)
    return lines
