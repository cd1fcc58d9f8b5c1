"""Gather the local CLI's mixed inputs (files, folders, globs, object-store URIs).

Each becomes `InputFile`s whose keys say where their outputs go: a single file keeps its
name, a folder's files (and a glob's matches) keep their path relative to that folder (or to
the glob's fixed leading folders). When two inputs would write the same outputs, the first
one given keeps them and the later one fails with a reason instead of overwriting.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from whisperfleet_runner import storage
from whisperfleet_runner.contract import FileFailure
from whisperfleet_runner.storage import keys

log = logging.getLogger(__name__)

_GLOB_CHARS = re.compile(r"[*?\[]")


class InputError(ValueError):
    """An input cannot be used at all (missing, unreadable storage, matches nothing)."""


@dataclass
class Gathered:
    files: list[storage.InputFile]  # to run, longest (largest) first
    refused: list[FileFailure] = field(default_factory=list)  # failed before any work
    duplicates: int = 0  # the same object named by two inputs: run once


def gather(
    inputs: Sequence[str], include: Sequence[str], output_uri: str
) -> Gathered:
    """List every input (see module docstring); raises InputError when one is unusable."""
    if not inputs:
        raise InputError("no INPUT given: name audio files, folders, globs or URIs")
    out_prefix = _canonical(output_uri).rstrip("/") + "/"
    result = Gathered(files=[])
    owners: dict[str, str] = {}  # output stem -> the input that owns it
    seen: set[str] = set()
    for spec in inputs:
        listed = _list_one(spec, include)
        if not (_canonical(_input_root(spec)).rstrip("/") + "/").startswith(out_prefix):
            # An output folder inside an input folder holds our outputs, not inputs. An input
            # named at or inside the output (`-o` the input folder itself, transcripts next
            # to the audio) was asked for explicitly: keep all of it.
            listed = [f for f in listed if not _canonical(f.uri).startswith(out_prefix)]
        if not listed:
            raise InputError(
                f"{spec}: no files match {', '.join(include)}"
                " (use --include to select other names)"
            )
        for file in listed:
            if file.uri in seen:
                result.duplicates += 1
                continue
            seen.add(file.uri)
            try:
                stem = keys.output_stem(file.key)
            except keys.UnsafeKeyError:
                result.files.append(file)  # the worker fails it with the exact reason
                continue
            owner = owners.setdefault(stem, file.uri)
            if owner != file.uri:
                result.refused.append(FileFailure(
                    uri=file.uri,
                    reason=f"output collision: its outputs ({stem}.*) are those of {owner}; "
                           "rename one of the two or transcribe them separately",
                ))
                continue
            result.files.append(file)
    # Longest first so every worker finishes at about the same time; size is the cheap
    # proxy for duration (probing each file's header would cost a read per file up front).
    result.files.sort(key=lambda f: (-f.size, f.uri))
    return result


def _canonical(uri: str) -> str:
    """Comparable form: local paths absolute and without `file://`, URIs unchanged."""
    if keys.protocol(uri) in ("file", "local"):
        return os.path.abspath(keys.local_path(uri))
    return uri


def _input_root(spec: str) -> str:
    """The folder (or file) an INPUT names: a glob's fixed leading folders, else itself."""
    remote = keys.protocol(spec) not in ("file", "local")
    if _GLOB_CHARS.search(spec) and (remote or not os.path.exists(keys.local_path(spec))):
        try:
            return _split_glob(spec)[0]
        except InputError:
            return spec
    return spec


def _list_one(spec: str, include: Sequence[str]) -> list[storage.InputFile]:
    remote = keys.protocol(spec) not in ("file", "local")
    literal = not _GLOB_CHARS.search(spec) or (
        not remote and os.path.exists(keys.local_path(spec))
    )
    if remote and "[" in spec and not re.search(r"[*?]", spec):
        literal = True  # keys with brackets are common; only * and ? make a remote glob
    try:
        if literal:
            return storage.list_inputs(spec, include)
        base, pattern = _split_glob(spec)
        regex = glob_regex(pattern)
        listed = storage.list_inputs(base, include)
        return [f for f in listed if regex.match(f.key)]
    except storage.StorageError as exc:
        raise InputError(f"{spec}: {exc}") from exc


def _split_glob(spec: str) -> tuple[str, str]:
    """`s3://b/x/*/a?.wav` -> (`s3://b/x/`, `*/a?.wav`); a bare `*.wav` -> (`./`, `*.wav`)."""
    scheme = re.match(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://", spec)
    head = scheme.group(0) if scheme else ""
    parts = spec[len(head):].split("/")
    first = next(i for i, p in enumerate(parts) if _GLOB_CHARS.search(p))
    if head and first == 0:
        raise InputError(f"{spec}: a glob needs a fixed bucket name before the pattern")
    base = "/".join(parts[:first])
    if not head:
        return (base or ".") + "/", "/".join(parts[first:])
    return head + base + "/", "/".join(parts[first:])


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell-like glob on a relative key: `*`, `?`, `[…]` stay within one folder, `**`
    spans any number of folders (also none). Case-sensitive, like the filesystem."""
    segments = pattern.split("/")
    out: list[str] = []
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_segment_regex(segment) + ("" if last else "/"))
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def _segment_regex(segment: str) -> str:
    out, i = [], 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and segment.find("]", i + 2) != -1:  # `[]]` holds a literal `]`
            end = segment.find("]", i + 2)
            body = segment[i + 1:end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)
