"""`-v` turns on the storage client's debug log, which prints signed request headers: the
access key id and the signature must not reach the terminal (or a pod's log)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.paths import WHISPERFLEET


@pytest.mark.slow
def test_verbose_s3_run_logs_requests_without_credentials(
        s3_env: dict[str, str], s3_bucket: str, audio_dir: Path, tiny_model_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    s3.upload_file(str(audio_dir / "hello.wav"), s3_bucket, "in/hello.wav")
    run = subprocess.run(
        [str(WHISPERFLEET), "transcribe", f"s3://{s3_bucket}/in/", "-o",
         f"s3://{s3_bucket}/out/", "--model", str(tiny_model_path), "--device", "cpu", "-v"],
        env=s3_env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    said = run.stdout + run.stderr
    # The debug log is there (botocore's own lines, with their masked headers) ...
    assert "Credential=***" in said and "Signature=***" in said
    # ... and no credential.
    for secret in (S3_ACCESS_KEY, S3_SECRET_KEY):
        assert secret not in said
    assert not re.search(r"Signature=[0-9a-f]{16}", said)
