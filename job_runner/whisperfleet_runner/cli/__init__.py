"""The `whisperfleet` command: thin click commands over plain functions.

Each subcommand lives in its own module and is added here explicitly; heavy imports
(faster-whisper, fsspec) happen inside the commands, so `whisperfleet --help` is fast.
"""

from __future__ import annotations

import click

from whisperfleet_runner import __version__
from whisperfleet_runner.cli.forget import forget_state_command
from whisperfleet_runner.cli.gpus import gpus_command
from whisperfleet_runner.cli.models import models_command
from whisperfleet_runner.cli.plan import plan_command
from whisperfleet_runner.cli.shard import run_shard_command
from whisperfleet_runner.cli.transcribe import transcribe_command
from whisperfleet_runner.fleet import allocator


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="whisperfleet")
def main() -> None:
    """Batch speech transcription with faster-whisper on the GPUs you choose."""
    allocator.one_arena()  # before any thread starts (a spawned worker sets its own)


for _command in (transcribe_command, gpus_command, models_command, run_shard_command,
                 plan_command, forget_state_command):
    main.add_command(_command)
