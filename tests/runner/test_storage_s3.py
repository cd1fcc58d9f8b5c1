"""Storage against a real S3 HTTP API (moto server), configured only by the AWS environment."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from tests.support import secrets_guard
from tests.support.fault_proxy import Faults, start_proxy
from whisperfleet_runner.storage import (
    StorageError,
    UnsafeKeyError,
    list_inputs,
    list_uris,
    output_uris,
    outputs_exist,
    publish,
    publish_set,
    read_bytes,
    read_text,
)

pytestmark = pytest.mark.slow  # a live HTTP server per session

ODD_KEYS = [
    "in/a//b.wav", "in/x/./y.wav", "in/evil/../../x.wav", "in/with space é.wav",
    "in/東京/会議.mp3", "in/ok.WAV", "in//lead.wav",
]


def _s3(env: dict[str, str]) -> Any:
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])


def _keys(env: dict[str, str], bucket: str) -> list[str]:
    listed = _s3(env).list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listed.get("Contents", []))


@pytest.fixture
def odd_bucket(s3_env: dict[str, str], s3_bucket: str) -> str:
    client = _s3(s3_env)
    for key in [*ODD_KEYS, "in/notes.txt", "in/.whisperfleet/uid/manifest.wav", "in2/no.wav"]:
        client.put_object(Bucket=s3_bucket, Key=key, Body=f"body of {key}".encode())
    return s3_bucket


def test_listing_survives_odd_keys_and_reads_each_exact_object(
    s3_env: dict[str, str], odd_bucket: str
) -> None:
    files = list_inputs(f"s3://{odd_bucket}/in/")
    keys = [f.key for f in files]
    # Exactly as stored, sorted; not the sibling prefix in2/, not the state folder, not .txt.
    assert keys == sorted(k[len("in/"):] for k in ODD_KEYS)
    for f in files:
        assert f.uri == f"s3://{odd_bucket}/in/{f.key}"
        body = f"body of in/{f.key}".encode()
        assert read_bytes(f.uri) == body
        assert f.size == len(body)


def test_prefix_without_slash_and_single_object(s3_env: dict[str, str], odd_bucket: str) -> None:
    assert [f.key for f in list_inputs(f"s3://{odd_bucket}/in")] == [
        f.key for f in list_inputs(f"s3://{odd_bucket}/in/")]
    single = list_inputs(f"s3://{odd_bucket}/in/with space é.wav")
    assert [(f.key, f.size) for f in single] == [
        ("with space é.wav", len("body of in/with space é.wav".encode()))]


def test_outputs_stay_under_the_output_prefix(s3_env: dict[str, str], odd_bucket: str) -> None:
    out = f"s3://{odd_bucket}/out/"
    refused = {}
    for f in list_inputs(f"s3://{odd_bucket}/in/"):
        try:
            uris = output_uris(f.key, out, ["json", "txt"])
        except UnsafeKeyError as exc:
            refused[f.key] = str(exc)
            continue
        publish_set({uri: f"{fmt} of {f.key}" for fmt, uri in uris.items()})
        assert outputs_exist(uris.values())
    assert set(refused) == {"evil/../../x.wav", "/lead.wav"}
    assert "climb above" in refused["evil/../../x.wav"]
    assert "absolute" in refused["/lead.wav"]
    written = [k for k in _keys(s3_env, odd_bucket) if not k.startswith(("in/", "in2/"))]
    assert written == sorted(f"out/{stem}.{fmt}" for stem in
                             ["a/b", "x/y", "with space é", "東京/会議", "ok"]
                             for fmt in ("json", "txt"))
    assert read_bytes(f"{out}東京/会議.txt") == "txt of 東京/会議.mp3".encode()


def test_outputs_exist_is_false_until_the_whole_set_is_there(
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    uris = output_uris("talk.wav", f"s3://{s3_bucket}/out", ["json", "srt"])
    assert not outputs_exist(uris.values())
    publish(uris["srt"], "1\n")
    assert not outputs_exist(uris.values())
    publish(uris["json"], "{}")
    assert outputs_exist(uris.values())


def test_empty_prefix_lists_nothing_and_missing_object_is_not_found(
    s3_env: dict[str, str], s3_bucket: str
) -> None:
    assert list_inputs(f"s3://{s3_bucket}/nothing/") == []
    with pytest.raises(StorageError) as info:
        list_inputs(f"s3://{s3_bucket}/nothing")
    assert info.value.reason == "NotFound"
    with pytest.raises(StorageError) as info:
        read_bytes(f"s3://{s3_bucket}/nothing.wav")
    assert info.value.reason == "NotFound"


def test_missing_bucket_is_named(s3_env: dict[str, str]) -> None:
    for action in (lambda: list_inputs("s3://no-such-bucket-wf/in/"),
                   lambda: publish("s3://no-such-bucket-wf/out/a.txt", "x")):
        with pytest.raises(StorageError) as info:
            action()
        assert info.value.reason == "BucketNotFound"
        assert "'no-such-bucket-wf'" in str(info.value)
        assert "AWS_ENDPOINT_URL" in str(info.value)


def test_ledger_objects_are_listed_by_suffix_on_s3(s3_env: dict[str, str], s3_bucket: str
                                                   ) -> None:
    ledger = f"s3://{s3_bucket}/out/.whisperfleet/uid/ledger"
    for name in ("0-0.jsonl", "1-0.jsonl", "notes.txt"):
        publish(f"{ledger}/{name}", '{"uri": "a é.wav"}\n')
    assert list_uris(ledger, ".jsonl") == [f"{ledger}/0-0.jsonl", f"{ledger}/1-0.jsonl"]
    assert read_text(f"{ledger}/0-0.jsonl") == '{"uri": "a é.wav"}\n'
    assert list_uris(f"s3://{s3_bucket}/elsewhere/") == []


# --- credentials --------------------------------------------------------------------------
@pytest.fixture
def iam_user(s3_env: dict[str, str], s3_bucket: str) -> Iterator[dict[str, str]]:
    """Turn on moto's IAM checks; yields a real access key allowed to read (not write) S3."""
    endpoint = s3_env["AWS_ENDPOINT_URL"]
    iam = boto3.client("iam", endpoint_url=endpoint)
    name = f"u-{s3_bucket}"
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"], "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    secrets_guard.register(key["AccessKeyId"], "the IAM user's access key")
    secrets_guard.register(key["SecretAccessKey"], "the IAM user's secret key")
    _s3(s3_env).put_object(Bucket=s3_bucket, Key="in/a.wav", Body=b"audio")
    requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10)


def _full_text(err: BaseException) -> str:
    return "".join(traceback.format_exception(err))


def test_valid_key_reads_but_may_not_write(
    iam_user: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_user["id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_user["secret"])
    assert [f.key for f in list_inputs(f"s3://{s3_bucket}/in/")] == ["a.wav"]
    with pytest.raises(StorageError) as info:
        publish(f"s3://{s3_bucket}/out/a.txt", "x")
    assert info.value.reason == "AccessDenied"
    assert f"s3://{s3_bucket}/out/a.txt" in str(info.value)
    assert iam_user["secret"] not in _full_text(info.value)


def test_transcribe_refuses_an_output_it_may_not_write_before_any_work(
    iam_user: dict[str, str], s3_env: dict[str, str], s3_bucket: str, audio_dir: Path,
    tiny_model_path: Path,
) -> None:
    env = {**s3_env, "AWS_ACCESS_KEY_ID": iam_user["id"],
           "AWS_SECRET_ACCESS_KEY": iam_user["secret"]}
    script = Path(sys.executable).parent / "whisperfleet"
    result = subprocess.run(
        [str(script), "transcribe", str(audio_dir / "hello.wav"), "-o", f"s3://{s3_bucket}/out/",
         "--model", str(tiny_model_path), "--quiet"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    text = result.stdout + result.stderr
    assert "AccessDenied" in text or "access denied" in text.lower()
    assert f"s3://{s3_bucket}/out/" in text and "write-check" not in text
    assert "transcribed" not in text  # refused up front: no file was worked on
    assert iam_user["secret"] not in text


@pytest.mark.parametrize("which", ["wrong secret", "unknown key id"])
def test_wrong_credentials_never_leak_the_secret(
    iam_user: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    wrong_secret = "Wr0ngSecretValue/ShouldNeverAppearAnywhere+1234567890"
    key_id = iam_user["id"] if which == "wrong secret" else "AKIAUNKNOWNKEY000000"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    with pytest.raises(StorageError) as info:
        list_inputs(f"s3://{s3_bucket}/in/")
    assert info.value.reason == "InvalidCredentials"
    assert "AWS_SECRET_ACCESS_KEY" in str(info.value)  # tells what to check…
    text = _full_text(info.value)
    assert wrong_secret not in text and iam_user["secret"] not in text  # …never its value


def test_missing_credentials_are_reported(
    s3_env: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(StorageError) as info:
        list_inputs(f"s3://{s3_bucket}/in/")
    assert info.value.reason == "NoCredentials"


def test_unreachable_endpoint(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError) as info:
        list_inputs("s3://bucket/in/")
    assert info.value.reason == "Unreachable"


# --- a crash in the middle of an upload ---------------------------------------------------
def test_upload_cut_mid_body_leaves_nothing_visible(
    s3_env: dict[str, str], s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _s3(s3_env).put_object(Bucket=s3_bucket, Key="out/old.json", Body=b"old complete")
    # Every PUT is cut half-way: the store sees each upload begin and break off.
    with start_proxy(s3_env["AWS_ENDPOINT_URL"], Faults(cut=1.0, max_in_a_row=1 << 30)
                     ) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        for name in ("new.json", "old.json"):
            with pytest.raises(StorageError) as info:
                publish(f"s3://{s3_bucket}/out/{name}", b"x" * (1024 * 1024))
            assert info.value.reason == "Unreachable"
        assert proxy.counts()["cut"] >= 2
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env["AWS_ENDPOINT_URL"])
    assert _keys(s3_env, s3_bucket) == ["out/old.json"]  # no partial, no temporary keys
    assert read_bytes(f"s3://{s3_bucket}/out/old.json") == b"old complete"
    assert not outputs_exist([f"s3://{s3_bucket}/out/new.json"])


def test_empty_output_of_silence_is_published(s3_env: dict[str, str], s3_bucket: str) -> None:
    # txt and srt of a silent file are empty; they must still count as written.
    uri = f"s3://{s3_bucket}/out/silence.srt"
    publish(uri, "")
    assert outputs_exist([uri])
    assert read_bytes(uri) == b""
