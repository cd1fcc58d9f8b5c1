"""Models staged in object storage or a folder: the layout `whisperfleet models pull` writes,
and the one copy a machine (a pod) makes of it before loading.

A staged model is a folder or prefix holding a CTranslate2 Whisper model (model.bin,
config.json, tokenizer.json, vocabulary.*, preprocessor_config.json …) and CHECKSUMS, a small
JSON file giving each file's size and SHA-256. CHECKSUMS is written last, so a model whose
staging broke off has none and is refused rather than loaded half.

Remote models (`s3://`, `gs://`, `az://`, any fsspec URL but a local one) are copied once
into a local cache (`$XDG_CACHE_HOME/whisperfleet/models/`, the pod's home emptyDir) under a
file lock, so the several worker processes of a multi-GPU pod copy it once between them;
every file is checked against CHECKSUMS (size, then SHA-256 while it streams) before the
copy is renamed into place. A later load whose remote CHECKSUMS is unchanged reads nothing
more. Local models (`file://` or a path: a read-only volume) are read in place; there only
the sizes are checked, since hashing gigabytes at every start would cost more than a copy.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from whisperfleet_runner import storage
from whisperfleet_runner.contract import Reason
from whisperfleet_runner.storage.errors import StorageError, write_error
from whisperfleet_runner.storage.fs import filesystem, is_local, is_s3, s3_upload
from whisperfleet_runner.storage.keys import local_path

log = logging.getLogger(__name__)

CHECKSUMS = "whisperfleet-model.json"
MODEL_FILE = "model.bin"
FORMAT = 1
_URI = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
_READ_BYTES = 8 << 20  # one ranged GET per block while copying


class StagedModelError(RuntimeError):
    """A staged model is missing, incomplete or damaged; the message names the URI."""


def is_model_uri(name: str) -> bool:
    """Whether a `--model` value names a staged model by URI (s3://, gs://, file:// …)."""
    return bool(_URI.match(name))


def checksums_of(folder: Path, name: str) -> dict[str, Any]:
    """The CHECKSUMS document for a local CTranslate2 model folder (every regular file)."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name == CHECKSUMS or path.name.startswith("."):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            while block := fh.read(_READ_BYTES):
                digest.update(block)
        files[path.name] = {"size": path.stat().st_size, "sha256": digest.hexdigest()}
    if MODEL_FILE not in files:
        raise StagedModelError(f"{folder} holds no {MODEL_FILE}: not a CTranslate2 model folder")
    return {"format": FORMAT, "name": name, "files": files}


def read_checksums(uri: str) -> dict[str, Any]:
    """The CHECKSUMS of the model at `uri`; StagedModelError when there is none or it is
    not ours. Storage failures other than a missing object stay StorageErrors (retried)."""
    where = f"{uri.rstrip('/')}/{CHECKSUMS}"
    try:
        document = json.loads(storage.read_bytes(where))
    except StorageError as exc:
        if exc.reason != Reason.NOT_FOUND:
            raise
        raise StagedModelError(
            f"no staged model at {uri}: {where} does not exist (a model staged by "
            f"`whisperfleet models pull NAME --to {uri}` has it; its staging may not have "
            "finished)") from exc
    except ValueError as exc:
        raise StagedModelError(f"{where} is not a whisperfleet checksum file: {exc}") from exc
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, dict) or MODEL_FILE not in files or any(
            "/" in n or n in ("", ".", "..") for n in files):
        raise StagedModelError(f"{where} is not a whisperfleet checksum file "
                               f"(no files entry with {MODEL_FILE}, or a file name with /)")
    return document


def stage(folder: Path, uri: str, name: str) -> tuple[dict[str, Any], bool]:
    """Write the model in `folder` to `uri` in the staged layout, CHECKSUMS last; (the
    CHECKSUMS document, whether anything was written: False when `uri` already holds it)."""
    document = checksums_of(folder, name)
    try:
        if read_checksums(uri)["files"] == document["files"]:
            return document, False
    except StagedModelError:
        pass  # nothing (whole) there yet
    base = uri.rstrip("/")
    # Readers of a model being replaced see none (and say so) rather than old checksums
    # over new files.
    storage.remove(f"{base}/{CHECKSUMS}")
    for file_name in document["files"]:
        _upload(folder / file_name, f"{base}/{file_name}")
    storage.publish(f"{base}/{CHECKSUMS}", json.dumps(document, indent=1, sort_keys=True))
    return document, True


def _upload(path: Path, uri: str) -> None:
    """One file to `uri`, complete or absent, streamed from disk (never spooled: a model
    file can be gigabytes)."""
    if is_local(uri):
        with storage.publish_stream(uri) as out, path.open("rb") as source:
            shutil.copyfileobj(source, out, _READ_BYTES)
        return
    fs, key = filesystem(uri)
    try:
        if is_s3(uri):
            with path.open("rb") as source:
                s3_upload(fs, key, source, path.stat().st_size)
        else:
            fs.put_file(str(path), key)
    except StorageError:
        raise
    except Exception as exc:
        raise write_error(uri, exc) from exc


def cache_root() -> Path:
    """Where remote models are copied: the user's cache (a pod's home emptyDir)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "whisperfleet" / "models"


def local_model(uri: str, root: Path | None = None) -> str:
    """A local folder holding the model staged at `uri`, copying it first when remote."""
    if is_local(uri):
        return _in_place(uri)
    document = read_checksums(uri)
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    with _locked(target.with_suffix(".lock")):
        if _matches(target, document):
            log.info("model %s: the copy at %s is current", uri, target)
            return str(target)
        _copy(uri, document, target)
    return str(target)


def _in_place(uri: str) -> str:
    folder = Path(local_path(uri))
    if not (folder / MODEL_FILE).is_file():
        raise StagedModelError(f"no model at {uri}: {folder / MODEL_FILE} does not exist")
    check_sizes(folder, uri)
    log.info("model %s: read in place", uri)
    return str(folder)


def check_sizes(folder: Path, where: str) -> None:
    """When `folder` holds CHECKSUMS (it was staged by `models pull`), every file it lists
    has its size: a copy onto the volume that broke off is refused, not loaded."""
    if not (folder / CHECKSUMS).is_file():
        return  # a folder staged by hand: nothing to check it against
    document = read_checksums(str(folder))
    for name, entry in document["files"].items():
        size = (folder / name).stat().st_size if (folder / name).is_file() else None
        if size != entry["size"]:
            raise StagedModelError(
                f"the model at {where} is incomplete: {name} has "
                f"{'no file' if size is None else f'{size} bytes'}, {CHECKSUMS} says "
                f"{entry['size']} bytes")


def _matches(target: Path, document: dict[str, Any]) -> bool:
    """The copy at `target` was made from this very CHECKSUMS and is still whole."""
    try:
        if json.loads((target / CHECKSUMS).read_text()) != document:
            return False
    except (OSError, ValueError):
        return False
    return all((target / n).is_file() and (target / n).stat().st_size == e["size"]
               for n, e in document["files"].items())


def _copy(uri: str, document: dict[str, Any], target: Path) -> None:
    files: dict[str, dict[str, Any]] = document["files"]
    total = sum(int(e["size"]) for e in files.values())
    free = shutil.disk_usage(target.parent).free
    if free < total:
        raise StagedModelError(
            f"cannot copy the model at {uri} ({total} bytes) to {target.parent}: only {free} "
            "bytes free there (give the pod more ephemeral storage)")
    # Under the lock no one else copies this model: partial copies of processes that were
    # killed mid-copy are debris.
    for stale in target.parent.glob(f"{target.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    partial.mkdir()
    try:
        for name, entry in files.items():
            _copy_file(f"{uri.rstrip('/')}/{name}", entry, partial / name)
        (partial / CHECKSUMS).write_text(json.dumps(document, sort_keys=True))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("model %s: copied %d bytes (%d files) to %s, checksums verified",
             uri, total, len(files), target)


def _copy_file(uri: str, entry: dict[str, Any], path: Path) -> None:
    digest = hashlib.sha256()
    with storage.open_input(uri, block_bytes=_READ_BYTES, blocks=1) as source:
        size = getattr(source, "size", None)
        if size != entry["size"]:
            raise StagedModelError(f"{uri} has {size} bytes, {CHECKSUMS} says {entry['size']}: "
                                   "stage the model again")
        with path.open("wb") as out:
            while block := source.read(_READ_BYTES):
                digest.update(block)
                out.write(block)
    if digest.hexdigest() != entry["sha256"]:
        raise StagedModelError(f"{uri} does not match its SHA-256 in {CHECKSUMS}: stage the "
                               "model again")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` among this machine's processes (the workers of a pod)."""
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
