"""Reading one input a few blocks at a time (`storage.open_input`): exact bytes wherever
the reader jumps, a bounded cache, ranged requests on S3, and the failures `read_bytes`
gives for the same object, before and during the read."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest

from tests.support import damaged_media as dm
from whisperfleet_runner import storage
from whisperfleet_runner.contract import Reason
from whisperfleet_runner.media.audio import decode_media, open_stream
from whisperfleet_runner.storage import fs as storage_fs
from whisperfleet_runner.storage.ranged import RangedReader

BLOCK = 64 << 10


def _random_bytes(size: int) -> bytes:
    return np.random.default_rng(5).integers(0, 256, size, dtype=np.uint8).tobytes()


def _failure(action: Callable[[], Any]) -> storage.StorageError:
    with pytest.raises(storage.StorageError) as info:
        action()
    return info.value


def _read_through(uri: str, **options: int) -> bytes:
    with storage.open_input(uri, **options) as fh:
        return fh.read()


def test_a_local_file_reads_back_exactly_wherever_the_reader_jumps(tmp_path: Path) -> None:
    data = _random_bytes(1 << 20)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    oracle = io.BytesIO(data)
    rng = np.random.default_rng(9)
    with storage.open_input(str(path), block_bytes=BLOCK, blocks=2) as fh:
        reader: RangedReader = fh  # type: ignore[assignment]
        assert reader.size == len(data) == fh.seek(0, io.SEEK_END) == oracle.seek(0, io.SEEK_END)
        for _ in range(300):
            whence = int(rng.integers(0, 3))
            offset = int(rng.integers(0, len(data) + 10)) - (len(data) if whence == 2 else 0)
            if whence == 1:
                offset = int(rng.integers(-oracle.tell(), 50_000))
            assert fh.seek(offset, whence) == oracle.seek(offset, whence)
            size = int(rng.integers(0, 200_000))
            assert fh.read(size) == oracle.read(size)
            assert fh.tell() == oracle.tell()
        assert reader.held <= 2 * BLOCK  # never more than two blocks, of a 16-block file


def test_a_front_to_back_read_fetches_each_byte_once(tmp_path: Path) -> None:
    data = _random_bytes(1 << 20)
    path = tmp_path / "in.bin"
    path.write_bytes(data)
    with storage.open_input(str(path), block_bytes=BLOCK) as fh:
        reader: RangedReader = fh  # type: ignore[assignment]
        parts = iter(lambda: fh.read(32 << 10), b"")
        assert b"".join(parts) == data
        assert (reader.fetched, reader.fetches) == (len(data), len(data) // BLOCK)
    with pytest.raises(ValueError):
        fh.read(1)  # closed with the block


def test_an_empty_file_reads_as_ended(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert _read_through(str(tmp_path / "empty")) == b""
    storage.publish("memory://wf-input/empty", b"")
    assert _read_through("memory://wf-input/empty") == b""


def test_local_failures_are_the_ones_read_bytes_gives(tmp_path: Path) -> None:
    for uri in (str(tmp_path / "missing.wav"), str(tmp_path)):
        expected = _failure(lambda u=uri: storage.read_bytes(u))
        assert _failure(lambda u=uri: _read_through(u)).reason == expected.reason
    assert _failure(lambda: _read_through(str(tmp_path / "x"))).reason == Reason.NOT_FOUND


def test_a_file_cut_while_it_is_read_fails_and_stays_failed(tmp_path: Path) -> None:
    path = tmp_path / "talk.wav"
    path.write_bytes(_random_bytes(4 * BLOCK))
    with storage.open_input(str(path), block_bytes=BLOCK) as fh:
        assert len(fh.read(BLOCK)) == BLOCK
        os.truncate(path, BLOCK + 10)
        err = _failure(lambda: fh.read(2 * BLOCK))
        assert err.reason == Reason.STORAGE_ERROR and "changed while it was read" in str(err)
        fh.seek(0)
        assert _failure(lambda: fh.read(1)) is err  # the client's retries are spent


def test_other_stores_read_in_ranges_and_fail_like_read_bytes() -> None:
    data = _random_bytes(300_000)
    uri = "memory://wf-input/in.bin"
    storage.publish("memory://wf-input/sub/a.wav", b"RIFF")
    folder = _failure(lambda: _read_through("memory://wf-input/sub"))
    assert folder.reason == _failure(lambda: storage.read_bytes("memory://wf-input/sub")).reason
    storage.publish(uri, data)
    with storage.open_input(uri, block_bytes=BLOCK) as fh:
        fh.seek(-1000, io.SEEK_END)
        assert fh.read() == data[-1000:]
        fh.seek(5)
        assert fh.read(BLOCK + 7) == data[5 : BLOCK + 12]
        storage.remove(uri)  # gone mid-read: the next block cannot be fetched
        gone = _failure(lambda: fh.read())
    assert gone.reason == _failure(lambda: storage.read_bytes(uri)).reason == Reason.NOT_FOUND
    assert _failure(lambda: _read_through(uri)).reason == Reason.NOT_FOUND


# --- S3 -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def speech_flac() -> bytes:
    """50 s of speech as FLAC: more than one 500,000-sample group, about 1 MB."""
    return dm.encode(np.tile(dm.speech(), 3), "flac", "flac")


@pytest.fixture
def ranges(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
           ) -> list[tuple[int | None, int | None]]:
    """Every (start, end) the S3 filesystem is asked to GET, in order."""
    filesystem, _ = storage_fs.filesystem("s3://any/key")
    asked: list[tuple[int | None, int | None]] = []
    real = filesystem.cat_file

    def spy(path: str, start: int | None = None, end: int | None = None, **kw: Any) -> Any:
        asked.append((start, end))
        return real(path, start=start, end=end, **kw)

    monkeypatch.setattr(filesystem, "cat_file", spy)
    return asked


@pytest.mark.slow
def test_an_s3_object_is_decoded_from_ranged_reads(
    s3_env: dict[str, str], s3_bucket: str, speech_flac: bytes,
    ranges: list[tuple[int | None, int | None]],
) -> None:
    uri = f"s3://{s3_bucket}/in/talk.flac"
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="in/talk.flac", Body=speech_flac)
    block = 32 << 10
    with storage.open_input(uri, block_bytes=block) as fh, open_stream(fh, "talk.flac") as s:
        streamed = np.concatenate(list(s))
    asked = list(ranges)
    np.testing.assert_array_equal(streamed, decode_media(speech_flac, "talk.flac").samples)
    assert all(start is not None and end is not None and 0 < end - start <= block
               for start, end in asked), asked
    assert len(asked) >= len(speech_flac) // block
    assert sum(end - start for start, end in asked) <= len(speech_flac) + 2 * block  # type: ignore[operator]


@pytest.mark.slow
def test_a_missing_s3_object_or_bucket_fails_like_read_bytes(
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="in/sub/a.wav", Body=b"RIFF")
    for uri, reason in ((f"s3://{s3_bucket}/in/missing.wav", Reason.NOT_FOUND),
                        (f"s3://{s3_bucket}/in/sub", Reason.NOT_FOUND),  # a prefix, not empty
                        ("s3://wf-no-such-bucket/in/a.wav", Reason.BUCKET_NOT_FOUND)):
        expected = _failure(lambda u=uri: storage.read_bytes(u))
        err = _failure(lambda u=uri: _read_through(u))
        assert err.reason == expected.reason == reason
        assert storage.store_lost(err.reason) == (reason == Reason.BUCKET_NOT_FOUND)


@pytest.mark.slow
@pytest.mark.parametrize("lose", ["object", "bucket"])
def test_an_s3_object_lost_mid_decode_is_a_storage_failure(
    s3_env: dict[str, str], s3_bucket: str, speech_flac: bytes, lose: str
) -> None:
    uri = f"s3://{s3_bucket}/in/talk.flac"
    s3 = boto3.client("s3")
    s3.put_object(Bucket=s3_bucket, Key="in/talk.flac", Body=speech_flac)
    with storage.open_input(uri, block_bytes=16 << 10) as fh, \
            open_stream(fh, "talk.flac", block_seconds=1.0, keep_partial=True) as stream:
        next(stream)  # the first group is decoded: the file's end is still to be fetched
        assert fh.tell() < len(speech_flac)
        s3.delete_object(Bucket=s3_bucket, Key="in/talk.flac")
        if lose == "bucket":
            s3.delete_bucket(Bucket=s3_bucket)
        err = _failure(lambda: list(stream))
    expected = _failure(lambda: storage.read_bytes(uri))
    assert err.reason == expected.reason
    assert storage.store_lost(err.reason) == (lose == "bucket")


@pytest.mark.slow
def test_an_unreachable_store_is_a_lost_store(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    uri = "s3://bucket/in/a.wav"
    err = _failure(lambda: _read_through(uri))
    assert err.reason == _failure(lambda: storage.read_bytes(uri)).reason == Reason.UNREACHABLE
    assert storage.store_lost(err.reason)
