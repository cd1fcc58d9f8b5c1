"""`whisperfleet models pull`: stage a model once where every pod (or machine) reads it.

The model comes from a local CTranslate2 folder, or from the Hugging Face hub once (through
faster-whisper's own download code, which honours HF_TOKEN, HF_ENDPOINT and the CA bundle
in the environment). It is written in the staged layout (`decode.model_store`), so runs
name it with `--model URI` (a TranscriptionJob with `spec.model.uri`) and never reach a hub.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from whisperfleet_runner.contract import EXIT_STORAGE, EXIT_USAGE

_EXAMPLES = """
\b
Examples:
  whisperfleet models pull large-v3 --to s3://models/large-v3/
  whisperfleet models pull ./my-ct2-model --to s3://models/mine/ --name mine
  whisperfleet models pull large-v3 distil-large-v3 --into /mnt/whisper-models  # a PVC
"""


@click.group("models")
def models_command() -> None:
    """Stage models in object storage or a volume, for runs with no hub."""


@models_command.command("pull", epilog=_EXAMPLES)
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--to", "target", default=None, metavar="URI",
              help="Where to stage one MODEL: s3://, gs://, az://, file:// or a folder.")
@click.option("--into", "prefix", default=None, metavar="URI",
              help="Stage each MODEL at URI/<MODEL>/ (the layout of a model volume, "
                   "<volume>/<name>/, that spec.model.name reads).")
@click.option("--name", default=None,
              help="The name recorded beside the model (default: MODEL, or the folder's name).")
@click.option("--model-cache", type=click.Path(file_okay=False), default=None,
              help="Where a hub download is cached (default: the Hugging Face cache).")
@click.option("--force", is_flag=True,
              help="Download and stage again a hub model the target already holds.")
def pull_command(models: tuple[str, ...], target: str | None, prefix: str | None,
                 name: str | None, model_cache: str | None, force: bool) -> None:
    """Write each MODEL (a size name, a Hugging Face repo id or a CTranslate2 folder) in the
    layout `--model URI` reads: the model's files and whisperfleet-model.json (each file's
    size and SHA-256), written last. A hub model the target already holds under its name is
    not downloaded again (--force does)."""
    if (target is None) == (prefix is None):
        _fail("give --to URI (one model) or --into URI (each model at URI/<MODEL>/)", EXIT_USAGE)
    if target is not None and len(models) > 1:
        _fail(f"--to takes one model, got {len(models)}: use --into for several", EXIT_USAGE)
    if name is not None and len(models) > 1:
        _fail("--name names one model; it cannot name several", EXIT_USAGE)
    for model in models:
        where = target or f"{str(prefix).rstrip('/')}/{model.strip('/')}"
        _pull_one(model, where, name, model_cache, force)


def _pull_one(model: str, target: str, name: str | None, model_cache: str | None,
              force: bool) -> None:
    from whisperfleet_runner.decode import model_store
    from whisperfleet_runner.decode.models import ModelNotFoundError, resolve_model
    from whisperfleet_runner.storage import StorageError

    if model_store.is_model_uri(model):
        _fail(f"MODEL is {model!r}: give a size name, a Hugging Face repo id or a local "
              "folder (a staged model is already staged)", EXIT_USAGE)
    from_folder = Path(model).expanduser().is_dir()
    try:
        document = None if force or from_folder else _staged_as(target, name or model)
        written = False
        if document is None:
            folder = Path(resolve_model(model, model_cache))
            label = name or (folder.name if from_folder else model)
            document, written = model_store.stage(folder, target, label)
    except (ModelNotFoundError, model_store.StagedModelError) as exc:
        _fail(str(exc), EXIT_USAGE)
    except StorageError as exc:
        _fail(f"staging failed ({exc.reason}): {exc}", EXIT_STORAGE)
    files = document["files"]
    size = sum(int(entry["size"]) for entry in files.values())
    verb = "staged" if written else "already staged, unchanged:"
    click.echo(f"{verb} {document.get('name')} at {target} ({len(files)} files, "
               f"{size / 1e6:.1f} MB; model.bin sha256 {files['model.bin']['sha256'][:16]}…)")
    if model_store.is_model_uri(target) and not target.startswith("file://"):
        click.echo(f"use it with: --model {target}   (a TranscriptionJob: spec.model.uri)")
    else:  # a folder: a PVC holds it, mounted as the job's spec.model.cacheVolume
        click.echo(f"use it with: --model {target}   (a TranscriptionJob: spec.model.name, the "
                   "folder's path inside spec.model.cacheVolume)")


def _staged_as(target: str, name: str) -> dict[str, Any] | None:
    """The target's checksum file when it holds a whole model staged under `name`."""
    from whisperfleet_runner.decode import model_store

    try:
        document = model_store.read_checksums(target)
    except model_store.StagedModelError:
        return None
    return document if document.get("name") == name else None


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)
