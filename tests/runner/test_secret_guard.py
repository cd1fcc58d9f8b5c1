"""The suite's secret guard catches a credential on every channel it watches.

Deliberately leaking tests run in an inner pytest (pytester) with the guard's plugin: each
must fail there, naming the channel and the credential but never showing the value, while
tests that leak nothing — or only pass a wrong key in as their own input — pass. (Inner
tests log only keys they register: their log records also reach this test's log capture.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import secret_sources, secrets_guard
from tests.support.credentials import S3_SECRET_KEY

pytest_plugins = ["pytester"]

OWN = "own-Secret/for+the-guard-test-0123"  # registered by the inner tests
CONFTEST = f"""
import pytest
from tests.support import secret_guard_plugin, secrets_guard

OWN = {OWN!r}

def pytest_configure(config):  # as tests/conftest.py does
    config.pluginmanager.register(secret_guard_plugin, "whisperfleet-secret-guard")

@pytest.fixture
def own():
    secrets_guard.register(OWN, "the test's own key")
    return OWN

@pytest.fixture
def noisy_teardown(own):
    yield
    print("closing with", own)
"""

LEAKY = """
import logging, os, subprocess, sys, urllib.parse, uuid
import boto3
from tests.support.credentials import S3_SECRET_KEY

def test_prints_a_known_key():
    print("connecting with", S3_SECRET_KEY)

def test_logs_at_info_then_clears_caplog(caplog, own):
    caplog.set_level(logging.INFO)
    logging.getLogger("leaky").info("token=%s", urllib.parse.quote(own, safe=""))
    caplog.clear()

def test_prints(own):
    print(own)

def test_writes_stderr_fd(own):
    os.write(2, own.encode())

def test_output_read_by_capfd(capfd, own):
    os.write(1, own.encode())
    assert own in capfd.readouterr().out

def test_output_read_by_capsys(capsys, own):
    print(own)
    assert own in capsys.readouterr().out

def test_subprocess_output(own):
    run = subprocess.run([sys.executable, "-c", "import sys; print(sys.argv[1])", own],
                         capture_output=True, text=True, check=True)
    assert run.stdout.strip() == own

def test_exception_text(own):
    raise RuntimeError(f"cannot sign with {own}")

def test_written_file(tmp_path, own):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.json").write_text('{"key": "%s"}' % own)

def test_s3_object(own):
    s3 = boto3.client("s3")
    bucket = f"guard-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="out/a.txt", Body=b"say " + own.encode())

def test_gcs_object(own):
    from tests.support.object_stores import gcs_files, made
    files, bucket = gcs_files(os.environ["STORAGE_EMULATOR_HOST"]), f"guard-{uuid.uuid4().hex[:12]}"
    files.mkdir(bucket)
    made(f"gs://{bucket}", files)  # as the gcs_bucket and azure_container fixtures do
    files.pipe_file(f"{bucket}/out/a.txt", b"say " + own.encode())

def test_teardown_output(noisy_teardown):
    pass
"""

HARMLESS = """
import logging, os, subprocess, sys
from tests.support.credentials import S3_SECRET_KEY

WRONG = "Wr0ngSecret/OnlyAnInputHere+123456"

def test_leaks_nothing(tmp_path, own, capfd):
    logging.getLogger("calm").warning("connecting with the key in AWS_SECRET_ACCESS_KEY")
    (tmp_path / "a.txt").write_text("hello")
    subprocess.run([sys.executable, "-c", "print('hi')"], capture_output=True, check=True)
    assert capfd.readouterr().out == ""

def test_a_wrong_key_is_only_an_input(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", WRONG)
    print("tried", os.environ["AWS_SECRET_ACCESS_KEY"])

def test_the_key_in_its_own_environment_is_no_leak(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    assert subprocess.run([sys.executable, "-c", "print('ok')"],
                          capture_output=True, text=True).stdout == "ok\\n"
"""

# inner test -> what its failure must name
CAUGHT = {
    "test_prints_a_known_key": ("S3_SECRET_KEY", "captured stdout call"),
    "test_logs_at_info_then_clears_caplog": ("the test's own key", "captured log call"),
    "test_prints": ("the test's own key", "captured stdout call"),
    "test_writes_stderr_fd": ("the test's own key", "captured stderr call"),
    "test_output_read_by_capfd": ("the test's own key", "output read through capfd"),
    "test_output_read_by_capsys": ("the test's own key", "output read through capsys"),
    "test_subprocess_output": ("the test's own key", "stdout of subprocess"),
    "test_exception_text": ("the test's own key", "the failure report (call)"),
    "test_written_file": ("the test's own key", "file out/a.json"),
    "test_s3_object": ("the test's own key", "s3://guard-"),
    "test_gcs_object": ("the test's own key", "gs://guard-"),
    "test_teardown_output": ("the test's own key", "captured stdout teardown"),
}


def _outcomes(pytester: pytest.Pytester) -> dict[str, tuple[str, str]]:
    """inner test name -> (outcome, failure text); a failure in any phase wins."""
    recorder = pytester.inline_run("-p", "no:cacheprovider", "-p", "no:randomly")
    found: dict[str, tuple[str, str]] = {}
    for report in recorder.getreports("pytest_runtest_logreport"):
        name = report.nodeid.rsplit("::", 1)[-1]
        if report.failed:
            found[name] = ("failed", str(report.longrepr))
        elif report.when == "call" and name not in found:
            found[name] = (report.outcome, "")
    return found


def test_every_channel_is_caught_and_the_value_never_shown(
    pytester: pytest.Pytester, s3_env: dict[str, str], gcs_env: dict[str, str]
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_leaky=LEAKY)
    outcomes = _outcomes(pytester)
    assert set(outcomes) == set(CAUGHT)
    for name, (label, channel) in CAUGHT.items():
        outcome, text = outcomes[name]
        assert outcome == "failed", name
        assert "secret guard:" in text and f"{label} in {channel}" in text, (name, text)
        assert OWN not in text and S3_SECRET_KEY not in text, name
    # The failure itself stays readable, with the value masked.
    assert "cannot sign with <the test's own key>" in outcomes["test_exception_text"][1]


def test_tests_that_leak_nothing_pass(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_harmless=HARMLESS)
    outcomes = _outcomes(pytester)
    assert outcomes == dict.fromkeys(["test_leaks_nothing", "test_a_wrong_key_is_only_an_input",
                                      "test_the_key_in_its_own_environment_is_no_leak"],
                                     ("passed", ""))


def test_a_leak_shown_with_a_failure_is_masked_in_its_captured_output(
    pytester: pytest.Pytester
) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_shown="""
def test_prints_then_fails(own):
    print("about to use", own)
    assert False, "the real failure"
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "the real failure" in text and "about to use <the test's own key>" in text
    assert OWN not in text


def test_short_values_cannot_be_registered() -> None:
    # "eu-1" or "late" would turn up by chance anywhere.
    with pytest.raises(ValueError, match="at least 8 characters"):
        secrets_guard.register("eu-1", "a region")
    secrets_guard.register("a-long-enough-value", "fine")


def test_a_value_cut_by_a_read_chunk_is_found(tmp_path: Path) -> None:
    secrets = secrets_guard.Secrets({"key": OWN})
    root = tmp_path
    data = b"x" * (secret_sources.CHUNK - 5) + OWN.encode() + b"y" * 10
    (root / "big.bin").write_bytes(data)
    (root / "clean.bin").write_bytes(b"x" * 100)
    leaks = secret_sources.file_leaks(root, secrets)
    assert [(leak.channel, leak.label) for leak in leaks] == [("file big.bin", "key")]
