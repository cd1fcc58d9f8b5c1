"""Input listing, reading and complete-or-absent publishing over fsspec URLs.

One URL model for `s3://`, `gs://`, `az://`, `memory://`, `file://` and plain paths. Local
folders are walked and written with `os` directly (pruning, fsync, atomic rename); every other
protocol goes through the fsspec filesystem from `fs.filesystem`. Listings live in `listing`,
what is done already in `done`, reading one input a few blocks at a time (`open_input`) in
`ranged`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from whisperfleet_runner.contract import STATE_DIR, Reason
from whisperfleet_runner.storage.done import common_start, iter_outputs, mark_done
from whisperfleet_runner.storage.errors import StorageError, store_lost, wrap_error, write_error
from whisperfleet_runner.storage.fs import filesystem as _filesystem
from whisperfleet_runner.storage.fs import is_local as _is_local
from whisperfleet_runner.storage.fs import is_s3, s3_upload
from whisperfleet_runner.storage.keys import UnsafeKeyError, local_path, output_uris
from whisperfleet_runner.storage.listing import InputFile, iter_inputs, list_inputs, list_uris
from whisperfleet_runner.storage.ranged import open_input
from whisperfleet_runner.storage.temporaries import temporary_path

__all__ = [
    "InputFile",
    "StorageError",
    "UnsafeKeyError",
    "check_writable",
    "common_start",
    "exists",
    "iter_inputs",
    "iter_lines",
    "iter_outputs",
    "list_inputs",
    "list_uris",
    "mark_done",
    "open_input",
    "output_uris",
    "outputs_exist",
    "publish",
    "publish_set",
    "publish_stream",
    "read_bytes",
    "read_text",
    "remove",
    "store_lost",
    "wrap_error",
]

log = logging.getLogger(__name__)
# Reads of a manifest move through memory this much at a time.
CHUNK_BYTES = 8 << 20


# --- reading ----------------------------------------------------------------------------
def read_bytes(uri: str) -> bytes:
    try:
        if _is_local(uri):
            with open(local_path(uri), "rb") as fh:
                return fh.read()
        fs, path = _filesystem(uri)
        return bytes(fs.cat_file(path))
    except Exception as exc:
        raise wrap_error(uri, exc) from exc


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def iter_lines(uri: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The lines of one object (each with its newline, the last maybe without), read
    `chunk_bytes` at a time: memory holds a chunk, not the object. One ranged GET per chunk,
    no HEAD: each read asks for one byte more than it keeps, so a short read is the end."""
    if _is_local(uri):
        try:
            with open(local_path(uri), "rb") as fh:
                yield from fh
        except OSError as exc:
            raise wrap_error(uri, exc) from exc
        return
    fs, path = _filesystem(uri)
    start, rest = 0, b""
    while True:
        try:
            data = bytes(fs.cat_file(path, start=start, end=start + chunk_bytes + 1))
        except Exception as exc:
            if start == 0 and _empty_range(exc):  # a range read of an empty object
                return
            raise wrap_error(uri, exc) from exc
        more = len(data) > chunk_bytes
        lines = (rest + (data[:chunk_bytes] if more else data)).split(b"\n")
        rest = lines.pop()  # after the last newline: the start of a line in the next chunk
        for line in lines:
            yield line + b"\n"
        if not more:
            if rest:
                yield rest
            return
        start += chunk_bytes


def _empty_range(exc: BaseException) -> bool:
    text = f"{exc} {getattr(exc, '__cause__', '')}"
    return "InvalidRange" in text or "416" in text


def exists(uri: str) -> bool:
    """True when the object exists; StorageError when the answer is unknowable (denied…)."""
    try:
        if _is_local(uri):
            return os.path.isfile(local_path(uri))
        fs, path = _filesystem(uri)
        fs.info(path)
        return True
    except FileNotFoundError:
        return False
    except Exception as exc:
        err = wrap_error(uri, exc)
        if err.reason == Reason.NOT_FOUND:
            return False
        raise err from exc


def outputs_exist(uris: Iterable[str]) -> bool:
    """True when every output of a set exists.

    Every single output is published complete-or-absent, so "all present" means the set is
    complete; a crash between two publishes leaves the set incomplete and it is redone.
    """
    # json first: it is published last, so when a set is incomplete one request says so.
    uris = sorted(uris, key=lambda u: not u.endswith(".json"))
    return bool(uris) and all(exists(u) for u in uris)


# --- writing ----------------------------------------------------------------------------
def publish(uri: str, data: bytes | str, *, once: bool = False) -> None:
    """Write one object complete-or-absent. `once`: one attempt on S3 (a store judged lost).

    Local: a hidden temporary file in the same folder, fsync, then `os.replace` (atomic on
    POSIX), then fsync of the folder so the rename survives a power cut. Object stores: a
    single PUT (or multipart upload) only becomes visible once the whole body arrived, so we
    write the final key directly; a temporary key plus copy would only add debris on crash.
    """
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    try:
        if _is_local(uri):
            _publish_local(local_path(uri), payload)
        else:
            fs, path = _filesystem(uri, once=once)
            fs.pipe_file(path, payload)
    except StorageError:
        raise
    except Exception as exc:
        raise write_error(uri, exc) from exc
    log.debug("published %s (%d bytes)", uri, len(payload))


def _publish_local(path: str, payload: bytes) -> None:
    with _local_atomic(path) as fh:
        fh.write(payload)


@contextlib.contextmanager
def _local_atomic(path: str) -> Iterator[BinaryIO]:
    """A hidden temporary file in the target's folder; on a clean exit fsync, `os.replace`
    (atomic on POSIX) and fsync of the folder so the rename survives a power cut."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_path(os.path.abspath(path))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Exceptions (and Ctrl-C) clean up; a hard kill leaves only a hidden .tmp- file,
        # which neither outputs_exist nor listings accept, and the next run that lists the
        # output removes (storage.temporaries).
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the rename itself is still atomic
    finally:
        os.close(dir_fd)


@contextlib.contextmanager
def publish_stream(uri: str) -> Iterator[BinaryIO]:
    """Write one object complete-or-absent from many writes, without holding it in memory.

    Local: written in place as `publish` does (temporary file, rename). Object stores: spooled
    to a temporary file (TMPDIR), then uploaded; S3 one 5 MiB part at a time (`s3_upload`).
    An exception inside the block publishes nothing.
    """
    try:
        if _is_local(uri):
            with _local_atomic(local_path(uri)) as fh:
                yield fh
            return
        fs, path = _filesystem(uri)
        with tempfile.NamedTemporaryFile(prefix="whisperfleet-", suffix=".part") as spool:
            yield spool  # type: ignore[misc]
            spool.flush()
            if is_s3(uri):
                size = spool.tell()
                spool.seek(0)
                s3_upload(fs, path, spool, size)
            else:
                fs.put_file(spool.name, path)
    except StorageError:
        raise
    except OSError as exc:
        raise write_error(uri, exc) from exc
    except Exception as exc:
        if type(exc).__module__.startswith(("botocore", "aiobotocore", "s3fs", "fsspec",
                                            "gcsfs", "adlfs", "azure.")):
            raise write_error(uri, exc) from exc
        raise  # the caller's own error inside the block: not a storage failure


def remove(uri: str) -> None:
    """Delete one object or file; a missing one is fine."""
    try:
        if _is_local(uri):
            os.unlink(local_path(uri))
        else:
            fs, path = _filesystem(uri)
            fs.rm_file(path)
    except FileNotFoundError:
        return
    except Exception as exc:
        raise wrap_error(uri, exc) from exc


def publish_set(outputs: dict[str, bytes | str]) -> None:
    """Publish one file's outputs, the json last: a reader that sees the json sees the rest."""
    for uri in sorted(outputs, key=lambda u: (u.endswith(".json"), u)):
        publish(uri, outputs[uri])


def check_writable(output: str) -> None:
    """Fail before any work when the output bucket is missing or the credentials may not
    write there: otherwise every file would be transcribed only to fail at publishing."""
    if _is_local(output):
        return  # folders are created as needed; a refused write fails its file with a reason
    # A LIST first: unlike a HEAD it tells a missing bucket (BucketNotFound) from a missing key.
    state = f"{output.rstrip('/')}/{STATE_DIR}/preflight/"
    probe = f"{state}write-check-{secrets.token_hex(16)}"
    try:
        list_inputs(state)
        publish(probe, b"")
    except StorageError as exc:
        # Name the output the user gave, not our probe key inside it.
        text = str(exc).replace(probe, output).replace(state, output)
        raise StorageError(exc.reason, "output " + text) from exc
    try:
        remove(probe)
    except StorageError as exc:  # may write, may not delete: harmless, say so once
        log.debug("could not remove the write check %s: %s", probe, exc)
