"""`whisperfleet transcribe` end to end, through the installed console script (subprocess).

Real parts only: the bundled tiny.en model on the CPU (no GPU here, so `--device auto`
falls back to the CPU), fixture audio, and moto's S3 server over HTTP with credentials and
endpoint in the standard AWS environment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.paths import WHISPERFLEET

FORMATS = ("json", "txt", "srt", "vtt")
pytestmark = pytest.mark.slow


def transcribe(*args: str, env: dict[str, str] | None = None,
               model: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--model", str(model)] if model else []
    return subprocess.run([str(WHISPERFLEET), "transcribe", *args, *extra],
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=600)


def _summary(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _complete(out: Path, stem: str) -> bool:
    return all((out / f"{stem}.{fmt}").is_file() for fmt in FORMATS)


def test_local_to_local_mixed_inputs_then_rerun_skips_everything(
    tmp_path: Path, audio_dir: Path, repo: Path, tiny_model_path: Path
) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    inputs = [str(audio_dir / "nested"), str(audio_dir / "with space é.wav"),
              str(repo / "examples" / "audio" / "*.wav")]
    first = transcribe(*inputs, "-o", str(out), "--summary-json", str(summary),
                       model=tiny_model_path)
    assert first.returncode == 0, first.stderr
    stems = ["numbers", "deeper/hello", "with space é", "meeting", "weather", "directions"]
    for stem in stems:
        assert _complete(out, stem), stem
    data = json.loads((out / "deeper" / "hello.json").read_text(encoding="utf-8"))
    assert "morning" in data["text"].lower()  # what nested/deeper/hello.wav says
    assert data["source"] == str(audio_dir / "nested" / "deeper" / "hello.wav")
    first_run = _summary(summary)
    assert first_run["files"]["succeeded"] == 6 and first_run["audio_seconds"] > 0
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}

    again = transcribe(*inputs, "-o", str(out), "--summary-json", str(summary),
                       model=tiny_model_path)
    assert again.returncode == 0, again.stderr
    rerun = _summary(summary)
    assert rerun["files"]["succeeded"] == 0 and rerun["files"]["skipped"] == 6
    assert "Skipped 6 files" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes


def test_folder_with_bad_files_exits_1_writes_the_good_and_names_the_bad(
    tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    result = transcribe(str(audio_dir), "-o", str(out), "--summary-json", str(summary),
                        "--formats", "json,tsv", model=tiny_model_path)
    assert result.returncode == 1, result.stderr
    for stem in ("hello", "silence", "with space é", "nested/numbers", "nested/deeper/hello"):
        assert (out / f"{stem}.json").is_file() and (out / f"{stem}.tsv").is_file(), stem
    assert not (out / "hello.srt").exists()  # only the formats asked for
    failures = {Path(f["uri"]).relative_to(audio_dir).as_posix(): f["reason"]
                for f in _summary(summary)["failures"]}
    assert set(failures) == {"bad/empty.wav", "bad/truncated.mp3", "bad/notes.mp3",
                             "hello.wav"}
    assert "collision" in failures["hello.wav"]  # hello.mp3 owns out/hello.*
    for name, reason in failures.items():
        assert name in result.stdout and reason[:40] in result.stdout.replace("\n", "")
    assert not list(out.glob("bad/*"))


def test_usage_errors_exit_2_with_a_clear_message(tmp_path: Path, audio_dir: Path) -> None:
    missing = transcribe(str(tmp_path / "no-such-folder"), "-o", str(tmp_path / "out"))
    assert missing.returncode == 2 and "no-such-folder" in missing.stderr
    formats = transcribe(str(audio_dir), "-o", str(tmp_path / "out"), "--formats", "docx")
    assert formats.returncode == 2 and "docx" in formats.stderr
    model = transcribe(str(audio_dir / "hello.wav"), "-o", str(tmp_path / "out"),
                       "--model", str(tmp_path / "no-model"))
    assert model.returncode == 2 and "cannot load the model" in model.stdout + model.stderr
    # Said once as the worker's error, not repeated for every file it could not attempt.
    assert "no worker could run it" in model.stdout


def _upload(client: Any, bucket: str, mapping: dict[str, Path]) -> None:
    for key, path in mapping.items():
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


def _keys(client: Any, bucket: str, prefix: str) -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_s3_to_s3_with_hostile_keys(
    s3_env: dict[str, str], s3_bucket: str, audio_dir: Path, tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    hello, numbers = audio_dir / "hello.wav", audio_dir / "nested" / "numbers.wav"
    _upload(client, s3_bucket, {
        "in/talks/hello.wav": hello, "in/a//b.wav": numbers, "in/x/./y.wav": hello,
        "in/evil/../../x.wav": hello, "in/東京/会議 1.wav": numbers,
    })
    summary = tmp_path / "summary.json"
    result = transcribe(f"s3://{s3_bucket}/in/", "-o", f"s3://{s3_bucket}/out/",
                        "--summary-json", str(summary), env=s3_env, model=tiny_model_path)
    assert result.returncode == 1, result.stderr
    written = _keys(client, s3_bucket, "out/")
    for stem in ("talks/hello", "a/b", "x/y", "東京/会議 1"):
        assert {f"out/{stem}.{fmt}" for fmt in FORMATS} <= written, stem
    assert not any("x.json" in k for k in _keys(client, s3_bucket, ""))  # evil wrote nothing
    [failure] = _summary(summary)["failures"]
    assert failure["uri"].endswith("evil/../../x.wav") and "climb" in failure["reason"]
    text = client.get_object(Bucket=s3_bucket, Key="out/talks/hello.txt")["Body"].read()
    assert b"hello" in text.lower()
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


def test_s3_to_local_never_writes_outside_the_folder(
    s3_env: dict[str, str], s3_bucket: str, audio_dir: Path, tiny_model_path: Path,
    tmp_path: Path,
) -> None:
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    _upload(client, s3_bucket, {"rec/one.wav": audio_dir / "hello.wav",
                                "rec/evil/../../../escape.wav": audio_dir / "hello.wav",
                                "single.mp3": audio_dir / "hello.mp3"})
    out = tmp_path / "deep" / "out"
    result = transcribe(f"s3://{s3_bucket}/rec/", f"s3://{s3_bucket}/single.mp3", "-o", str(out),
                        env=s3_env, model=tiny_model_path)
    assert result.returncode == 1, result.stderr
    assert _complete(out, "one") and _complete(out, "single")
    assert "escape.wav" in result.stdout
    outside = [p for p in tmp_path.rglob("escape*")]
    assert outside == []


def test_missing_bucket_is_a_usage_error(
    s3_env: dict[str, str], audio_dir: Path, tiny_model_path: Path
) -> None:
    result = transcribe(str(audio_dir / "hello.wav"), "-o", "s3://no-such-bucket-wf9/out/",
                        env=s3_env, model=tiny_model_path)
    assert result.returncode == 2
    assert "no-such-bucket-wf9" in result.stderr and "does not exist" in result.stderr


def test_ctrl_c_stops_cleanly_and_a_rerun_finishes(
    tmp_path: Path, audio_dir: Path, tiny_model_path: Path
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i in range(60):
        shutil.copy(audio_dir / "nested" / "numbers.wav", src / f"clip{i:02d}.wav")
    out, summary = tmp_path / "out", tmp_path / "summary.json"
    args = [str(WHISPERFLEET), "transcribe", str(src), "-o", str(out), "--model",
            str(tiny_model_path), "--summary-json", str(summary), "--quiet", "--batch-size", "1",
            "--no-vad"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("*.json")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no output appeared"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    interrupted = _summary(summary)
    assert interrupted["interrupted"] and interrupted["files"]["not_attempted"] > 0
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # no partial outputs
    done = sorted(p.stem for p in out.glob("*.json"))
    assert all(_complete(out, stem) for stem in done)  # complete sets only
    assert len(done) == interrupted["files"]["succeeded"]

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    data = _summary(summary)
    assert data["files"]["skipped"] == len(done)
    assert data["files"]["succeeded"] == 60 - len(done)
    assert f"{len(done)} skipped" in rerun.stderr
    assert all(_complete(out, f"clip{i:02d}") for i in range(60))
