"""One input object as a seekable binary file that holds a few blocks, never the object.

A decoder reads a 10-hour recording front to back, but also jumps: FFmpeg's probe reads the
head twice, an mp3's ID3v1 tag sits in the last 128 bytes, an mp4 may keep its index at the
end. So every miss fetches one block from where the read starts (one ranged GET on an object
store) and the last few blocks stay cached: the jumps back land in a cached block, and the
bytes fetched stay close to the object's size.

Failures raise StorageError with the reasons `read_bytes` gives: opening asks for the size
first, which on S3 is the HEAD `read_bytes` also makes before its GET, so a missing object,
a missing bucket and a lost endpoint are told apart the same way. A prefix ("folder") is
not found, as with `read_bytes`, rather than an empty file.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

from whisperfleet_runner.contract import Reason
from whisperfleet_runner.storage.errors import StorageError, wrap_error
from whisperfleet_runner.storage.fs import filesystem, is_local
from whisperfleet_runner.storage.keys import local_path

# Large enough that a GET's latency is small next to decoding what it brings (4 MiB of a
# 64 kbit/s mp3 is 8 minutes of audio), small enough that a few blocks are nothing next
# to the decoded samples.
BLOCK_BYTES = 4 << 20
BLOCKS = 2


class RangedReader(io.RawIOBase):
    """Reads of one object of `size` bytes through `fetch(start, end)` (end exclusive).

    A reader whose read failed raises that error again for every later read: the storage
    client's retries are spent already. `fetches` and `fetched` count requests and bytes,
    `held` is the most bytes it ever cached.
    """

    def __init__(self, uri: str, size: int, fetch: Callable[[int, int], bytes], *,
                 block_bytes: int = BLOCK_BYTES, blocks: int = BLOCKS,
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        if block_bytes < 1 or blocks < 1:
            raise ValueError("block_bytes and blocks must be at least 1")
        self.uri, self.size = uri, size
        self._failure: StorageError | None = None
        self.fetches = self.fetched = self.held = 0
        self._fetch, self._on_close = fetch, on_close
        self._block_bytes, self._blocks = block_bytes, blocks
        self._cache: list[tuple[int, bytes]] = []  # (offset, data), most recently used last
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence {whence}")
        base = bases[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._pos = base + offset
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._failure is not None:
            raise self._failure
        end = self.size if size is None or size < 0 else min(self.size, self._pos + size)
        parts = []
        while self._pos < end:
            start, data = self._block_at(self._pos)
            part = data[self._pos - start : end - start]
            parts.append(part)
            self._pos += len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if not self.closed:
            self._cache = []
            if self._on_close is not None:
                self._on_close()
        super().close()

    def _block_at(self, pos: int) -> tuple[int, bytes]:
        for i, (start, data) in enumerate(self._cache):
            if start <= pos < start + len(data):
                self._cache.append(self._cache.pop(i))
                return start, data
        end = min(self.size, pos + self._block_bytes)
        try:
            data = self._fetch(pos, end)
        except Exception as exc:
            self._failure = wrap_error(self.uri, exc)
            raise self._failure from exc
        if len(data) != end - pos:
            # Replaced or cut while being read: what comes back no longer fits what was
            # read before. Not the file's fault, so a retry is worth it.
            self._failure = StorageError(
                Reason.STORAGE_ERROR, f"{self.uri}: the object changed while it was read "
                f"(bytes {pos}-{end} of {self.size} gave {len(data)})")
            raise self._failure
        self.fetches += 1
        self.fetched += len(data)
        self._cache.append((pos, data))
        del self._cache[: -self._blocks]
        self.held = max(self.held, sum(len(d) for _, d in self._cache))
        return pos, data


@contextlib.contextmanager
def open_input(uri: str, *, block_bytes: int = BLOCK_BYTES,
               blocks: int = BLOCKS) -> Iterator[BinaryIO]:
    """`uri` (a local path or any fsspec URL) as a seekable binary file read `block_bytes`
    at a time, at most `blocks` of them held; `.size` is the object's length. Every
    failure, opening or reading, raises StorageError."""
    try:
        if is_local(uri):
            raw = open(local_path(uri), "rb", buffering=0)  # noqa: SIM115 (closed by the reader)
            try:
                size = os.fstat(raw.fileno()).st_size
            except BaseException:
                raw.close()
                raise
            fd = raw.fileno()
            reader = RangedReader(uri, size, lambda start, end: _pread(fd, start, end),
                                  block_bytes=block_bytes, blocks=blocks, on_close=raw.close)
        else:
            fs, path = filesystem(uri)
            info = fs.info(path)
            if info.get("type") == "directory":  # a prefix: no object to read
                raise FileNotFoundError(path)
            size = int(info["size"])
            reader = RangedReader(uri, size,
                                  lambda start, end: bytes(fs.cat_file(path, start=start,
                                                                       end=end)),
                                  block_bytes=block_bytes, blocks=blocks)
    except Exception as exc:
        raise wrap_error(uri, exc) from exc
    with reader:
        yield cast(BinaryIO, reader)


def _pread(fd: int, start: int, end: int) -> bytes:
    data = os.pread(fd, end - start, start)
    while len(data) < end - start:  # a regular file reads short only at its end
        more = os.pread(fd, end - start - len(data), start + len(data))
        if not more:
            break
        data += more
    return data
