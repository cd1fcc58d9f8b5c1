"""Streams through storage: reading an object line by line in ranged chunks, publishing one
from many writes complete-or-absent, and listings that come in key order."""

from __future__ import annotations

import errno
import io
import logging
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.fault_proxy import start_proxy
from whisperfleet_runner import storage
from whisperfleet_runner.storage import fs

LINES = [b'{"key":"a"}\n', b"\n", "{\"key\":\"東京/会議\"}\n".encode(), b"x" * 40 + b"\n",
         b"no newline at the end"]


def _s3(env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])


@pytest.mark.parametrize("chunk", [1, 5, 7, 41, 1 << 20])
def test_lines_come_back_whole_whatever_the_chunk(tmp_path: Path, chunk: int) -> None:
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"".join(LINES))
    assert list(storage.iter_lines(str(path), chunk)) == LINES
    storage.publish(f"memory://wf-lines/{chunk}.jsonl", b"".join(LINES))
    assert list(storage.iter_lines(f"memory://wf-lines/{chunk}.jsonl", chunk)) == LINES


@pytest.mark.slow
def test_lines_of_an_s3_object_in_ranged_reads(s3_env: dict[str, str], s3_bucket: str) -> None:
    uri = f"s3://{s3_bucket}/state/manifest.jsonl"
    storage.publish(uri, b"".join(LINES))
    for chunk in (3, 11, 12, 1 << 20):  # 12: a chunk that ends exactly on a newline
        assert list(storage.iter_lines(uri, chunk)) == LINES
    storage.publish(f"s3://{s3_bucket}/empty", b"")
    assert list(storage.iter_lines(f"s3://{s3_bucket}/empty", 4)) == []
    with pytest.raises(storage.StorageError) as info:
        list(storage.iter_lines(f"s3://{s3_bucket}/missing.jsonl"))
    assert info.value.reason == "NotFound"


def test_a_local_stream_appears_only_when_complete(tmp_path: Path) -> None:
    target = tmp_path / "out" / "manifest.jsonl"
    with storage.publish_stream(str(target)) as fh:
        fh.write(b"one\n")
        assert not target.exists()
        fh.write(b"two\n")
    assert target.read_bytes() == b"one\ntwo\n"
    with pytest.raises(RuntimeError), storage.publish_stream(str(target)) as fh:
        fh.write(b"half")
        raise RuntimeError("the writer failed")
    assert target.read_bytes() == b"one\ntwo\n"  # the old object stands, no debris
    assert sorted(p.name for p in target.parent.iterdir()) == ["manifest.jsonl"]


@pytest.mark.slow
def test_an_s3_stream_is_uploaded_in_parts_or_not_at_all(
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    uri = f"s3://{s3_bucket}/state/big.jsonl"
    part = bytes(range(256)) * 4096  # 1 MiB
    with storage.publish_stream(uri) as fh:
        for _ in range(17):  # above two 8 MiB parts: a multipart upload
            fh.write(part)
    assert storage.read_bytes(uri) == part * 17
    with pytest.raises(RuntimeError), storage.publish_stream(f"s3://{s3_bucket}/half") as fh:
        fh.write(part)
        raise RuntimeError("the writer failed")
    s3 = _s3(s3_env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])]
    assert keys == ["state/big.jsonl"]
    assert not s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")


@pytest.mark.slow
def test_a_failed_abort_leaves_the_error_that_stopped_the_upload(
    s3_env: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The spool an upload reads from breaks after its first part, and the store is gone by
    the time the upload is aborted: the caller must learn that the spool broke."""
    with start_proxy(s3_env["AWS_ENDPOINT_URL"]) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the abort's tries: the store is gone

        class BrokenSpool(io.RawIOBase):
            """One part's bytes, then a disk error, just as the store vanishes."""

            reads = 0

            def read(self, size: int = -1) -> bytes:
                self.reads += 1
                if self.reads == 1:
                    return b"x" * fs.PART_BYTES
                proxy.stop()
                raise OSError(errno.EIO, "Input/output error", "/tmp/whisperfleet-spool")

        filesystem, path = fs.filesystem(f"s3://{s3_bucket}/state/manifest.jsonl")
        with caplog.at_level(logging.WARNING), pytest.raises(OSError) as info:
            fs.s3_upload(filesystem, path, BrokenSpool(), 2 * fs.PART_BYTES)
    assert info.value.errno == errno.EIO, info.value  # not the abort's connection error
    assert "could not abort the failed upload" in caplog.text
    assert "cannot reach the storage endpoint" in caplog.text
    s3 = _s3(s3_env)
    assert not s3.list_objects_v2(Bucket=s3_bucket).get("Contents")  # nothing visible
    assert len(s3.list_multipart_uploads(Bucket=s3_bucket).get("Uploads", [])) == 1


def test_local_listings_come_in_key_order(tmp_path: Path) -> None:
    keys = ["a b.wav", "a-b/x.wav", "a.wav", "a/x.wav", "a/y/z.wav", "a0.wav", "b.wav",
            "é.wav"]
    for key in keys:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(b"x")
    listed = [f.key for f in storage.iter_inputs(str(tmp_path))]
    assert listed == sorted(keys)  # the order an S3 listing has, so plans are reproducible


def test_an_output_in_memory_storage_is_listed_once_to_decide() -> None:
    base = "memory://wf-marks"
    storage.publish(f"{base}/out/a.json", "{}")
    storage.publish(f"{base}/out/a.txt", "")
    storage.publish(f"{base}/out/b.json", "{}")
    files = [storage.InputFile(f"{base}/in/{k}", k, 1) for k in ("a.wav", "b.wav", "c.wav")]
    marked = storage.mark_done(files, f"{base}/out", ("json", "txt"))
    assert [f.done for f in marked] == [True, False, False]
