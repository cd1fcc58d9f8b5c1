"""One local run per output at a time: a lock object under the output's state folder.

Two `whisperfleet transcribe` runs on one output would each list the same unfinished files
and transcribe every one of them twice. The first run creates `<output>/.whisperfleet/
run.lock` with a conditional create (S3 `If-None-Match: *`, `O_EXCL` in a folder) and
rewrites it every HEARTBEAT_SECONDS, conditionally on its own last version; a second run
finds it and stops with the holder named. A lock whose holder is gone is taken over: at
once when the holder ran on this host and its process is dead, else once its heartbeat is
STALE_SECONDS old (heartbeats are the holders' clocks: machines must agree within minutes).
A takeover is conditional on the stale version, so of two runs taking over, one wins. A
holder whose heartbeat finds the lock taken (it stalled for STALE_SECONDS) is told, and
stops. Cluster jobs need no lock: the planner gives each shard its own files.

Conditional writes exist on S3 (and moto) and local folders; elsewhere (gs://, az://) the
lock is advisory: checked, then written, with a window in which two runs both start.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import IO, Any

from whisperfleet_runner.contract import STATE_DIR, Reason
from whisperfleet_runner.storage.errors import StorageError, wrap_error, write_error
from whisperfleet_runner.storage.fs import filesystem, is_local, is_s3
from whisperfleet_runner.storage.keys import local_path

log = logging.getLogger(__name__)

LOCK_NAME = "run.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


class OutputBusy(Exception):
    """Another run holds the output's lock; the message names it and what to do."""


@dataclass(frozen=True)
class Holder:
    run: str
    host: str
    pid: int
    started: str
    heartbeat: float  # seconds since the epoch, the holder's clock
    machine: str = ""  # boot id and PID namespace: where `pid` means this process


    def describe(self, now: float) -> str:
        return (f"host {self.host}, pid {self.pid}, started {self.started}, last heartbeat "
                f"{max(0.0, now - self.heartbeat):.0f} s ago")

    def gone(self, now: float) -> bool:
        # A pid is only checked where it names the same process table (hosts sharing a
        # name, containers with their own PID namespace do not).
        if self.machine and self.machine == _machine() and not _alive(self.pid):
            return True
        return now - self.heartbeat >= STALE_SECONDS


def _machine() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            boot = fh.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # not Linux: only the heartbeat tells
        return ""


def lock_uri(output: str) -> str:
    return f"{output.rstrip('/')}/{STATE_DIR}/{LOCK_NAME}"


def _never() -> bool:
    return False


@contextlib.contextmanager
def run_lock(output: str, on_lost: Callable[[str], None],
             store_lost: Callable[[], bool] = _never) -> Iterator[Holder]:
    """Hold the output's lock for the block; raise OutputBusy when another live run holds
    it. `on_lost` is called (from the heartbeat thread, with a message) if the lock is
    taken from this run; the run should then stop taking files. StorageError when the
    store cannot be used.

    `store_lost` says whether the run has judged the store gone (storage.STORE_LOST): from
    then on no heartbeat is sent, one in flight is not waited for, and the release makes
    one attempt. The run is ending, and each would otherwise wait through the storage
    client's retries (tens of seconds) for a store that does not answer; a lock left
    behind only delays the next run (see `Holder.gone`)."""
    store = _store(lock_uri(output))
    try:
        holder = _acquire(store)
    except OSError as exc:  # a folder that cannot hold the lock (not a folder, read-only…)
        raise wrap_error(store.uri, exc) from exc
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat,
                            args=(store, holder, stop, on_lost, store_lost),
                            name="whisperfleet-run-lock", daemon=True)
    beat.start()
    try:
        yield holder
    finally:
        stop.set()
        lost = store_lost()
        if not lost:
            beat.join()
        try:
            store.release(holder.run, once=lost)
        except (Exception, KeyboardInterrupt) as exc:  # a lock left behind only delays the
            log.warning("could not remove the run lock %s: %s", store.uri, exc)  # next run


def _acquire(store: _Store) -> Holder:
    me = Holder(run=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(),
                started=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                heartbeat=time.time(), machine=_machine())
    for _ in range(3):  # a race lost to another run's create or takeover: look again
        if store.create(_encode(me)):
            return me
        found = store.read()
        if found is None:
            continue  # released between our create and our read
        version, other = found
        if other.run == me.run:  # our write landed, its answer was lost and retried
            return me
        now = time.time()
        if not other.gone(now):
            raise OutputBusy(
                f"another whisperfleet run is writing to this output ({other.describe(now)}); "
                f"wait for it to finish. If it is gone, its lock {store.uri} expires "
                f"{STALE_SECONDS:.0f} s after its last heartbeat, or delete that file.")
        if store.replace(_encode(me), version):
            log.warning("took over the run lock of a run that is gone (%s)",
                        other.describe(now))
            return me
    raise OutputBusy(f"could not take the run lock {store.uri}: other runs keep taking it")


def _heartbeat(store: _Store, me: Holder, stop: threading.Event,
               on_lost: Callable[[str], None], store_lost: Callable[[], bool]) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        if store_lost():
            return  # the run is ending: its lock goes stale, or is released, soon
        try:
            found = store.read()
            if found is None or found[1].run != me.run:
                holder = found[1].describe(time.time()) if found else "removed"
                on_lost(f"the run lock {store.uri} was taken over ({holder}): another run "
                        "thought this one gone; stopping so no file is done twice")
                return
            store.beat(me, found[0])  # refused: changed under us; the next beat sees by whom
        except Exception as exc:  # a passing outage: beat again (the lock goes stale later)
            log.warning("run lock heartbeat failed: %s", exc)


def _encode(holder: Holder) -> bytes:
    return json.dumps(asdict(holder)).encode()


def _decode(data: bytes) -> Holder | None:
    try:
        fields = json.loads(data)
        known = {f.name for f in dataclasses.fields(Holder)}
        return Holder(**{k: v for k, v in fields.items() if k in known})
    except (ValueError, TypeError, AttributeError):
        return None  # unreadable (cut, foreign): treated as a lock long gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


_LONG_GONE = Holder(run="", host="?", pid=0, started="?", heartbeat=0.0)


class _Store:
    """Create, read (with a version), replace-if-version and release one lock object."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def create(self, data: bytes) -> bool:
        raise NotImplementedError

    def read(self, *, once: bool = False) -> tuple[Any, Holder] | None:
        """The lock's version and holder, None when there is none. `once`: one attempt
        (a store judged lost); stores without retries of their own ignore it."""
        raise NotImplementedError

    def replace(self, data: bytes, version: Any) -> bool:
        raise NotImplementedError

    def beat(self, me: Holder, version: Any) -> bool:
        """Mark the lock (seen at `version`) alive now; False when it changed meanwhile."""
        return self.replace(_encode(dataclasses.replace(me, heartbeat=time.time())), version)

    def release(self, run: str, *, once: bool = False) -> None:
        found = self.read(once=once)
        if found is not None and found[1].run == run:
            self._delete(once=once)

    def _delete(self, *, once: bool = False) -> None:
        raise NotImplementedError


class _Folder(_Store):
    """A local folder: O_EXCL creates; the heartbeat is the file's mtime (a touch, so a
    reader never sees the file half rewritten); the version is inode and mtime."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.path = local_path(uri)

    def create(self, data: bytes) -> bool:
        # Written in full under a private name, then linked in place: link() fails when the
        # lock exists (like O_EXCL), and nobody ever reads a lock without its content.
        draft = f"{self.path}.{uuid.uuid4().hex}"
        try:
            try:
                fh = _open_new(draft)
            except FileNotFoundError:  # the state folder was removed by a run just ending
                fh = _open_new(draft)
            with fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(draft, self.path)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(draft)
        return True

    def read(self, *, once: bool = False) -> tuple[Any, Holder] | None:
        try:
            with open(self.path, "rb") as fh:
                stat = os.fstat(fh.fileno())
                data = fh.read()
        except FileNotFoundError:
            return None
        holder = _decode(data)
        if holder is None:
            return (stat.st_ino, stat.st_mtime_ns), _LONG_GONE
        return (stat.st_ino, stat.st_mtime_ns), dataclasses.replace(
            holder, heartbeat=stat.st_mtime)

    def beat(self, me: Holder, version: Any) -> bool:
        try:
            os.utime(self.path)
        except FileNotFoundError:
            return False
        return True

    def replace(self, data: bytes, version: Any) -> bool:
        # Takeovers on this folder take turns (an flock, released by the kernel even when
        # its holder is killed), so the version checked is the version removed; a plain
        # create may still win between the removal and our create, and then we lost.
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(f"{self.path}.takeover", "a") as turn:
            fcntl.flock(turn, fcntl.LOCK_EX)
            try:
                stat = os.stat(self.path)
            except FileNotFoundError:
                return False
            if (stat.st_ino, stat.st_mtime_ns) != version:  # not the version we judged
                return False
            os.unlink(self.path)
            return self.create(data)

    def _delete(self, *, once: bool = False) -> None:
        # (not the takeover turn file: a contender may hold its flock right now)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):  # leave no empty state folder in the output
            os.rmdir(os.path.dirname(self.path))


class _S3(_Store):
    """S3 conditional writes: If-None-Match: * creates, If-Match: <ETag> replaces."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        fs, path = filesystem(uri)
        self.fs = fs
        self.bucket, _, self.key = path.partition("/")

    def create(self, data: bytes) -> bool:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, version: Any) -> bool:
        try:
            return self._put(data, IfMatch=version)
        except StorageError as exc:  # a 404: the lock was removed meanwhile, by whoever
            if exc.reason == Reason.NOT_FOUND:  # moved first
                return False
            raise

    def _fs(self, once: bool) -> Any:
        return filesystem(self.uri, once=True)[0] if once else self.fs

    def read(self, *, once: bool = False) -> tuple[Any, Holder] | None:
        from fsspec.asyn import sync

        fs = self._fs(once)

        async def get() -> tuple[str, bytes]:  # the body and its ETag from one response
            got = await fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            try:
                return got["ETag"], await got["Body"].read()
            finally:
                got["Body"].close()

        try:
            etag, data = sync(fs.loop, get)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise wrap_error(self.uri, exc) from exc
        return etag, _decode(data) or _LONG_GONE

    def _put(self, data: bytes, **condition: str) -> bool:
        try:
            self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=data,
                            **condition)
            return True
        except Exception as exc:
            if _precondition_failed(exc):
                return False
            raise wrap_error(self.uri, exc) from exc

    def _delete(self, *, once: bool = False) -> None:
        self._fs(once).call_s3("delete_object", Bucket=self.bucket, Key=self.key)


class _Advisory(_Store):
    """Other object stores (gs://, az://): check, then write. gcsfs and adlfs could create
    only if absent (ifGenerationMatch=0, If-None-Match), but the GCS emulator the tests run
    ignores the condition, so the lock stays advisory where it cannot be tested."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.fs, self.path = filesystem(uri)

    def create(self, data: bytes) -> bool:
        try:
            if self.fs.exists(self.path):
                return False
            self.fs.pipe_file(self.path, data)
        except Exception as exc:
            raise write_error(self.uri, exc) from exc
        return True

    def read(self, *, once: bool = False) -> tuple[Any, Holder] | None:
        try:
            return None, _decode(self.fs.cat_file(self.path)) or _LONG_GONE
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise wrap_error(self.uri, exc) from exc

    def replace(self, data: bytes, version: Any) -> bool:
        try:
            self.fs.pipe_file(self.path, data)
        except Exception as exc:
            raise write_error(self.uri, exc) from exc
        return True

    def _delete(self, *, once: bool = False) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            return  # removed meanwhile (by a run that took it over and ended)
        except Exception as exc:
            raise wrap_error(self.uri, exc) from exc


def _store(uri: str) -> _Store:
    if is_local(uri):
        return _Folder(uri)
    if is_s3(uri):
        return _S3(uri)
    log.warning("%s: this store has no conditional writes here; the run lock is advisory",
                uri)
    return _Advisory(uri)


_LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _precondition_failed(exc: BaseException) -> bool:
    """The condition did not hold (or a concurrent conditional write won): the lock
    changed under us, not an error of the store."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        error = (response.get("Error") or {}) if isinstance(response, dict) else {}
        if isinstance(seen, FileExistsError) or error.get("Code") in _LOST_RACE:
            return True
        seen = seen.__cause__
    return False


def _open_new(path: str) -> IO[bytes]:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "xb")
