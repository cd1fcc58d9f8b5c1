"""`whisperfleet transcribe INPUT... -o OUTPUT`: the local batch over every GPU of this machine.

Thin: options come from `options`, input gathering and scheduling from `local`, the display
from `progress`. Exit codes: 0 every file done or skipped, 1 some failed, 2 bad usage or
nothing usable, 43 the storage failed mid-run, 130 interrupted (a re-run resumes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
from typing import Any

import click

from whisperfleet_runner import contract
from whisperfleet_runner.cli import options

log = logging.getLogger(__name__)


def _configure_logging(quiet: bool, verbose: bool) -> None:
    from rich.console import Console
    from rich.logging import RichHandler

    # With the live display, only warnings interrupt it; --quiet logs every file instead.
    level = logging.DEBUG if verbose else logging.INFO if quiet else logging.WARNING
    from whisperfleet_runner.storage.errors import ScrubbingFilter

    handler = RichHandler(console=Console(stderr=True), show_path=False, markup=False,
                          rich_tracebacks=False, log_time_format="[%X]")
    handler.addFilter(ScrubbingFilter())
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)
    # Library chatter (botocore, faster_whisper) only when asked for.
    for noisy in ("botocore", "s3fs", "fsspec", "urllib3", "faster_whisper", "aiobotocore"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _fail(message: str, code: int = contract.EXIT_USAGE) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


_EPILOG = """\b
Examples:
  whisperfleet transcribe talks/ -o transcripts/ --model tiny.en --device cpu
  whisperfleet transcribe 'talks/**/*.mp3' s3://bucket/calls/ -o s3://bucket/out/
  whisperfleet transcribe -o out/ -- -intro.wav      (names starting with '-' go after --)
\b
Exit codes: 0 all done or skipped, 1 some files failed, 2 bad usage or nothing
usable, 43 the storage failed mid-run (unreachable after retries, bucket or
credentials gone), 130 interrupted (run the same command again to finish).
"""


def _summary_path(_ctx: click.Context, _param: click.Parameter, value: str | None
                  ) -> str | None:
    # Checked before any work: a run of hours must not end in a traceback over its summary.
    if value is None:
        return None
    folder = os.path.dirname(os.path.abspath(value))
    if not os.path.isdir(folder):
        raise click.BadParameter(f"folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(value)
                                          and not os.access(value, os.W_OK)):
        raise click.BadParameter(f"{value} is not writable")
    return value


@click.command("transcribe", epilog=_EPILOG)
@click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")
@click.option("-o", "--output", required=True, metavar="FOLDER|URI",
              help="Output folder or prefix (s3://…); outputs mirror the input paths.")
@options.model_options
@options.transcription_options
@options.output_options
@options.device_options
@click.option("-q", "--quiet", is_flag=True, help="No live display: log lines only.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--summary-json", type=click.Path(dir_okay=False), default=None,
              callback=_summary_path, help="Also write the run summary as JSON to this file.")
@click.option("--metrics-port", type=click.IntRange(min=0, max=65535), default=0,
              metavar="PORT", help="Serve Prometheus metrics on this port while running "
                                   "(all interfaces; default 0: off).")
def transcribe_command(inputs: tuple[str, ...], output: str, model: contract.ModelOptions,
                       transcription: contract.TranscriptionOptions,
                       output_choice: options.OutputChoice, device_choice: options.DeviceChoice,
                       quiet: bool, verbose: bool, summary_json: str | None,
                       metrics_port: int) -> None:
    """Transcribe INPUT files, folders (recursive), globs or URIs into OUTPUT.

    One worker per chosen GPU (a process each; with one GPU or the CPU, this process),
    longest files first; files whose outputs all exist are skipped, so re-running after
    Ctrl-C or a failure finishes the rest.
    """
    _configure_logging(quiet, verbose)
    from whisperfleet_runner import storage
    from whisperfleet_runner.fleet import scheduler
    from whisperfleet_runner.gpu import choice as gpu_choice
    from whisperfleet_runner.gpu import devices
    from whisperfleet_runner.local import inputs as gathering
    from whisperfleet_runner.storage import run_lock

    output = _output_uri(output)
    job = contract.JobOptions(
        contract.OutputOptions(output, output_choice.formats, output_choice.overwrite,
                             output_choice.keep_partial),
        model, transcription)
    try:
        choice = gpu_choice.choose_local(device_choice.gpus, device_choice.min_free_mib,
                                         device_choice.device)
    except devices.NoGpuError as exc:
        lines = exc.choice.report() if exc.choice else []
        _fail("--device cuda: no usable GPU.\n" + "\n".join(f"  {ln}" for ln in lines)
              + ("\n" if lines else "") + f"  ({exc})")
        return
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--gpus") from exc
    for warning in choice.warnings:
        log.warning("%s", warning)
    if choice.device == "cuda":
        for refusal in choice.refused:
            log.warning("not using %s: %s", refusal.target, refusal.reason)
    lock = contextlib.ExitStack()
    try:
        storage.check_writable(output)
        # Before the listing that decides the skips: a run that waited for another's
        # lock must not act on what was done before that run finished.
        lock.enter_context(run_lock.run_lock(output, _stop_taking_files))
        gathered = gathering.gather(inputs, output_choice.include, output)
        if not output_choice.overwrite:  # one listing of the output decides every skip
            gathered.files = storage.mark_done(gathered.files, output, output_choice.formats)
    except (gathering.InputError, storage.StorageError, run_lock.OutputBusy) as exc:
        lock.close()
        _fail(str(exc))
        return
    labeled = [(f"GPU {g.label}", g) for g in choice.gpus] if choice.device == "cuda" else []
    specs = scheduler.worker_specs(labeled, model.compute_type, os.environ,
                                   files=len(gathered.files))
    metrics = None
    if metrics_port:
        from whisperfleet_runner.fleet.metrics import RunMetrics

        metrics = RunMetrics(gpus=[g.uuid for g in choice.gpus])
        metrics.plan(len(gathered.files))
        try:
            metrics.serve(metrics_port, "0.0.0.0")
        except OSError as exc:
            lock.close()
            _fail(f"--metrics-port {metrics_port}: {exc.strerror or exc}")
    preload = _preload(specs, model, gathered.files,  # after the last early exit above
                       transcription)
    observer = local_progress(quiet)
    with lock, observer:
        summary = scheduler.run(gathered.files, job, specs, observer, refused=gathered.refused,
                                metrics=metrics, preload=preload)
    summary.duplicates = gathered.duplicates
    code = exit_code(summary)
    try:
        _report(summary, choice, quiet, summary_json)
    except OSError as exc:  # the summary file only: the transcripts are written
        click.echo(f"Error: cannot write --summary-json {summary_json}: {exc.strerror}", err=True)
        code = code or contract.EXIT_USAGE
    sys.exit(code)


def _preload(specs: list[Any], model: contract.ModelOptions, files: list[Any],
             transcription: contract.TranscriptionOptions) -> Any:
    """With one device the run works in this process: its model starts loading now, on a
    thread, beside the display's start and the first reads, instead of after them. Not
    when the listings showed every file done: a re-run of a finished batch loads nothing.
    With several GPUs each spawned worker loads its own."""
    if len(specs) != 1 or all(f.done is True for f in files):
        return None
    from whisperfleet_runner.fleet.inprocess import ModelPreload

    # Packing isolates clips that share a window: never needed by a lone file.
    several = sum(f.done is not True for f in files) > 1
    preload = ModelPreload(model, specs[0], transcription if several else None)
    preload.start()
    return preload


def _stop_taking_files(why: str) -> None:
    """The run lock was taken from this run (it stalled for minutes): stop as a first Ctrl-C
    does (no new file is started; exit 130). The files already in hand are finished, and the
    run that took over may do them again: outputs are complete either way."""
    log.error("%s", why)
    os.kill(os.getpid(), signal.SIGINT)


def _output_uri(output: str) -> str:
    from whisperfleet_runner.storage import keys

    if keys.protocol(output) not in ("file", "local"):
        return output
    path = keys.local_path(output)
    if os.path.exists(path) and not os.path.isdir(path):
        _fail(f"output {output} exists and is not a folder")
    return os.path.abspath(path)


def local_progress(quiet: bool) -> Any:
    from whisperfleet_runner.local import progress

    return progress.LogProgress() if quiet else progress.LiveProgress()


def exit_code(summary: Any) -> int:
    if summary.interrupted:
        return contract.EXIT_INTERRUPTED
    if summary.storage_lost:  # the run stopped unfinished; the code says why, as pods do
        return contract.Reason(summary.storage_lost).exit_code
    if summary.nothing_usable:
        return contract.EXIT_USAGE
    return contract.EXIT_SOME_FAILED if summary.failed else contract.EXIT_OK


def _report(summary: Any, choice: Any, quiet: bool, summary_json: str | None) -> None:
    from rich.console import Console

    from whisperfleet_runner.local import progress

    if quiet:
        for line in progress.summary_lines(summary):
            log.info("%s", line)
        for line in summary.errors:
            log.error("%s", line)
    else:
        console = Console()
        if not console.is_terminal:  # piped: never cut URIs and reasons to 80 columns
            console = Console(width=max(console.width, 160))
        progress.print_summary(summary, console)
    if summary_json:
        data = summary.to_dict()
        data["device"] = choice.device
        data["gpus_chosen"] = [g.uuid for g in choice.gpus]
        data["gpus_refused"] = [{"target": r.target, "reason": r.reason} for r in choice.refused]
        with open(summary_json, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
