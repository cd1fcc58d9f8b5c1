"""One `whisperfleet transcribe` per output at a time: the run lock, on local folders, on S3
(moto's conditional writes) and, advisory, on gs:// and az:// (the GCS emulator, Azurite),
in-process; then two real CLI runs on one output."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.waiting import eventually
from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import storage
from whisperfleet_runner.storage import run_lock

CONDITIONAL = ["folder", "s3"]  # stores whose lock writes are conditional
STORES = [*CONDITIONAL, "gs", "az"]  # gs:// and az:// (emulators): advisory, check then write
BUCKETS = {"s3": "s3_bucket", "gs": "gcs_bucket", "az": "azure_container"}


def _output(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "folder":
        return str(tmp_path / "out")
    return f"{request.param}://{request.getfixturevalue(BUCKETS[request.param])}/out"


@pytest.fixture(params=STORES)
def output(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _output(request, tmp_path)


@pytest.fixture(params=CONDITIONAL)
def conditional_output(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _output(request, tmp_path)


def lock_text(output: str) -> str | None:
    uri = run_lock.lock_uri(output)
    return storage.read_text(uri) if storage.exists(uri) else None


def plant(output: str, *, host: str, pid: int, heartbeat: float, machine: str = "") -> None:
    """A lock as another run would have left it (mtime is a folder lock's heartbeat)."""
    uri = run_lock.lock_uri(output)
    storage.publish(uri, json.dumps({"run": "other", "host": host, "pid": pid,
                                     "started": "2026-11-30T10:00:00Z",
                                     "heartbeat": heartbeat, "machine": machine}))
    if "://" not in uri:  # a folder
        os.utime(uri, (heartbeat, heartbeat))


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def never_lost(why: str) -> None:
    raise AssertionError(f"lock lost: {why}")


def test_a_second_run_is_refused_with_the_holder_named_until_the_first_ends(
        output: str) -> None:
    with run_lock.run_lock(output, never_lost) as me:
        assert json.loads(lock_text(output) or "{}")["run"] == me.run
        with pytest.raises(run_lock.OutputBusy) as refused, \
                run_lock.run_lock(output, never_lost):
            pass
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert "wait for it to finish" in message
    assert lock_text(output) is None  # released
    with run_lock.run_lock(output, never_lost):  # and free again
        pass


def test_a_lock_left_by_a_dead_process_of_this_host_is_taken_over_at_once(
        output: str, caplog: pytest.LogCaptureFixture) -> None:
    pid = dead_pid()
    # The same host name and pid from another machine or PID namespace: alive, for all we
    # know (a container sharing the host's name), so its heartbeat rules.
    plant(output, host=socket.gethostname(), pid=pid, heartbeat=time.time(),
          machine="another-boot:4026531836")
    with pytest.raises(run_lock.OutputBusy), run_lock.run_lock(output, never_lost):
        pass
    plant(output, host=socket.gethostname(), pid=pid, heartbeat=time.time(),
          machine=run_lock._machine())
    with caplog.at_level(logging.WARNING), run_lock.run_lock(output, never_lost) as me:
        assert json.loads(lock_text(output) or "{}")["run"] == me.run
    assert f"pid {pid}" in caplog.text and "took over" in caplog.text


def test_another_hosts_lock_is_respected_while_fresh_and_taken_once_stale(
        output: str) -> None:
    plant(output, host="elsewhere", pid=1, heartbeat=time.time() - 5)
    with pytest.raises(run_lock.OutputBusy, match="host elsewhere, pid 1"), \
            run_lock.run_lock(output, never_lost):
        pass
    plant(output, host="elsewhere", pid=1,
          heartbeat=time.time() - run_lock.STALE_SECONDS - 5)
    with run_lock.run_lock(output, never_lost) as me:
        assert json.loads(lock_text(output) or "{}")["run"] == me.run


def test_of_runs_racing_for_a_stale_lock_exactly_one_wins(conditional_output: str) -> None:
    output = conditional_output
    for _ in range(5):  # a race: several rounds, so an unlucky interleaving shows up
        plant(output, host="elsewhere", pid=1,
              heartbeat=time.time() - run_lock.STALE_SECONDS - 5)
        start, results = threading.Barrier(6), []

        def contender(start: threading.Barrier = start, results: list[object] = results
                      ) -> None:
            start.wait()
            try:
                results.append(run_lock._acquire(run_lock._store(run_lock.lock_uri(output))))
            except run_lock.OutputBusy as exc:
                results.append(exc)

        threads = [threading.Thread(target=contender) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        winners = [r for r in results if isinstance(r, run_lock.Holder)]
        assert len(results) == 6 and len(winners) == 1, results
        assert json.loads(lock_text(output) or "{}")["run"] == winners[0].run


@pytest.fixture
def quick_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_lock, "HEARTBEAT_SECONDS", 0.05)


@pytest.mark.usefixtures("quick_heartbeat")
def test_the_heartbeat_keeps_the_lock_fresh(output: str) -> None:
    store = run_lock._store(run_lock.lock_uri(output))
    with run_lock.run_lock(output, never_lost):
        first = store.read()
        assert first is not None
        eventually(lambda: (now := store.read()) and now[1].heartbeat > first[1].heartbeat,
                 timeout=30, what="a newer heartbeat")


@pytest.mark.usefixtures("quick_heartbeat")
def test_a_run_whose_lock_was_taken_over_is_told(output: str) -> None:
    told: list[str] = []
    lost = threading.Event()

    def on_lost(why: str) -> None:
        told.append(why)
        lost.set()

    with run_lock.run_lock(output, on_lost):
        plant(output, host="thief", pid=7, heartbeat=time.time())
        assert lost.wait(30), "the holder was never told"
    assert "taken over" in told[0] and "host thief, pid 7" in told[0]
    assert json.loads(lock_text(output) or "{}")["run"] == "other"  # not removed: not ours


# --- two real runs on one output ------------------------------------------------------------


def inputs(root: Path, audio_dir: Path, count: int) -> Path:
    root.mkdir()
    for i in range(count):
        shutil.copy(audio_dir / "hello.wav", root / f"talk-{i:02d}.wav")
    return root


@pytest.fixture
def launch(tiny_model_path: Path) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def run(src: Path, out: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [str(WHISPERFLEET), "transcribe", str(src), "-o", str(out), "--model",
             str(tiny_model_path), "--device", "cpu", "--no-pack", "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)  # its own process group: its workers are found by it
        started.append(proc)
        return proc

    yield run
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)


@pytest.mark.slow
def test_a_second_transcribe_on_the_same_output_stops_and_the_first_does_every_file(
        tmp_path: Path, audio_dir: Path, launch: Callable[..., subprocess.Popen[str]]) -> None:
    src, out = inputs(tmp_path / "in", audio_dir, 6), tmp_path / "out"
    lock = out / ".whisperfleet" / "run.lock"
    first = launch(src, out)
    eventually(lock.exists, timeout=120, what="the first run's lock")
    second = launch(src, out)
    _, err = second.communicate(timeout=300)
    said = " ".join(err.split())
    assert second.returncode == 2, err
    assert "another whisperfleet run is writing to this output" in said
    assert f"pid {first.pid}" in said
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert sorted(p.name for p in out.glob("*.json")) == [f"talk-{i:02d}.json"
                                                          for i in range(6)]
    assert not lock.exists() and not lock.parent.exists()  # nothing left in the output
    again = launch(src, out)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "6 skipped" in err, err


@pytest.mark.slow
def test_after_a_killed_run_the_next_takes_over_its_lock_at_once(
        tmp_path: Path, audio_dir: Path, launch: Callable[..., subprocess.Popen[str]]) -> None:
    src, out = inputs(tmp_path / "in", audio_dir, 4), tmp_path / "out"
    lock = out / ".whisperfleet" / "run.lock"
    killed = launch(src, out)
    eventually(lock.exists, timeout=120, what="the first run's lock")
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert lock.exists()  # left behind
    after = launch(src, out)
    _, err = after.communicate(timeout=600)
    assert after.returncode == 0, err
    said = " ".join(err.split())  # the log wraps long lines
    assert f"took over the run lock of a run that is gone (host {socket.gethostname()}, " \
           f"pid {killed.pid}" in said, err
    assert len(list(out.glob("*.json"))) == 4 and not lock.exists()


def test_a_lock_write_whose_answer_was_lost_is_still_ours(
        output: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The conditional create landed, its reply was lost, the client retried: the retry is
    # refused (the object exists), and what it finds is this run's own lock.
    store = run_lock._store(run_lock.lock_uri(output))
    create = store.create
    monkeypatch.setattr(store, "create", lambda data: create(data) and False)
    me = run_lock._acquire(store)
    assert json.loads(lock_text(output) or "{}")["run"] == me.run


def test_an_output_that_cannot_hold_the_lock_is_a_clear_storage_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(storage.StorageError, match="afile"), \
            run_lock.run_lock(str(tmp_path / "afile" / "out"), never_lost):
        pass
