"""`whisperfleet transcribe` and `whisperfleet models pull` on gs:// and az://, through the
installed console script, against the GCS emulator and Azurite (tests/support/emulators.py):
the bundled tiny.en on the CPU, the environment a user would set (STORAGE_EMULATOR_HOST;
AZURE_STORAGE_CONNECTION_STRING, whose account key the secret guard looks for everywhere)."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.waiting import eventually
from tests.support.credentials import AZURE_ACCOUNT_KEY
from tests.support.object_stores import Bucket, bucket_of
from tests.support.paths import WHISPERFLEET

pytestmark = pytest.mark.slow
LOCK = ".whisperfleet/run.lock"


@pytest.fixture(params=["gs", "az"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    return bucket_of(request.param, request)


def whisperfleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WHISPERFLEET), *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def transcribe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return whisperfleet("transcribe", *args, "--device", "cpu", "--formats", "json,txt",
                        env=env)


def test_store_to_store_mirrors_keys_then_a_rerun_skips(bucket: Bucket, audio_dir: Path,
                                                         tmp_path: Path) -> None:
    bucket.put("in/hello.wav", audio_dir / "hello.wav")
    bucket.put("in/day 1/numbers.wav", audio_dir / "nested" / "numbers.wav")
    summary = tmp_path / "summary.json"
    args = (bucket.uri("in/"), "-o", bucket.uri("out/"), "--model", "tiny.en",
            "--summary-json", str(summary))
    first = transcribe(*args, env=bucket.env)
    assert first.returncode == 0, first.stderr
    assert sorted(bucket.keys("out/")) == ["out/day 1/numbers.json", "out/day 1/numbers.txt",
                                           "out/hello.json", "out/hello.txt"]  # no lock left
    hello = json.loads(bucket.read("out/hello.json"))
    assert "hello" in hello["text"].lower()
    assert hello["source"] == bucket.uri("in/hello.wav")
    assert bucket.read("out/day 1/numbers.txt").strip()
    written = {key: bucket.read(key) for key in bucket.keys("out/")}
    assert not any(AZURE_ACCOUNT_KEY.encode() in data for data in written.values())

    again = transcribe(*args, env=bucket.env)
    assert again.returncode == 0, again.stderr
    files = json.loads(summary.read_text())["files"]
    assert files["skipped"] == 2 and files["succeeded"] == 0
    assert {key: bucket.read(key) for key in bucket.keys("out/")} == written


@pytest.fixture
def running() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def test_a_second_run_on_the_same_output_stops_naming_the_first(
        bucket: Bucket, audio_dir: Path, running: list[subprocess.Popen[str]]) -> None:
    for i in range(6):
        bucket.put(f"in/talk-{i}.wav", audio_dir / "hello.wav")
    args = [str(WHISPERFLEET), "transcribe", bucket.uri("in/"), "-o", bucket.uri("out/"),
            "--model", "tiny.en", "--device", "cpu", "--no-pack", "--quiet"]
    first = subprocess.Popen(args, env=bucket.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    running.append(first)
    eventually(lambda: f"out/{LOCK}" in bucket.keys("out/"), timeout=120,
               what="the first run's lock")
    second = whisperfleet(*args[1:], env=bucket.env)
    said = " ".join(second.stderr.split())
    assert second.returncode == 2, second.stderr
    assert "another whisperfleet run is writing to this output" in said
    assert f"pid {first.pid}" in said
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    outputs = bucket.keys("out/")
    assert sorted(k for k in outputs if k.endswith(".json")) == [f"out/talk-{i}.json"
                                                                 for i in range(6)]
    assert f"out/{LOCK}" not in outputs  # released


def test_a_model_staged_in_the_store_is_copied_once_and_used(
        bucket: Bucket, audio_dir: Path, tmp_path: Path, tiny_model_path: Path) -> None:
    env = {**bucket.env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    uri = bucket.uri("models/tiny-en/")
    pulled = whisperfleet("models", "pull", "tiny.en", "--to", uri, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert f"--model {uri}" in pulled.stdout
    local = {p.name: p.stat().st_size for p in tiny_model_path.iterdir() if p.is_file()}
    staged = bucket.keys("models/tiny-en/")
    assert {k.rsplit("/", 1)[1]: v for k, v in staged.items()
            if not k.endswith("whisperfleet-model.json")} == local

    bucket.put("in/hello.wav", audio_dir / "hello.wav")
    first = transcribe(bucket.uri("in/"), "-o", str(tmp_path / "out1"), "--model", uri,
                       env=env)
    assert first.returncode == 0, first.stderr
    assert "hello" in json.loads((tmp_path / "out1" / "hello.json").read_text())["text"].lower()
    copies = [p for p in (tmp_path / "cache" / "whisperfleet" / "models").glob("*/model.bin")]
    assert len(copies) == 1 and copies[0].stat().st_size == local["model.bin"]
    before = copies[0].stat()

    second = transcribe(bucket.uri("in/"), "-o", str(tmp_path / "out2"), "--model", uri,
                        env=env)
    assert second.returncode == 0, second.stderr
    after = copies[0].stat()
    # Not copied again: the same file, untouched.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("side", ["output", "input"])
def test_a_missing_bucket_is_a_usage_error_naming_it(bucket: Bucket, audio_dir: Path,
                                                     tmp_path: Path, side: str) -> None:
    missing = f"{bucket.scheme}://wf-no-such-bucket-9/x/"
    args = ((str(audio_dir / "hello.wav"), "-o", missing) if side == "output"
            else (missing, "-o", str(tmp_path / "out")))
    result = transcribe(*args, "--model", "tiny.en", env=bucket.env)
    assert result.returncode == 2, result.stderr
    word = "bucket" if bucket.scheme == "gs" else "container"
    said = " ".join(result.stderr.split())
    assert f"{word} 'wf-no-such-bucket-9'" in said and "does not exist" in said
    assert "preflight" not in said and "Traceback" not in said


def test_a_wrong_azure_key_is_refused_without_showing_either_key(
        audio_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    bucket = bucket_of("az", request)
    wrong = base64.b64encode(b"not-the-key-of-this-account-0123").decode()
    connection = bucket.env["AZURE_STORAGE_CONNECTION_STRING"].replace(AZURE_ACCOUNT_KEY, wrong)
    env = {**bucket.env, "AZURE_STORAGE_CONNECTION_STRING": connection}
    result = transcribe(str(audio_dir / "hello.wav"), "-o", bucket.uri("out/"), "--model",
                        "tiny.en", env=env)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    # Azure says AuthenticationFailed (credentials rejected), Azurite AuthorizationFailure
    # (access denied): the message points at the credentials either way.
    assert "access denied" in said and "AZURE_STORAGE_CONNECTION_STRING" in said
    assert wrong not in result.stdout + result.stderr  # the guard looks for the right one



def test_staging_a_model_into_a_missing_bucket_names_it(bucket: Bucket) -> None:
    missing = f"{bucket.scheme}://wf-no-such-bucket-9/models/tiny-en/"
    result = whisperfleet("models", "pull", "tiny.en", "--to", missing, env=bucket.env)
    said = " ".join(result.stderr.split())
    assert result.returncode != 0 and "BucketNotFound" in said, result.stderr
    assert "'wf-no-such-bucket-9'" in said and "does not exist" in said
