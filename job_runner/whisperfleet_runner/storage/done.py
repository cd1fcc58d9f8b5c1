"""Which files are done already, decided from one listing of the output instead of a HEAD
per output.

A file counts as done only when its output in every requested format is listed: each
output is published complete-or-absent, so the complete set means the file was finished (a
crash between two publishes leaves an incomplete set, which is redone). Formats can change
between runs, so every format is checked, not only the json that is published last.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator, Sequence

from whisperfleet_runner.contract import STATE_DIR, Reason
from whisperfleet_runner.storage.errors import StorageError
from whisperfleet_runner.storage.fs import filesystem, is_local
from whisperfleet_runner.storage.keys import (
    UnsafeKeyError,
    in_state_dir,
    is_temporary,
    local_path,
    output_stem,
)
from whisperfleet_runner.storage.listing import InputFile, remote_objects

log = logging.getLogger(__name__)
LIST_PAGE = 1000  # keys an S3 listing returns a request


def iter_outputs(output_uri: str, formats: Sequence[str], start: str = ""
                 ) -> Iterator[tuple[str, int]]:
    """(stem, index in `formats`) of every output under `output_uri` whose relative key
    begins with `start`, from one streamed listing: `talks/a.srt` gives ("talks/a",
    formats.index("srt")). State folders, our temporary files and other names are left out.
    A missing output is an empty one."""
    index = {f".{fmt}": i for i, fmt in enumerate(formats)}
    for key in _output_keys(output_uri, start):
        found = _output_of(key, index)
        if found is not None:
            yield found


def _output_of(key: str, index: dict[str, int]) -> tuple[str, int] | None:
    if in_state_dir(key) or is_temporary(key):
        return None
    stem, dot, ext = key.rpartition(".")
    i = index.get(dot + ext)
    return (stem, i) if i is not None and stem else None


def _output_keys(output_uri: str, start: str) -> Iterator[str]:
    """Relative keys under the output that begin with `start` (local state folders are not
    walked; elsewhere their keys come too, for the caller to leave out)."""
    if is_local(output_uri):
        root = local_path(output_uri).rstrip("/") or "/"
        head, _, name = start.rpartition("/")
        top = os.path.join(root, head) if head else root
        for folder, dirs, names in os.walk(top):
            rel = os.path.relpath(folder, root).replace(os.sep, "/")
            rel = "" if rel == "." else rel + "/"
            if folder == top:  # only the entries that can begin with `start`
                dirs[:] = [d for d in dirs if d.startswith(name)]
                names = [n for n in names if n.startswith(name)]
            dirs[:] = [d for d in dirs if d != STATE_DIR]
            yield from (rel + n for n in names)
        return
    fs, root = filesystem(output_uri)
    try:
        yield from (key for key, _ in remote_objects(output_uri, fs, root.rstrip("/"), start))
    except StorageError as exc:
        if exc.reason != Reason.NOT_FOUND:
            raise


def common_start(stems: Iterable[str]) -> str:
    """The longest start all stems share: listing only keys that begin with it is enough.
    (What the least and the greatest share, all share.)"""
    low = high = None
    for stem in stems:
        if low is None or stem < low:
            low = stem
        if high is None or stem > high:
            high = stem
    if low is None or high is None:
        return ""
    same = 0
    while same < min(len(low), len(high)) and low[same] == high[same]:
        same += 1
    return low[:same]


def mark_done(files: Sequence[InputFile], output_uri: str, formats: Sequence[str]
              ) -> list[InputFile]:
    """`files` with `done` set from one listing of `output_uri`: True when the output in every
    one of `formats` exists. Unsafe keys stay unknown (their run fails them with a reason).

    Only keys that begin with what all the files' outputs share are listed (one file: its
    own name). Holds one small int per file, never the listing. A re-run thus decides every
    skip for the price of a listing (1,000 keys a request on S3) instead of a HEAD per
    output. Should the listing grow past what those HEADs would cost (a few files in a
    huge output), it stops and leaves the files unknown: the run asks per file, as before.
    """
    formats = list(dict.fromkeys(formats))
    full = (1 << len(formats)) - 1
    found: dict[str, int] = {}
    stems: list[str | None] = []
    for file in files:
        try:
            stem: str | None = output_stem(file.key)
        except UnsafeKeyError:
            stem = None
        stems.append(stem)
        if stem is not None:
            found[stem] = 0
    if not found or not formats:
        return [dataclasses.replace(f, done=None if s is None else False)
                for f, s in zip(files, stems, strict=True)]
    budget = LIST_PAGE * len(found) * len(formats)  # keys listed for the HEADs saved
    index = {f".{fmt}": i for i, fmt in enumerate(formats)}
    for seen, key in enumerate(_output_keys(output_uri, common_start(found)), start=1):
        if seen > budget:
            log.info("the output holds far more than this run's outputs: checking files "
                     "one by one instead of listing %s", output_uri)
            return [dataclasses.replace(f, done=None) for f in files]
        output = _output_of(key, index)
        if output is not None and output[0] in found:
            found[output[0]] |= 1 << output[1]
    return [dataclasses.replace(f, done=None if s is None else found[s] == full)
            for f, s in zip(files, stems, strict=True)]
