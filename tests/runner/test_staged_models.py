"""Models staged by `whisperfleet models pull` and read from object storage or a folder.

Real parts: the bundled tiny.en, staged through the CLI to moto's S3 server (over HTTP),
then loaded by `--model s3://…` with no hub (HF_HUB_OFFLINE=1, set for every test). The
server counts the bytes each GET sent (tests/support/s3_reads.py), so "copied once" is
measured on the wire, not taken from the runner's word.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import boto3
import pytest

from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.paths import WHISPERFLEET
from tests.support.s3_reads import S3Reads
from whisperfleet_runner.decode import model_store
from whisperfleet_runner.decode.models import ModelNotFoundError, resolve_model

pytestmark = pytest.mark.slow
CHECKSUMS = model_store.CHECKSUMS


@pytest.fixture(scope="module")
def counted_s3() -> Iterator[tuple[str, S3Reads]]:
    """A moto server of this module's own, whose GET bytes are counted."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    reads = S3Reads(server)
    try:
        yield f"http://127.0.0.1:{port}", reads
    finally:
        reads.stop()
        server.stop()


@pytest.fixture
def env(counted_s3: tuple[str, S3Reads], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
              "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": counted_s3[0],
              "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


@pytest.fixture
def bucket(env: dict[str, str]) -> str:
    name = f"wf-{uuid.uuid4().hex[:12]}"
    s3().create_bucket(Bucket=name)
    return name


def s3() -> object:
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def whisperfleet(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(WHISPERFLEET), *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def pull(uri: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = whisperfleet("models", "pull", "tiny.en", "--to", uri, env=env)
    assert done.returncode == 0, done.stderr
    return done


def test_pulled_to_s3_the_cli_transcribes_with_it_and_copies_it_once(
        env: dict[str, str], bucket: str, counted_s3: tuple[str, S3Reads], tmp_path: Path,
        audio_dir: Path, tiny_model_path: Path) -> None:
    uri = f"s3://{bucket}/models/tiny-en/"
    said = pull(uri, env).stdout
    assert f"staged tiny.en at {uri}" in said and f"--model {uri}" in said
    staged = {o["Key"]: o["Size"] for o in s3().list_objects_v2(Bucket=bucket)["Contents"]}
    local = {p.name: p.stat().st_size for p in tiny_model_path.iterdir() if p.is_file()}
    assert staged == {f"models/tiny-en/{n}": size for n, size in local.items()} | {
        f"models/tiny-en/{CHECKSUMS}": staged[f"models/tiny-en/{CHECKSUMS}"]}
    again = pull(uri, env).stdout
    assert "already staged, unchanged" in again

    reads = counted_s3[1]
    out = tmp_path / "out"
    inputs = [str(audio_dir / "hello.wav"), str(audio_dir / "nested")]
    first = whisperfleet("transcribe", *inputs, "-o", str(out), "--model", uri,
                         "--device", "cpu", "--formats", "json", env=env)
    assert first.returncode == 0, first.stderr
    assert "hello" in json.loads((out / "hello.json").read_text())["text"].lower()
    assert len(list(out.rglob("*.json"))) == 3
    model_bin = local["model.bin"]
    assert reads.of(bucket, "models/")["models/tiny-en/model.bin"] == model_bin  # once, for 3 files
    # A second run finds its copy current: it reads the checksum file, no model byte.
    second = whisperfleet("transcribe", *inputs, "-o", str(tmp_path / "out2"), "--model", uri,
                          "--device", "cpu", "--formats", "json", env=env)
    assert second.returncode == 0, second.stderr
    assert reads.of(bucket, "models/")["models/tiny-en/model.bin"] == model_bin


def _load(uri: str) -> str:
    return model_store.local_model(uri)


def test_processes_of_one_machine_copy_the_model_once(
        env: dict[str, str], bucket: str, counted_s3: tuple[str, S3Reads],
        tiny_model_path: Path) -> None:
    # As the worker processes of a pod with several GPUs do, each loading its model.
    uri = f"s3://{bucket}/models/tiny-en"
    model_store.stage(tiny_model_path, uri, "tiny.en")
    with ProcessPoolExecutor(3, mp_context=get_context("spawn")) as pool:
        paths = set(pool.map(_load, [uri] * 3))
    assert len(paths) == 1
    assert (Path(next(iter(paths))) / "model.bin").stat().st_size == \
        (tiny_model_path / "model.bin").stat().st_size
    sent = counted_s3[1].of(bucket, "models/tiny-en/model.bin")
    assert sent == {"models/tiny-en/model.bin": (tiny_model_path / "model.bin").stat().st_size}


def test_a_model_not_staged_fails_at_once_naming_where_it_looked(
        env: dict[str, str], bucket: str, tmp_path: Path, audio_dir: Path) -> None:
    uri = f"s3://{bucket}/models/base/"
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(uri)
    assert f"s3://{bucket}/models/base/{CHECKSUMS} does not exist" in str(err.value)
    assert "whisperfleet models pull" in str(err.value)
    done = whisperfleet("transcribe", str(audio_dir / "hello.wav"), "-o", str(tmp_path / "o"),
                        "--model", uri, "--device", "cpu", env=env)
    assert done.returncode == 2, done.stderr
    assert f"{uri.rstrip('/')}/{CHECKSUMS} does not exist" in done.stdout + done.stderr
    assert not (tmp_path / "o" / "hello.json").exists()


def test_a_damaged_staged_model_is_refused_and_leaves_no_copy(
        env: dict[str, str], bucket: str, tiny_model_path: Path) -> None:
    uri = f"s3://{bucket}/models/tiny-en"
    model_store.stage(tiny_model_path, uri, "tiny.en")
    key = "models/tiny-en/model.bin"
    body = bytearray(s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF  # same size, one byte flipped
    s3().put_object(Bucket=bucket, Key=key, Body=bytes(body))
    with pytest.raises(ModelNotFoundError, match=r"model\.bin does not match its SHA-256"):
        resolve_model(uri)
    s3().put_object(Bucket=bucket, Key=key, Body=bytes(body[:1000]))
    with pytest.raises(ModelNotFoundError, match=r"model\.bin has 1000 bytes, .* says"):
        resolve_model(uri)
    assert [p.name for p in model_store.cache_root().iterdir()
            if p.is_dir()] == []  # nothing half-copied stays to be loaded later


def test_a_folder_is_read_in_place_and_its_sizes_checked(
        env: dict[str, str], tmp_path: Path, tiny_model_path: Path) -> None:
    folder = tmp_path / "pvc" / "tiny-en"
    model_store.stage(tiny_model_path, f"file://{folder}", "tiny.en")
    assert resolve_model(f"file://{folder}") == str(folder)
    assert not model_store.cache_root().exists()  # nothing copied
    with (folder / "vocabulary.txt").open("ab") as fh:
        fh.write(b"x")
    with pytest.raises(ModelNotFoundError, match=r"incomplete: vocabulary\.txt has \d+ bytes"):
        resolve_model(f"file://{folder}")


def test_a_prestaged_volume_copy_that_broke_off_is_refused(
        env: dict[str, str], tmp_path: Path, tiny_model_path: Path) -> None:
    volume = tmp_path / "volume"
    model_store.stage(tiny_model_path, str(volume / "tiny-pvc"), "tiny-pvc")
    assert resolve_model("tiny-pvc", str(volume)) == str((volume / "tiny-pvc").resolve())
    with (volume / "tiny-pvc" / "model.bin").open("r+b") as fh:
        fh.truncate(4096)  # a copy onto the volume that stopped part-way
    with pytest.raises(ModelNotFoundError, match=r"incomplete: model\.bin has 4096 bytes"):
        resolve_model("tiny-pvc", str(volume))


def test_pull_into_a_prefix_skips_a_model_it_already_holds_without_the_hub(
        env: dict[str, str], bucket: str, tiny_model_path: Path) -> None:
    prefix = f"s3://{bucket}/models"
    first = whisperfleet("models", "pull", str(tiny_model_path), "--name", "base",
                         "--to", f"{prefix}/base", env=env)
    assert first.returncode == 0, first.stderr
    # `base` is not in any local cache and the hub is off: only the staged copy can answer.
    again = whisperfleet("models", "pull", "base", "--into", prefix, env=env)
    assert again.returncode == 0, again.stderr
    assert f"already staged, unchanged: base at {prefix}/base" in again.stdout
    forced = whisperfleet("models", "pull", "base", "--into", prefix, "--force", env=env)
    assert forced.returncode == 2 and "HF_HUB_OFFLINE" in forced.stderr


@pytest.mark.parametrize(("args", "says"), [
    (["tiny.en"], "give --to URI (one model) or --into URI"),
    (["tiny.en", "--to", "/x", "--into", "/y"], "give --to URI (one model) or --into URI"),
    (["tiny.en", "base", "--to", "/x"], "--to takes one model, got 2"),
    (["s3://b/m/", "--to", "/x"], "a staged model is already staged"),
])
def test_pull_usage_errors_exit_2_saying_what_to_do(
        env: dict[str, str], args: list[str], says: str) -> None:
    done = whisperfleet("models", "pull", *args, env=env)
    assert done.returncode == 2 and says in done.stderr, done.stderr


def test_a_hub_token_never_appears_in_a_storage_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from whisperfleet_runner.contract import Reason
    from whisperfleet_runner.storage import StorageError

    token = "hf_whisperfleettesttoken0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    assert token not in str(StorageError(Reason.STORAGE_ERROR, f"failed with {token}"))


def test_a_copy_left_by_a_killed_process_is_swept_and_a_restaged_model_recopied(
        env: dict[str, str], bucket: str, counted_s3: tuple[str, S3Reads],
        tiny_model_path: Path, tmp_path: Path) -> None:
    uri = f"s3://{bucket}/models/tiny-en"
    model_store.stage(tiny_model_path, uri, "tiny.en")
    first = Path(model_store.local_model(uri))
    debris = first.with_name(f"{first.name}.partial-4194304")  # a pid that died mid-copy
    debris.mkdir()
    (debris / "model.bin").write_bytes(b"half")
    # Staged again from another folder (new checksums): the next load copies it anew.
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_model_path.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    (other / "vocabulary.txt").write_bytes((other / "vocabulary.txt").read_bytes() + b"\n")
    model_store.stage(other, uri, "tiny.en")
    again = Path(model_store.local_model(uri))
    assert again == first and not debris.exists()
    assert (again / "vocabulary.txt").read_bytes() == (other / "vocabulary.txt").read_bytes()
    sent = counted_s3[1].of(bucket, "models/tiny-en/model.bin")["models/tiny-en/model.bin"]
    assert sent == 2 * (tiny_model_path / "model.bin").stat().st_size
