"""The `whisperfleet` command: thin click commands over plain functions.

Each subcommand lives in its own module and is registered here; heavy imports
(faster-whisper, fsspec) happen inside the commands, so `whisperfleet --help` is fast.
"""

from __future__ import annotations

import click

from whisperfleet_runner import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="whisperfleet")
def main() -> None:
    """Batch speech transcription with faster-whisper on the GPUs you choose."""


def _register() -> None:
    # Subcommand modules register themselves on `main` when imported.
    import importlib

    for name in ("cli_transcribe", "cli_gpus", "cli_shard", "cli_plan"):
        try:
            importlib.import_module(f"whisperfleet_runner.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"whisperfleet_runner.{name}":
                raise


_register()
