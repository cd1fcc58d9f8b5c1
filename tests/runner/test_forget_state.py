"""`whisperfleet forget-state` (the TTL's cleanup pod) against a real S3 API (moto over HTTP)
and a local folder: everything under <output>/.whisperfleet/<job-uid>/ goes, nothing else."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import contract
from whisperfleet_runner.contract import OutputOptions, WorkOrder
from whisperfleet_runner.pod.forget import forget_state

UID = "0b7e6c8a-1111-4e2f-9d3a-5c6b7a8f9e01"
# The job's state, and what lies next to it and must stay: transcripts, input, other jobs'
# state, a namesake whose uid starts like ours, an object named like the folder itself.
STATE = [f"out/.whisperfleet/{UID}/manifest.jsonl", f"out/.whisperfleet/{UID}/ledger/0.jsonl",
         f"out/.whisperfleet/{UID}/ledger/1.jsonl"]
KEEP = ["out/talk.json", "out/talk.txt", "out/sub/talk.srt", "in/talk.wav",
        "out/.whisperfleet/other-uid/manifest.jsonl", f"out/.whisperfleet/{UID}-old/manifest.jsonl",
        f"out/.whisperfleet/{UID}.txt", "out/.whisperfleet/preflight/write-check"]


def run(order: WorkOrder, tmp_path: Path, env: dict[str, str]) -> tuple[int, dict]:
    log = tmp_path / "forget.log"
    result = subprocess.run([WHISPERFLEET, "forget-state", "--termination-log", str(log)],
                            capture_output=True, text=True, timeout=120,
                            env={**env, contract.ENV_WORK_ORDER: order.to_json()})
    return result.returncode, json.loads(log.read_text())


def keys(bucket: str) -> set[str]:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_forget_state_removes_only_the_jobs_state_on_s3(s3_env: dict[str, str], s3_bucket: str,
                                                        tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for key in STATE + KEEP:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    order = WorkOrder(job_uid=UID, input_uri=f"s3://{s3_bucket}/in/",
                      output=OutputOptions(uri=f"s3://{s3_bucket}/out/"))
    code, report = run(order, tmp_path, s3_env)
    assert code == 0 and report["removed"] == len(STATE), report
    assert report["state"] == f"s3://{s3_bucket}/out/.whisperfleet/{UID}/"
    assert keys(s3_bucket) == set(KEEP)
    # Again: nothing left to remove, nothing else touched.
    assert run(order, tmp_path, s3_env) == (0, {"removed": 0, "state": report["state"]})
    assert keys(s3_bucket) == set(KEEP)


def test_forget_state_in_a_folder_leaves_what_a_symlink_points_at(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for key in STATE + KEEP:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text("x")
    (root / f"out/.whisperfleet/{UID}/link").symlink_to(root / "out")
    order = WorkOrder(job_uid=UID, input_uri=f"file://{root}/in/",
                      output=OutputOptions(uri=f"file://{root}/out/"))
    assert forget_state(order) == len(STATE)
    assert not (root / f"out/.whisperfleet/{UID}").exists()
    left = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert left == set(KEEP)


@pytest.mark.parametrize("uid", ["", "..", "a/b", "../x"])
def test_a_uid_that_is_no_uid_removes_nothing(tmp_path: Path, uid: str) -> None:
    (tmp_path / "out/.whisperfleet").mkdir(parents=True)
    (tmp_path / "out/talk.json").write_text("x")
    order = WorkOrder(job_uid=uid, input_uri=f"file://{tmp_path}/in/",
                      output=OutputOptions(uri=f"file://{tmp_path}/out/"))
    with pytest.raises(ValueError, match="is not a Kubernetes uid"):
        forget_state(order)
    assert (tmp_path / "out/talk.json").exists()
