"""The planner against a real S3 API (moto over HTTP): manifests and the failures users meet."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import contract
from whisperfleet_runner.contract import OutputOptions, PlanReport, WorkOrder
from whisperfleet_runner.pod.planner import plan, read_manifest


def order_for(bucket: str, **kwargs: object) -> WorkOrder:
    return WorkOrder(job_uid="uid-plan", input_uri=f"s3://{bucket}/in/",
                     output=OutputOptions(uri=f"s3://{bucket}/out/"), **kwargs)  # type: ignore[arg-type]


def put(bucket: str, key: str, size: int) -> None:
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).put_object(
        Bucket=bucket, Key=key, Body=b"\0" * size
    )


def run_plan(order: WorkOrder, tmp_path: Path, env: dict[str, str], *args: str
             ) -> tuple[subprocess.CompletedProcess, PlanReport]:
    env = {**env, contract.ENV_WORK_ORDER: order.to_json()}
    log = tmp_path / "plan.log"
    result = subprocess.run([WHISPERFLEET, "plan", "--termination-log", str(log), *args],
                            capture_output=True, text=True, timeout=120, env=env)
    return result, PlanReport.from_json(log.read_text())


def test_plan_balances_and_publishes_the_manifest(s3_env: dict[str, str], s3_bucket: str,
                                                  tmp_path: Path) -> None:
    sizes = {"in/big.wav": 9000, "in/a/one.mp3": 3000, "in/a/two.mp3": 3000,
             "in/b/three.flac": 3000, "in/a//odd.wav": 100, "in/readme.txt": 50,
             "in/.whisperfleet/old/manifest.jsonl": 10}
    for key, size in sizes.items():
        put(s3_bucket, key, size)
    order = order_for(s3_bucket)
    result, report = run_plan(order, tmp_path, s3_env, "--workers", "1")
    assert result.returncode == 0, result.stderr
    # readme.txt fails the default globs; state folders are never inputs.
    assert (report.files, report.bytes, report.shards) == (5, 18100, 4)
    assert report.manifest_uri == f"s3://{s3_bucket}/out/.whisperfleet/uid-plan/manifest.jsonl"
    entries = read_manifest(report.manifest_uri)
    assert {e.key for e in entries} == {"big.wav", "a/one.mp3", "a/two.mp3", "b/three.flac",
                                        "a//odd.wav"}
    shard_of = {e.key: e.shard for e in entries}
    loads = [sum(e.size for e in entries if e.shard == s) for s in range(4)]
    assert sorted(loads) == [3000, 3000, 3100, 9000]  # the big file alone, the rest spread
    assert shard_of["a//odd.wav"] != shard_of["big.wav"]
    assert all(e.uri == f"s3://{s3_bucket}/in/{e.key}" for e in entries)


def test_shards_never_exceed_files_and_respect_the_order(s3_env: dict[str, str],
                                                         s3_bucket: str) -> None:
    for i in range(3):
        put(s3_bucket, f"in/{i}.wav", 100 + i)
    assert plan(order_for(s3_bucket), workers=10).shards == 3
    assert plan(order_for(s3_bucket, shards=2), workers=10).shards == 2


def test_missing_bucket(s3_env: dict[str, str], tmp_path: Path) -> None:
    order = order_for("wf-no-such-bucket-here")
    result, report = run_plan(order, tmp_path, s3_env)
    assert result.returncode == contract.EXIT_STORAGE
    assert report.error_reason == "BucketNotFound"
    assert "wf-no-such-bucket-here" in report.error_message
    assert report.files == 0


def test_no_matching_files_names_uri_and_globs(s3_env: dict[str, str], s3_bucket: str,
                                               tmp_path: Path) -> None:
    put(s3_bucket, "in/talk.wav", 10)
    order = order_for(s3_bucket, include=("*.flac", "*.opus"))
    result, report = run_plan(order, tmp_path, s3_env)
    assert result.returncode == contract.EXIT_USAGE
    assert report.error_reason == "NoMatchingFiles"
    assert f"s3://{s3_bucket}/in/" in report.error_message
    assert "*.flac" in report.error_message and "*.opus" in report.error_message
    keys = boto3.client("s3").list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [k["Key"] for k in keys] == ["in/talk.wav"]  # no manifest for an empty plan


@pytest.fixture
def moto_auth(moto_endpoint: str) -> Iterator[None]:
    """Make moto check credentials (it accepts any by default); restored afterwards."""

    def set_count(value: str) -> None:
        request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset-auth",
                                         data=value.encode(), method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["status"] == "ok"

    set_count("0")
    try:
        yield
    finally:
        set_count("inf")


def test_wrong_credentials_never_leak_the_secret(s3_env: dict[str, str], s3_bucket: str,
                                                 tmp_path: Path, moto_auth: None) -> None:
    secret = "wJalrXUtnFEMI-wrong-secret-MUST-NOT-APPEAR"
    env = {**s3_env, "AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": secret}
    result, report = run_plan(order_for(s3_bucket), tmp_path, env)
    assert result.returncode == contract.EXIT_STORAGE
    assert report.error_reason in ("InvalidCredentials", "AccessDenied"), report
    assert f"s3://{s3_bucket}/in/" in report.error_message
    for text in (result.stdout, result.stderr, (tmp_path / "plan.log").read_text()):
        assert secret not in text
        assert s3_env["AWS_SECRET_ACCESS_KEY"] not in text
