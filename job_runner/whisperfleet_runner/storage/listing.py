"""Listings of input files under a prefix or folder, streamed: S3 page by page
(`fs.s3_pages`), local folders one folder at a time, so a million objects never sit in
memory as a listing (other fsspec stores still list whole). Which outputs exist: `done`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from whisperfleet_runner.contract import DEFAULT_INCLUDE, STATE_DIR, Reason
from whisperfleet_runner.storage.errors import StorageError, missing_bucket, wrap_error
from whisperfleet_runner.storage.fs import bucket_missing, filesystem, is_local, is_s3, s3_pages
from whisperfleet_runner.storage.keys import in_state_dir, is_temporary, local_path, matcher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputFile:
    uri: str  # reads exactly this object
    key: str  # relative to the input root, exactly as stored (may hold `//`, `./`, `../`)
    size: int
    # Every output exists (True) or not (False), as a listing of the output saw it; None:
    # unknown, so the run asks the store (one HEAD per output) before working on the file.
    done: bool | None = None
    # A retried or replaced attempt of a job's shard resumes this file: it was not done when
    # the job was planned, so outputs found now were written by an earlier attempt of the
    # same job, and the file counts as succeeded (the job's work), not as skipped.
    resumed: bool = False
    # The ledger record (JSON) of the earlier attempt that wrote its outputs, when that
    # attempt recorded it: the run reports it as it was, without touching the file again.
    earlier: str = ""


def iter_inputs(uri: str, include: Sequence[str] = DEFAULT_INCLUDE) -> Iterator[InputFile]:
    """Files under a prefix/folder whose relative key matches `include`, in key order.

    A URI naming a single object yields just it (explicit beats the globs). An empty prefix
    yields nothing; a missing bucket or folder raises StorageError. Keys inside
    `.whisperfleet/` state folders and our own temporary files are never listed. One odd
    key never aborts the listing: it is logged and skipped.
    """
    accept = matcher(tuple(include))

    def wanted(key: str) -> bool:
        return not in_state_dir(key) and not is_temporary(key) and accept(key)

    if is_local(uri):
        return _local_inputs(uri, wanted)
    return _remote_inputs(uri, wanted)


def list_inputs(uri: str, include: Sequence[str] = DEFAULT_INCLUDE) -> list[InputFile]:
    """`iter_inputs` as a list sorted by key."""
    return sorted(iter_inputs(uri, include), key=lambda f: f.key)


def _local_inputs(uri: str, wanted: Any) -> Iterator[InputFile]:
    path = local_path(uri)
    scheme = "file://" if uri.startswith("file://") else ""
    path = os.path.abspath(path) if not scheme else path
    if os.path.isfile(path):
        yield InputFile(uri=scheme + path, key=os.path.basename(path), size=os.path.getsize(path))
        return
    if not os.path.isdir(path):
        raise StorageError(Reason.NOT_FOUND,
                           f"{uri} does not exist: give an existing folder or file")
    for full, key in _walk_in_key_order(path.rstrip("/") or "/"):
        try:
            key.encode("utf-8")  # undecodable bytes in a name cannot go into manifests
            if wanted(key) and os.path.isfile(full):
                yield InputFile(uri=scheme + full, key=key, size=os.path.getsize(full))
        except (UnicodeEncodeError, OSError) as exc:
            log.warning("skipping %r: %s", full, exc)


def _walk_in_key_order(root: str) -> Iterator[tuple[str, str]]:
    """(path, key) of every non-folder under `root`, in key order, state folders pruned.

    A folder sorts as `name/`, the common start of its keys, so visiting each folder's
    entries in that order yields all keys sorted, as an S3 listing does. Symlinked folders
    are not entered (as os.walk does).
    """

    def entries(folder: str, prefix: str) -> list[tuple[str, str, bool]]:
        try:
            with os.scandir(folder) as scan:
                found = [(e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e.path)
                         for e in scan]
        except OSError as err:
            log.warning("skipping unreadable folder %s: %s", folder, err.strerror)
            return []
        return [(prefix + name, path, name.endswith("/")) for name, path in sorted(found)]

    stack = [iter(entries(root, ""))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif not entry[2]:
            yield entry[1], entry[0]
        elif entry[0].rsplit("/", 2)[-2] != STATE_DIR:
            stack.append(iter(entries(entry[1], entry[0])))


def _remote_inputs(uri: str, wanted: Any) -> Iterator[InputFile]:
    fs, root = filesystem(uri)
    root = root.rstrip("/")
    base = uri if uri.endswith("/") else uri + "/"
    try:
        if not uri.endswith("/") and fs.isfile(root):
            info = fs.info(root)
            yield InputFile(uri=uri, key=root.rsplit("/", 1)[-1], size=int(info.get("size") or 0))
            return
    except Exception as exc:
        raise wrap_error(uri, exc) from exc
    found = 0
    for key, size in remote_objects(uri, fs, root):
        found += 1
        try:
            if wanted(key):
                yield InputFile(uri=base + key, key=key, size=size)
        except Exception as exc:  # one odd entry must not abort the listing
            log.warning("skipping listed entry %r: %s", key, exc)
    if not found and not uri.endswith("/") and not _is_folder(uri, fs, root):
        raise StorageError(Reason.NOT_FOUND, f"nothing found at {uri}: check the URI")


def _is_folder(uri: str, fs: Any, root: str) -> bool:
    """An empty folder (a marker object): nothing to list, but not a wrong URI."""
    try:
        return bool(fs.isdir(root))
    except Exception as exc:
        raise wrap_error(uri, exc) from exc


def remote_objects(uri: str, fs: Any, root: str, start: str = ""
                    ) -> Iterator[tuple[str, int]]:
    """(key relative to root, size) of every object under root whose relative key begins
    with `start` (S3 lists only those); errors as StorageError."""
    try:
        if is_s3(uri):
            bucket, _, folder = root.partition("/")
            folder = folder.strip("/") + "/" if folder.strip("/") else ""
            for page in s3_pages(fs, bucket, folder + start):
                for obj in page:
                    if not obj["Key"].endswith("/"):  # folder markers
                        yield obj["Key"][len(folder):], int(obj.get("Size") or 0)
            return
        # Other stores (gs://, az://, memory://): fsspec's find holds the whole listing.
        try:
            entries = fs.find(root, detail=True)
        except FileNotFoundError:  # gcsfs: no such bucket (or nothing there, elsewhere)
            entries = {}
        if not entries and bucket_missing(uri, fs, root):
            raise missing_bucket(uri)
    except StorageError:
        raise
    except Exception as exc:
        raise wrap_error(uri, exc) from exc
    for name in sorted(entries):
        info = entries[name]
        if info.get("type") == "directory" or name.endswith("/"):
            continue
        if not name.startswith(root + "/"):
            log.warning("skipping %r: listed outside %r", name, root)
            continue
        if name.startswith(start, len(root) + 1):
            yield name[len(root) + 1:], int(info.get("size") or 0)


def list_uris(prefix: str, suffix: str = "") -> list[str]:
    """All object URIs under `prefix` ending in `suffix`, sorted; [] when nothing is there.

    Plain helper for ledger folders (state folders are listed; temporary files are not).
    """
    base = prefix.rstrip("/") + "/"
    if is_local(prefix):
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
    fs, root = filesystem(base)
    root = root.rstrip("/")
    try:
        names = fs.find(root)
    except FileNotFoundError:
        return []
    except Exception as exc:
        raise wrap_error(prefix, exc) from exc
    rels = (n[len(root) + 1 :] for n in names)
    return sorted(base + r for r in rels if r.endswith(suffix) and not is_temporary(r))
