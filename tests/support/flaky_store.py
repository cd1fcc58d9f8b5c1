"""Helpers of the flaky-storage tests: a bucket of short inputs on moto, what a run without
faults wrote there, runs of the installed CLI against it, and a store made to vanish."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import srt
import webvtt

from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.fault_proxy import FaultProxy, start_proxy
from tests.support.paths import AUDIO, REPO, WHISPERFLEET
from whisperfleet_runner import contract

EXAMPLES = REPO / "examples" / "audio"
_CLIPS = {"hello.wav": AUDIO / "hello.wav", "nested/numbers.wav": AUDIO / "nested/numbers.wav",
          "nested/deeper/hello.wav": AUDIO / "nested/deeper/hello.wav",
          "with space é.wav": AUDIO / "with space é.wav", "meeting.wav": EXAMPLES / "meeting.wav",
          "weather.wav": EXAMPLES / "weather.wav", "directions.wav": EXAMPLES / "directions.wav"}
# 16 short files: two sets of seven clips, silence and an mp3 (relative key -> fixture).
SOURCES = {**{f"{s}/{k}": p for s in ("a", "b") for k, p in _CLIPS.items()},
           "c/silence.wav": AUDIO / "silence.wav", "c/hello.mp3": AUDIO / "hello.mp3"}
FORMATS = contract.DEFAULT_FORMATS  # json, txt, srt, vtt
# Every kind of fault, often enough to meet each of them; stalls cost a read timeout each.
FAULTS = {"slowdown": 0.1, "internal": 0.05, "cut": 0.15, "stall": 0.3, "limit": {"stall": 2}}
T = TypeVar("T")


def stem(key: str) -> str:
    return key.rsplit(".", 1)[0]


@dataclass
class Store:
    """moto with the inputs under in/, and what a run without faults wrote to out-clean/."""

    endpoint: str  # moto itself; runs reach it through a proxy
    bucket: str
    env: dict[str, str]
    model: Path
    clean: dict[str, bytes]

    @property
    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=S3_ACCESS_KEY,
                            aws_secret_access_key=S3_SECRET_KEY)

    def objects(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Outputs under prefix/ (relative key -> listing entry), not the state folder."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{prefix}/")
        found = {o["Key"][len(prefix) + 1:]: o for page in pages for o in page.get("Contents", [])}
        return {k: o for k, o in found.items() if not k.startswith(contract.STATE_DIR)}

    def outputs(self, prefix: str) -> dict[str, bytes]:
        client = self.client
        return {key: client.get_object(Bucket=self.bucket, Key=f"{prefix}/{key}")["Body"].read()
                for key in self.objects(prefix)}

    def done(self, prefix: str) -> set[str]:
        """Stems of the inputs whose json (published last, the mark of a done file) is in."""
        return {stem(k) for k in self.objects(prefix) if k.endswith(".json")}

    def stamps(self, prefix: str) -> dict[str, tuple[str, Any]]:
        """Relative key -> (ETag, LastModified): a rewrite changes it."""
        return {k: (o["ETag"], o["LastModified"]) for k, o in self.objects(prefix).items()}

    def transcribe(self, endpoint: str, out: str, summary: Path
                   ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.transcribe_args(out, summary), capture_output=True,
                              text=True, timeout=540,
                              env={**self.env, "AWS_ENDPOINT_URL": endpoint})

    def transcribe_args(self, out: str, summary: Path) -> list[str]:
        # --no-pack: each file alone, so files finish one by one (a store can vanish between
        # two) and a transcript does not depend on which files shared its window.
        return [str(WHISPERFLEET), "transcribe", f"s3://{self.bucket}/in/", "-o",
                f"s3://{self.bucket}/{out}/", "--model", str(self.model), "--device", "cpu",
                "--no-pack", "--quiet", "--summary-json", str(summary)]


def make_store(endpoint: str, model: Path, folder: Path) -> Store:
    """A fresh bucket on moto with SOURCES under in/, and a run without faults to
    out-clean/ (its summary in `folder`), checked whole."""
    bucket = f"wf-flaky-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
           "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "HF_HUB_OFFLINE": "1"}
    for name in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_PROFILE"):  # our defaults apply
        env.pop(name, None)
    made = Store(endpoint, bucket, env, model, {})
    client = made.client
    client.create_bucket(Bucket=bucket)
    for key, path in SOURCES.items():
        client.put_object(Bucket=bucket, Key=f"in/{key}", Body=path.read_bytes())
    clean = made.transcribe(endpoint, "out-clean", folder / "summary.json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads((folder / "summary.json").read_text())["files"]["succeeded"] == len(
        SOURCES)
    made.clean = made.outputs("out-clean")
    assert set(made.clean) == {f"{stem(k)}.{f}" for k in SOURCES for f in FORMATS}
    for key in SOURCES:  # the reference the other runs' outputs are compared with
        assert_complete(made.clean, key)
    return made


def assert_complete(outputs: dict[str, bytes], key: str) -> None:
    """One input's outputs are all there and whole: each parses, and they agree."""
    data = json.loads(outputs[f"{stem(key)}.json"])
    spoken = [s["text"].strip() for s in data["segments"] if s["text"].strip()]
    assert data["source"].endswith(f"/in/{key}") and data["text"] == " ".join(spoken), key
    txt = outputs[f"{stem(key)}.txt"].decode()
    assert [line.strip() for line in txt.splitlines()] == spoken, key
    assert [c.content.strip() for c in srt.parse(outputs[f"{stem(key)}.srt"].decode())] \
        == spoken, key
    vtt = webvtt.from_string(outputs[f"{stem(key)}.vtt"].decode())
    assert [c.text.strip() for c in vtt.captions] == spoken, key
    if "silence" not in key:
        assert spoken, key  # speech was heard: not an empty transcript standing in for one


def wait_for(condition: Callable[[], T | None], timeout: float,
             process: subprocess.Popen[str] | None = None) -> T:
    """Poll `condition` until it returns a value; fail if the process ends or time is up."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before the condition held")
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.05)


def lose_store_midway(store: Store, args: list[str], env: dict[str, str], out: str,
                      log: Path) -> tuple[int, set[str], float, int]:
    """Run `args` with the store behind a proxy, and stop the proxy (the store vanishes:
    connections are refused) once 2 files of `out` are done. Returns the exit code, the
    files done by then, the seconds the run went on after, and the store's lost port."""
    proxy = start_proxy(store.endpoint)
    with log.open("w") as printed:
        run = subprocess.Popen(args, env={**env, "AWS_ENDPOINT_URL": proxy.endpoint},
                               stdout=printed, stderr=subprocess.STDOUT, text=True)
        try:
            done = wait_for(lambda: d if len(d := store.done(out)) >= 2 else None,
                            timeout=300, process=run)
            proxy.stop()
            stopped = time.monotonic()
            run.wait(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
            proxy.stop()
    return run.returncode, done, time.monotonic() - stopped, proxy.port


def settled(proxy: FaultProxy) -> Counter[str]:
    """The proxy's counts once every stall it began has ended (the client hanging up is
    seen by the proxy a moment after the client moved on)."""
    def ended() -> Counter[str] | None:
        counts = proxy.counts()
        gone = counts["stall ended by client"] + counts["stall ended by cap"]
        return counts if gone == counts["stall"] else None

    return wait_for(ended, timeout=60)
