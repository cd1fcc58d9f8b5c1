"""The manifest: one JSON line per file (uri, key, size, shard, and `done` when its outputs
all existed at planning), the one hand-off between the planner pod and the shard pods.

Lines without `done` (older manifests) read as not done. Shard pods stream it: each keeps
only its own lines, so a shard's memory follows its share of the files, not the job's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from whisperfleet_runner import storage
from whisperfleet_runner.contract import WorkOrder
from whisperfleet_runner.pipeline.ledger import SUCCEEDED, ledger_object_uri, parse_records

log = logging.getLogger(__name__)
_string = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept as is


@dataclass(frozen=True)
class ManifestEntry:
    uri: str
    key: str
    size: int
    shard: int
    done: bool = False  # every output existed when the planner listed the output

    def to_input(self) -> storage.InputFile:
        return storage.InputFile(uri=self.uri, key=self.key, size=self.size, done=self.done)


def entry_head(uri: str, key: str, size: int) -> bytes:
    """A manifest line up to its shard: `{"uri":…,"key":…,"size":…` (the planner spills these
    and completes them once the shards are known)."""
    # What json.dumps(…, ensure_ascii=False) writes, without building a dict a file.
    return f'{{"uri":{_string(uri)},"key":{_string(key)},"size":{int(size)}'.encode()


def entry_tail(shard: int, done: bool) -> bytes:
    return (f',"shard":{shard},"done":true}}\n' if done else f',"shard":{shard}}}\n').encode()


def manifest_text(entries: Sequence[ManifestEntry]) -> str:
    return b"".join(entry_head(e.uri, e.key, e.size) + entry_tail(e.shard, e.done)
                    for e in entries).decode("utf-8")


def parse_lines(lines: Iterable[bytes | str], shard: int | None = None
                ) -> Iterator[ManifestEntry]:
    """Entries of manifest lines (all, or only `shard`'s); ValueError names a malformed line."""
    # Cheap test before parsing: a line of another shard holds `"shard":` but neither
    # `"shard":N}` nor `"shard":N,`. Candidates and lines without a shard are parsed (their
    # shard checked for real; a line cut short fails every shard, as it should).
    marks = None if shard is None else (f'"shard":{shard}}}', f'"shard":{shard},')
    for number, raw in enumerate(lines, start=1):
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if not line.strip() or (marks and marks[0] not in line and marks[1] not in line
                                and '"shard":' in line):
            continue
        try:
            data = json.loads(line)
            entry = ManifestEntry(uri=str(data["uri"]), key=str(data["key"]),
                                  size=int(data["size"]), shard=int(data["shard"]),
                                  done=data.get("done", False) is True)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"manifest line {number} is malformed: {exc}") from exc
        if shard is None or entry.shard == shard:
            yield entry


def parse_manifest(text: str) -> list[ManifestEntry]:
    return list(parse_lines(text.splitlines()))


def read_manifest(uri: str) -> list[ManifestEntry]:
    """All manifest entries; raises storage.StorageError when the manifest cannot be read."""
    return list(parse_lines(storage.iter_lines(uri)))


def shard_inputs(order: WorkOrder, index: int) -> list[storage.InputFile]:
    """Shard `index`'s files from the streamed manifest, each with what is known of its
    outputs, so that a re-run decides its skips without a request per file.

    The planner's listing says which files were done when it ran, and nothing else writes
    a shard's outputs but the shard itself, and every attempt publishes its (empty) ledger
    object before its first output. So an attempt that finds no earlier ledger object is
    the first and trusts the plan completely. A later attempt (a retried index, an evicted
    or killed pod's replacement) reads the earlier attempts' ledgers: files they recorded
    succeeded are done; for the rest, which an attempt may have written after its last
    ledger flush, the run asks the store (HEAD) as it comes to them. Raises StorageError
    (manifest unreadable) or ValueError (manifest malformed).
    """
    files = [e.to_input() for e in parse_lines(storage.iter_lines(order.manifest_uri), index)]
    if order.output.overwrite or all(f.done for f in files):
        return files
    try:
        mine = ledger_object_uri(order.ledger_uri, index, "").removesuffix(".jsonl")
        earlier = [u for u in storage.list_uris(order.ledger_uri, ".jsonl")
                   if u.startswith(mine)]
        written = {r.uri for uri in earlier for r in parse_records(storage.read_text(uri), uri)
                   if r.status == SUCCEEDED}
    except storage.StorageError as exc:  # cannot tell: ask the store file by file
        log.warning("cannot read the earlier attempts' ledgers of shard %d: %s", index, exc)
        earlier, written = ["?"], set()
    if not earlier:
        return files
    log.info("shard %d: %d earlier attempt(s) recorded %d files written", index,
             len(earlier), len(written))
    return [f if f.done else dataclasses.replace(f, done=True if f.uri in written else None)
            for f in files]
