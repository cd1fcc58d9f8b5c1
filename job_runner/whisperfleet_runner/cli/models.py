"""`whisperfleet models pull`: stage a model once where every pod (or machine) reads it.

The model comes from a local CTranslate2 folder, or from the Hugging Face hub once (through
faster-whisper's own download code, which honours HF_TOKEN, HF_ENDPOINT and the CA bundle
in the environment). It is written in the staged layout (`decode.model_store`), so runs
name it with `--model URI` (a TranscriptionJob with `spec.model.uri`) and never reach a hub.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from whisperfleet_runner.contract import EXIT_STORAGE, EXIT_USAGE

_EXAMPLES = """
\b
Examples:
  whisperfleet models pull large-v3 --to s3://models/large-v3/
  whisperfleet models pull ./my-ct2-model --to s3://models/mine/ --name mine
  whisperfleet models pull large-v3 --to /mnt/whisper-models/large-v3   # a PVC's folder
"""


@click.group("models")
def models_command() -> None:
    """Stage models in object storage or a volume, for runs with no hub."""


@models_command.command("pull", epilog=_EXAMPLES)
@click.argument("model")
@click.option("--to", "target", required=True, metavar="URI",
              help="Where to stage it: s3://, gs://, az://, file:// or a folder.")
@click.option("--name", default=None,
              help="The name recorded beside the model (default: MODEL, or the folder's name).")
@click.option("--model-cache", type=click.Path(file_okay=False), default=None,
              help="Where a hub download is cached (default: the Hugging Face cache).")
def pull_command(model: str, target: str, name: str | None, model_cache: str | None) -> None:
    """Write MODEL (a size name, a Hugging Face repo id or a CTranslate2 folder) to URI, in
    the layout `--model URI` reads: the model's files and whisperfleet-model.json (each
    file's size and SHA-256), written last."""
    from whisperfleet_runner.decode import model_store
    from whisperfleet_runner.decode.models import ModelNotFoundError, resolve_model
    from whisperfleet_runner.storage import StorageError

    if model_store.is_model_uri(model):
        _fail(f"MODEL is {model!r}: give a size name, a Hugging Face repo id or a local "
              "folder (a staged model is already staged)", EXIT_USAGE)
    try:
        folder = Path(resolve_model(model, model_cache))
        label = name or (folder.name if Path(model).expanduser().is_dir() else model)
        document, written = model_store.stage(folder, target, label)
    except (ModelNotFoundError, model_store.StagedModelError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except StorageError as exc:
        _fail(f"staging failed ({exc.reason}): {exc}", EXIT_STORAGE)
    files = document["files"]
    size = sum(int(entry["size"]) for entry in files.values())
    verb = "staged" if written else "already staged, unchanged:"
    click.echo(f"{verb} {label} at {target} ({len(files)} files, {size / 1e6:.1f} MB; "
               f"model.bin sha256 {files['model.bin']['sha256'][:16]}…)")
    if model_store.is_model_uri(target) and not target.startswith("file://"):
        click.echo(f"use it with: --model {target}   (a TranscriptionJob: spec.model.uri)")
    else:  # a folder: a PVC holds it, mounted as the job's spec.model.cacheVolume
        click.echo(f"use it with: --model {target}   (a TranscriptionJob: spec.model.name, the "
                   "folder's path inside spec.model.cacheVolume)")


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)
