"""Pure key arithmetic: include globs, key normalisation and confined output URIs.

Object keys are untrusted text. Real buckets hold keys such as `a//b.wav`, `x/./y.wav` or
`evil/../../x.wav`; they must still be listed and read exactly as stored, but the output
written for them must stay under the output prefix. Everything here is string work (plus
one `realpath` check for local folders), so it is cheap to test exhaustively.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import posixpath
import re
from collections.abc import Callable, Sequence

from whisperfleet_runner.contract import STATE_DIR

# `publish` writes local files as `.<name>.tmp-<hex>` before renaming them into place.
TMP_NAME = re.compile(r"^\..+\.tmp-[0-9a-f]{8,}$")
_LOCAL_PROTOCOLS = ("file", "local")


class UnsafeKeyError(ValueError):
    """An input key whose output would land outside the output prefix; that file fails alone."""

    def __init__(self, key: str, why: str) -> None:
        self.key = key
        super().__init__(f"unsafe object key {key!r}: {why}; no output is written for it")


def matches(key: str, include: Sequence[str]) -> bool:
    """fnmatch on the whole relative key, case-insensitive (`*.WAV` and `*.wav` alike).

    `*` crosses `/` (fnmatch semantics), so `*.wav` selects files at any depth.
    """
    return matcher(tuple(include))(key)


@functools.lru_cache(maxsize=32)
def matcher(include: tuple[str, ...]) -> Callable[[str], bool]:
    """`matches` for one set of globs as a single compiled regex: a listing of a million keys
    tests each key once instead of once per glob."""
    if not include:
        return lambda _key: False
    pattern = re.compile("|".join(fnmatch.translate(p.lower()) for p in include))
    return lambda key: pattern.match(key.lower()) is not None


def in_state_dir(key: str) -> bool:
    """True for keys inside a `.whisperfleet/` folder (manifests, ledgers) at any depth."""
    return STATE_DIR in key.split("/")


def is_temporary(key: str) -> bool:
    return bool(TMP_NAME.match(posixpath.basename(key)))


def normalize_key(key: str) -> str:
    """Resolve `//`, `.` and `..` segments; refuse keys that are absolute or climb out."""
    if not key:
        raise UnsafeKeyError(key, "the key is empty")
    if "\x00" in key:
        raise UnsafeKeyError(key, "the key contains a NUL character")
    if key.startswith("/"):
        raise UnsafeKeyError(key, "the key is absolute (starts with '/')")
    if "\\" in key and re.match(r"^[A-Za-z]:\\", key):
        raise UnsafeKeyError(key, "the key is an absolute Windows path")
    parts: list[str] = []
    for segment in key.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not parts:
                raise UnsafeKeyError(key, "its '..' segments climb above the input root")
            parts.pop()
            continue
        parts.append(segment)
    if not parts:
        raise UnsafeKeyError(key, "the key names the root itself, not a file")
    if STATE_DIR in parts:
        raise UnsafeKeyError(key, f"the output would land in the {STATE_DIR}/ state folder")
    return "/".join(parts)


def output_stem(key: str) -> str:
    """The normalised key minus its extension: `a//b/talk.mp3` -> `a/b/talk`."""
    norm = normalize_key(key)
    head, _, name = norm.rpartition("/")
    stem, ext = posixpath.splitext(name)
    if not stem or not ext:  # `.wav` or `README`: keep the whole name, add the format after it
        stem = name
    return f"{head}/{stem}" if head else stem


def protocol(uri: str) -> str:
    """The URL scheme, lower-case; `file` for plain paths."""
    match = re.match(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://", uri)
    return match.group(1).lower() if match else "file"


def local_path(uri: str) -> str:
    """The filesystem path of a plain path or `file://` URL."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


def output_uris(key: str, output_uri: str, formats: Sequence[str]) -> dict[str, str]:
    """`{fmt: <output_uri>/<key minus ext>.<fmt>}`, confined under `output_uri`.

    Raises UnsafeKeyError when the key is absolute or its `..` climbs above the root. For
    local folders the resolved path (symlinks followed) must also stay inside the folder.
    """
    if not formats:
        raise ValueError("no output formats given")
    stem = output_stem(key)
    base = output_uri.rstrip("/")
    uris = {fmt: f"{base}/{stem}.{fmt}" for fmt in formats}
    if protocol(output_uri) in _LOCAL_PROTOCOLS:
        root = os.path.realpath(local_path(base) or "/")
        for uri in uris.values():
            resolved = os.path.realpath(local_path(uri))
            if os.path.commonpath([root, resolved]) != root:
                raise UnsafeKeyError(key, f"its output resolves outside {root} ({resolved})")
    return uris
