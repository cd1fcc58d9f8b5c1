"""Input listing, reading and complete-or-absent publishing over fsspec URLs.

One URL model for `s3://`, `gs://`, `az://`, `memory://`, `file://` and plain paths. Local
folders are walked and written with `os` directly (pruning, fsync, atomic rename); every other
protocol goes through the fsspec filesystem from `url_to_fs`. s3fs (via botocore) honours the
standard AWS environment itself, including `AWS_ENDPOINT_URL`/`AWS_ENDPOINT_URL_S3`, profiles
and `AWS_DEFAULT_REGION`; only `AWS_REGION` is passed on explicitly. Anonymous access is never
used implicitly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from whisperfleet_runner.config import DEFAULT_INCLUDE, STATE_DIR, Reason
from whisperfleet_runner.storage.errors import StorageError, wrap_error
from whisperfleet_runner.storage.keys import (
    UnsafeKeyError,
    in_state_dir,
    is_temporary,
    local_path,
    matches,
    output_uris,
    protocol,
)

__all__ = [
    "InputFile",
    "StorageError",
    "UnsafeKeyError",
    "check_writable",
    "exists",
    "list_inputs",
    "list_uris",
    "output_uris",
    "outputs_exist",
    "publish",
    "publish_set",
    "read_bytes",
    "read_text",
    "remove",
    "wrap_error",
]

log = logging.getLogger(__name__)
_LOCAL = ("file", "local")


@dataclass(frozen=True)
class InputFile:
    uri: str  # reads exactly this object
    key: str  # relative to the input root, exactly as stored (may hold `//`, `./`, `../`)
    size: int


# --- filesystems ------------------------------------------------------------------------
_fs_cache: dict[str, Any] = {}
_fs_lock = threading.Lock()
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCS", "AZURE_", "FSSPEC_")


def _filesystem(uri: str) -> tuple[Any, str]:
    """(fsspec filesystem, path) for a remote URI.

    fsspec caches instances by constructor arguments only, so an instance made before the
    credentials in the environment changed would keep using the old ones. We key our own
    cache on a digest of the storage environment instead, and disable listing caches so
    `outputs_exist` never answers from a stale directory listing.
    """
    from fsspec.core import url_to_fs

    scheme = protocol(uri)
    if re.match(r"^[^:/]+://[^/@]*:[^/@]*@", uri):
        # Libraries echo such URIs in their errors; refuse before any of them sees it.
        raise StorageError(Reason.INVALID_URI,
                           f"{uri}: credentials inside a URI are not accepted; "
                           "give them in the environment (the storage secret)")
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    digest = hashlib.sha256(repr((scheme, os.getpid(), env)).encode()).hexdigest()
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if scheme in ("s3", "s3a"):
        region = os.environ.get("AWS_REGION")
        if region and not os.environ.get("AWS_DEFAULT_REGION"):
            options["client_kwargs"] = {"region_name": region}
    try:
        with _fs_lock:
            fs = _fs_cache.get(digest)
            if fs is None:
                fs, _ = url_to_fs(uri, **options)
                _fs_cache.clear()  # environment changed: drop instances with old credentials
                _fs_cache[digest] = fs
        return fs, fs._strip_protocol(uri)
    except Exception as exc:
        raise wrap_error(uri, exc) from exc


def _is_local(uri: str) -> bool:
    return protocol(uri) in _LOCAL


# --- listing ----------------------------------------------------------------------------
def list_inputs(uri: str, include: Sequence[str] = DEFAULT_INCLUDE) -> list[InputFile]:
    """Files under a prefix/folder whose relative key matches `include`, sorted by key.

    A URI naming a single object is returned as is (explicit beats the globs). An empty prefix
    yields []; a missing bucket or folder raises StorageError. Keys inside `.whisperfleet/`
    state folders and our own temporary files are never listed. One odd key never aborts
    the listing: it is logged and skipped.
    """
    found = _list_local(uri, include) if _is_local(uri) else _list_remote(uri, include)
    return sorted(found, key=lambda f: f.key)


def _accept(key: str, include: Sequence[str]) -> bool:
    return not in_state_dir(key) and not is_temporary(key) and matches(key, include)


def _list_local(uri: str, include: Sequence[str]) -> Iterator[InputFile]:
    path = local_path(uri)
    scheme = "file://" if uri.startswith("file://") else ""
    path = os.path.abspath(path) if not scheme else path
    if os.path.isfile(path):
        yield InputFile(uri=scheme + path, key=os.path.basename(path), size=os.path.getsize(path))
        return
    if not os.path.isdir(path):
        raise StorageError(Reason.NOT_FOUND,
                           f"{uri} does not exist: give an existing folder or file")

    def skipped(err: OSError) -> None:
        log.warning("skipping unreadable folder %s: %s", err.filename, err.strerror)

    root = path.rstrip("/") or "/"
    for folder, dirs, names in os.walk(root, onerror=skipped):
        dirs[:] = sorted(d for d in dirs if d != STATE_DIR)  # prune state folders
        for name in names:
            full = os.path.join(folder, name)
            key = os.path.relpath(full, root).replace(os.sep, "/")
            try:
                key.encode("utf-8")  # undecodable bytes in a name cannot go into manifests
                if not _accept(key, include) or not os.path.isfile(full):
                    continue
                yield InputFile(uri=scheme + full, key=key, size=os.path.getsize(full))
            except (UnicodeEncodeError, OSError) as exc:
                log.warning("skipping %r: %s", full, exc)


def _list_remote(uri: str, include: Sequence[str]) -> Iterator[InputFile]:
    fs, root = _filesystem(uri)
    root = root.rstrip("/")
    base = uri if uri.endswith("/") else uri + "/"
    try:
        if not uri.endswith("/") and fs.isfile(root):
            info = fs.info(root)
            yield InputFile(uri=uri, key=root.rsplit("/", 1)[-1], size=int(info.get("size") or 0))
            return
        entries = fs.find(root, detail=True)
        if not entries and not uri.endswith("/") and not fs.isdir(root):
            raise StorageError(Reason.NOT_FOUND, f"nothing found at {uri}: check the URI")
    except StorageError:
        raise
    except Exception as exc:
        raise wrap_error(uri, exc) from exc
    for name, info in entries.items():
        try:
            if info.get("type") == "directory" or name.endswith("/"):
                continue
            if not name.startswith(root + "/"):
                log.warning("skipping %r: listed outside %r", name, root)
                continue
            key = name[len(root) + 1 :]
            if _accept(key, include):
                yield InputFile(uri=base + key, key=key, size=int(info.get("size") or 0))
        except Exception as exc:  # one odd entry must not abort the listing
            log.warning("skipping listed entry %r: %s", name, exc)


def list_uris(prefix: str, suffix: str = "") -> list[str]:
    """All object URIs under `prefix` ending in `suffix`, sorted; [] when nothing is there.

    Plain helper for ledger folders (state folders are listed; temporary files are not).
    """
    base = prefix.rstrip("/") + "/"
    if _is_local(prefix):
        root = local_path(base)
        if not os.path.isdir(root):
            return []
        out = []
        for folder, _, names in os.walk(root):
            for name in names:
                rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
                if rel.endswith(suffix) and not is_temporary(rel):
                    out.append(base + rel)
        return sorted(out)
    fs, root = _filesystem(base)
    root = root.rstrip("/")
    try:
        names = fs.find(root)
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise wrap_error(prefix, exc) from exc
    rels = (n[len(root) + 1 :] for n in names)
    return sorted(base + r for r in rels if r.endswith(suffix) and not is_temporary(r))


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
    uris = list(uris)
    return bool(uris) and all(exists(u) for u in uris)


# --- writing ----------------------------------------------------------------------------
def publish(uri: str, data: bytes | str) -> None:
    """Write one object complete-or-absent.

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
            fs, path = _filesystem(uri)
            fs.pipe_file(path, payload)
    except StorageError:
        raise
    except Exception as exc:
        raise wrap_error(uri, exc) from exc
    log.debug("published %s (%d bytes)", uri, len(payload))


def _publish_local(path: str, payload: bytes) -> None:
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{secrets.token_hex(6)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Exceptions (and Ctrl-C) clean up; a hard kill leaves only a hidden .tmp- file,
        # which neither outputs_exist nor listings accept.
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
