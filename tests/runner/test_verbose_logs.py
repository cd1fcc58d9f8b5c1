"""`-v` turns on the storage client's debug log, which prints signed request headers: the
access key id and the signature must not reach the terminal (or a pod's log)."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import boto3
import pytest

from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.paths import WHISPERFLEET
from whisperfleet_runner.storage.errors import ScrubbingFilter


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


TOKEN = "IQoJb3JpZ2luX2VjE//////////wEaCXVzLWVhc3QtMSJH+abc="  # base64: `/` and `+` inside


@pytest.mark.parametrize("line", [
    f"{{'X-Amz-Security-Token': '{TOKEN}', 'Host': 's3'}}",  # request headers
    f"x-amz-security-token:{TOKEN}\nhost:s3",  # the canonical request
    f"https://b.s3.amazonaws.com/k?X-Amz-Security-Token={TOKEN}&X-Amz-Date=1",  # presigned
    "Signature:\n" + "ab" * 32,  # the signature botocore logs on its own
    "Credential=AKIAEXAMPLE12345/20261201/us-east-1/s3/aws4_request, Signature=" + "cd" * 32,
])
def test_debug_lines_with_signed_headers_are_masked(line: str) -> None:
    record = logging.LogRecord("botocore", logging.DEBUG, __file__, 1, "%s", (line,), None)
    assert ScrubbingFilter().filter(record)
    said = record.getMessage()
    assert "***" in said
    for secret in (TOKEN, "ab" * 32, "cd" * 32, "AKIAEXAMPLE12345"):
        assert secret not in said
