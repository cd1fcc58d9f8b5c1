"""The storage layer on gs:// and az://, against real servers: the GCS emulator
(gcp-storage-emulator) and Azurite (tests/support/emulators.py), each reached as a user
would reach the real store, through the environment (STORAGE_EMULATOR_HOST;
AZURE_STORAGE_CONNECTION_STRING)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.object_stores import Bucket, bucket_of
from whisperfleet_runner import storage
from whisperfleet_runner.contract import Reason
from whisperfleet_runner.storage import run_lock
from whisperfleet_runner.storage.errors import StorageError

pytestmark = pytest.mark.slow  # live HTTP servers per session
SCHEMES = ["gs", "az"]


@pytest.fixture(params=SCHEMES)
def bucket(request: pytest.FixtureRequest) -> Bucket:
    return bucket_of(request.param, request)


def test_inputs_are_listed_read_in_ranges_and_outputs_published(
        bucket: Bucket, audio_dir: Path) -> None:
    hello = audio_dir / "hello.wav"
    for key in ("in/hello.wav", "in/day1/numbers.wav", "in/notes.txt",
                "in/.whisperfleet/manifest.wav"):
        bucket.put(key, hello)
    found = storage.list_inputs(bucket.uri("in/"))
    assert [(f.key, f.size) for f in found] == [("day1/numbers.wav", hello.stat().st_size),
                                                ("hello.wav", hello.stat().st_size)]
    assert found[1].uri == bucket.uri("in/hello.wav")
    with storage.open_input(found[1].uri, block_bytes=4096, blocks=2) as reader:
        reader.seek(10_000)
        assert reader.read(5000) == hello.read_bytes()[10_000:15_000]
    # A single object named without a trailing slash is that object alone.
    assert [f.key for f in storage.list_inputs(bucket.uri("in/hello.wav"))] == ["hello.wav"]

    storage.publish_set({bucket.uri("out/hello.txt"): "hi\n",
                         bucket.uri("out/hello.json"): json.dumps({"text": "hi"})})
    assert bucket.read("out/hello.txt") == b"hi\n"
    assert storage.outputs_exist([bucket.uri("out/hello.txt"), bucket.uri("out/hello.json")])
    assert not storage.exists(bucket.uri("out/other.json"))
    marked = storage.mark_done(found, bucket.uri("out/"), ["json", "txt"])
    assert [(f.key, f.done) for f in marked] == [("day1/numbers.wav", False),
                                                 ("hello.wav", True)]
    with storage.publish_stream(bucket.uri("out/big.json")) as out:
        for _ in range(300):
            out.write(b"x" * 100_000)  # 30 MB: past one upload request on both stores
    assert bucket.size("out/big.json") == 30_000_000
    storage.remove(bucket.uri("out/hello.txt"))
    storage.remove(bucket.uri("out/hello.txt"))  # a missing one is fine
    assert not storage.exists(bucket.uri("out/hello.txt"))


def test_an_empty_prefix_lists_nothing_and_a_missing_object_is_not_found(
        bucket: Bucket) -> None:
    assert storage.list_inputs(bucket.uri("nothing/")) == []
    with pytest.raises(StorageError) as info:
        storage.list_inputs(bucket.uri("nothing"))
    assert info.value.reason == Reason.NOT_FOUND
    with pytest.raises(StorageError) as info:
        storage.read_bytes(bucket.uri("nothing.wav"))
    assert info.value.reason == Reason.NOT_FOUND


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_missing_bucket_is_named_when_listing_and_writing(
        scheme: str, request: pytest.FixtureRequest) -> None:
    bucket_of(scheme, request)  # the server and its environment, with a bucket of its own
    word = "bucket" if scheme == "gs" else "container"
    missing = f"{scheme}://wf-no-such-bucket/"
    def lock() -> None:
        with run_lock.run_lock(missing + "out", lambda why: None):
            pass

    for action in (lambda: storage.list_inputs(missing + "in/"),
                   lambda: storage.publish(missing + "out/a.txt", "x"),
                   lambda: storage.check_writable(missing + "out/"), lock):
        with pytest.raises(StorageError) as info:
            action()
        assert info.value.reason == Reason.BUCKET_NOT_FOUND
        assert f"{word} 'wf-no-such-bucket'" in str(info.value)
        assert "does not exist" in str(info.value)
        assert storage.store_lost(info.value.reason)


def test_the_run_lock_is_held_named_and_released(bucket: Bucket) -> None:
    output = bucket.uri("out")
    with run_lock.run_lock(output, lambda why: None) as me:
        held = json.loads(bucket.read("out/.whisperfleet/run.lock"))
        assert held["run"] == me.run
        with pytest.raises(run_lock.OutputBusy, match=f"pid {me.pid}"), \
                run_lock.run_lock(output, lambda why: None):
            pass
    assert bucket.keys("out/") == {}
