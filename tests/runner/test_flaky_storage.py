"""Flaky storage: `whisperfleet transcribe` and shard pods through a fault-injecting proxy
in front of moto (tests/support/fault_proxy.py), and a store that disappears mid-run.

Real parts only: the installed CLI (subprocesses), tiny.en on the CPU, moto's S3 over HTTP,
the proxy as a process of its own. The proxy counts what it injected, so every test shows
that the faults really happened. The retries are botocore's (storage.fs): these tests prove
the settings reach it and that they carry a run through.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.fault_proxy import KINDS, FaultProxy, Faults, start_proxy
from tests.support.flaky_store import (
    FAULTS,
    FORMATS,
    SOURCES,
    Store,
    lose_store_midway,
    make_store,
    settled,
    stem,
)
from tests.support.paths import WHISPERFLEET
from whisperfleet_runner import contract
from whisperfleet_runner.contract import OutputOptions, PlanReport, Reason, ShardReport, WorkOrder
from whisperfleet_runner.pipeline.ledger import SUCCEEDED, merge, read_ledger
from whisperfleet_runner.pod.manifest import read_manifest
from whisperfleet_runner.storage import StorageError, fs, iter_lines


@pytest.fixture(scope="module")
def store(moto_endpoint: str, tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory
          ) -> Store:
    return make_store(moto_endpoint, tiny_model_path, tmp_path_factory.mktemp("clean"))


# --- the retry settings reach botocore -------------------------------------------------------
@pytest.fixture
def s3fs_of(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
            ) -> Iterator[Callable[[], Any]]:
    """The S3 filesystem storage.fs builds for the current environment, and its client."""
    for name in ("AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))

    def build() -> Any:
        filesystem, _ = fs.filesystem("s3://bucket/key")
        return filesystem

    yield build


def test_our_retry_settings_reach_botocore_unless_the_user_set_theirs(
    s3fs_of: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ours = s3fs_of()
    config_ = ours.s3.meta.config  # the client's settings, after botocore resolved them
    assert config_.retries == {"mode": fs.RETRY_MODE, "total_max_attempts": fs.MAX_ATTEMPTS}
    assert (config_.connect_timeout, config_.read_timeout) == (fs.CONNECT_TIMEOUT,
                                                               fs.READ_TIMEOUT)
    assert ours.retries == fs.S3FS_TRIES

    # botocore's own precedence: environment, then the config profile; ours only if neither.
    profile = tmp_path / "aws-config"
    profile.write_text("[default]\nretry_mode = legacy\nmax_attempts = 4\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(profile))
    assert s3fs_of().s3.meta.config.retries == {"mode": "legacy", "total_max_attempts": 4}
    monkeypatch.setenv("AWS_RETRY_MODE", "adaptive")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    assert s3fs_of().s3.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    monkeypatch.delenv("AWS_RETRY_MODE")
    assert s3fs_of().s3.meta.config.retries == {"mode": "legacy", "total_max_attempts": 3}


@pytest.mark.parametrize(("name", "value"), [("AWS_MAX_ATTEMPTS", "three"),
                                             ("AWS_MAX_ATTEMPTS", "0"),
                                             ("AWS_RETRY_MODE", "fast")])
def test_unusable_retry_settings_are_named(s3fs_of: Callable[[], Any],
                                           monkeypatch: pytest.MonkeyPatch, name: str,
                                           value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(StorageError) as info:
        s3fs_of()
    assert name in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize(("kind", "attempts"), [("internal", 3), ("slowdown", 2)])
def test_attempts_the_store_sees(s3fs_of: Callable[[], Any], s3_bucket: str,
                                 monkeypatch: pytest.MonkeyPatch, kind: str,
                                 attempts: int) -> None:
    """What AWS_MAX_ATTEMPTS means on the wire: botocore tries each request that often, and
    s3fs repeats a whole call once more after a throttle (not after a 500)."""
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="a.txt", Body=b"x")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", str(attempts))
    with start_proxy(os.environ["AWS_ENDPOINT_URL"],
                     Faults(**{kind: 1.0}, max_in_a_row=1 << 30)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises(StorageError) as info:
            list(iter_lines(f"s3://{s3_bucket}/a.txt"))  # one ranged GET, no HEAD first
        counts = proxy.counts()
    repeats = fs.S3FS_TRIES if kind == "slowdown" else 1
    assert counts[kind] == attempts * repeats, counts
    assert sum(n for what, n in counts.items() if what.startswith("forwarded")) == 0
    assert info.value.reason == Reason.STORAGE_ERROR
    code = "SlowDown" if kind == "slowdown" else "InternalError"
    assert code in str(info.value) and "AWS_MAX_ATTEMPTS" in str(info.value)


# --- whole runs ------------------------------------------------------------------------------
@pytest.mark.slow
def test_transcribe_rides_out_injected_faults_and_a_rerun_does_nothing(
    store: Store, tmp_path: Path
) -> None:
    with start_proxy(store.endpoint, Faults(seed=7, **FAULTS)) as proxy:
        started = time.monotonic()
        first = store.transcribe(proxy.endpoint, "out-faults", tmp_path / "first.json")
        seconds = time.monotonic() - started
        counts = settled(proxy)
        assert first.returncode == 0, first.stdout + first.stderr
        assert json.loads((tmp_path / "first.json").read_text())["files"] == {
            "total": len(SOURCES), "succeeded": len(SOURCES), "partial": 0, "failed": 0,
            "skipped": 0, "not_attempted": 0}
        assert all(counts[kind] > 0 for kind in KINDS), counts  # each fault really happened
        # Stalls ended by the client's read timeout, not by the proxy letting go.
        assert counts["stall ended by client"] == counts["stall"], counts
        outputs = store.outputs("out-faults")
        # Nothing half-written, nothing missing, nothing extra: byte for byte what the run
        # without faults wrote.
        assert outputs == store.clean
        stamps = store.stamps("out-faults")

        again = store.transcribe(proxy.endpoint, "out-faults", tmp_path / "again.json")
        assert again.returncode == 0, again.stdout + again.stderr
        files = json.loads((tmp_path / "again.json").read_text())["files"]
        assert (files["skipped"], files["succeeded"], files["failed"]) == (len(SOURCES), 0, 0)
        assert store.stamps("out-faults") == stamps  # not one output rewritten
        total = proxy.counts()
    print(f"\nfaults injected in the run: {dict((k, counts[k]) for k in KINDS)}; "
          f"run {seconds:.1f} s; with the re-run: {dict((k, total[k]) for k in KINDS)}")


@pytest.mark.slow
def test_a_store_that_disappears_mid_run_then_comes_back(store: Store, tmp_path: Path) -> None:
    out, summary = "out-lost", tmp_path / "lost.json"
    # Few attempts: against a store that is gone, the default 8 only add waiting.
    code, done_before, ended, port = lose_store_midway(
        store, store.transcribe_args(out, summary), {**store.env, "AWS_MAX_ATTEMPTS": "3"},
        out, tmp_path / "lost.log")
    printed = (tmp_path / "lost.log").read_text()
    assert code == contract.EXIT_STORAGE == Reason.UNREACHABLE.exit_code, printed

    # The summary lists every file not done, each with a storage reason.
    data = json.loads(summary.read_text())
    failed = {f["uri"].split("/in/", 1)[1] for f in data["failures"]}
    reported = {stem(k) for k in SOURCES if k not in failed}  # done, as the run knows it
    assert data["files"]["total"] == len(SOURCES) and failed <= set(SOURCES)
    assert (data["files"]["succeeded"], data["files"]["failed"]) == (len(reported), len(failed))
    assert failed and all(Reason(f["code"]).exit_code == contract.EXIT_STORAGE
                          for f in data["failures"])
    assert any(w["error_reason"] == Reason.UNREACHABLE.value for w in data["workers"])
    assert "re-run" in printed
    # What is in the store is whole: each object byte for byte the clean run's, and each
    # file done before has all its outputs. A file may be done without the run knowing: its
    # last PUT landed as the store vanished, before the answer came back.
    outputs, done = store.outputs(out), store.done(out)
    assert done_before | reported <= done and len(done) < len(SOURCES)
    assert all(body == store.clean[key] for key, body in outputs.items())
    assert {f"{s}.{f}" for s in done for f in FORMATS} <= set(outputs)

    # The store is back at the same address: a later run does the rest, and only the rest.
    stamps = store.stamps(out)
    with FaultProxy(store.endpoint, Faults(), port) as back:
        again = store.transcribe(back.endpoint, out, tmp_path / "again.json")
    assert again.returncode == 0, again.stdout + again.stderr
    files = json.loads((tmp_path / "again.json").read_text())["files"]
    assert (files["skipped"], files["succeeded"], files["failed"]) == (
        len(done), len(SOURCES) - len(done), 0)
    after = store.stamps(out)
    assert {k: after[k] for k in after if stem(k) in done} == {
        k: stamps[k] for k in stamps if stem(k) in done}  # the done ones were not rewritten
    assert store.outputs(out) == store.clean
    print(f"\nstore lost after {len(done_before)} files; {len(reported)} reported done, "
          f"{len(done)} complete in the store, {len(SOURCES) - len(done)} left; the run "
          f"ended {ended:.1f} s after")


@pytest.mark.slow
def test_shard_pods_ride_out_injected_faults(store: Store, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = "out-shards"
    order = WorkOrder(job_uid="flaky-1", input_uri=f"s3://{store.bucket}/in/",
                      output=OutputOptions(uri=f"s3://{store.bucket}/{out}/"), shards=2,
                      device="cpu")
    order.model.name = str(store.model)
    order.transcription.pack_short_clips = False  # as the clean run: transcripts comparable
    with start_proxy(store.endpoint, Faults(seed=11, **FAULTS)) as proxy:
        env = {**store.env, "AWS_ENDPOINT_URL": proxy.endpoint,
               contract.ENV_WORK_ORDER: order.to_json()}
        planned = subprocess.run([str(WHISPERFLEET), "plan", "--termination-log",
                                  str(tmp_path / "plan.log")], env=env, capture_output=True,
                                 text=True, timeout=300)
        assert planned.returncode == 0, planned.stderr
        plan = PlanReport.from_json((tmp_path / "plan.log").read_text())
        assert (plan.files, plan.shards, plan.error_reason) == (len(SOURCES), 2, "")
        reports = []
        for index in range(plan.shards):
            log = tmp_path / f"shard{index}.log"
            pod = subprocess.run(
                [str(WHISPERFLEET), "run-shard", "--termination-log", str(log)],
                env={**env, contract.ENV_COMPLETION_INDEX: str(index), "POD_NAME": f"p-{index}"},
                capture_output=True, text=True, timeout=540)
            assert pod.returncode == 0, pod.stderr
            reports.append(ShardReport.from_json(log.read_text()))
        counts = settled(proxy)
    assert all(counts[kind] > 0 for kind in KINDS), counts
    assert counts["stall ended by client"] == counts["stall"], counts

    monkeypatch.setenv("AWS_ENDPOINT_URL", store.endpoint)  # read back around the proxy
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(name, store.env[name])
    shards = [e.shard for e in read_manifest(order.manifest_uri)]
    for report in reports:
        planned_here = shards.count(report.shard)
        assert planned_here > 0
        assert (report.total, report.succeeded, report.skipped, report.failed) == (
            planned_here, planned_here, 0, 0), report
        assert report.error_reason == "" and report.audio_seconds > 0
    ledger = merge(read_ledger(order.ledger_uri))
    assert {r.key: r.status for r in ledger.values()} == dict.fromkeys(SOURCES, SUCCEEDED)
    assert store.outputs(out) == store.clean  # whole, none missing, none extra
    print(f"\nshard pods: faults injected {dict((k, counts[k]) for k in KINDS)}")


@pytest.mark.slow
def test_a_shard_pod_whose_store_disappears_exits_43_and_its_retry_finishes(
    store: Store, tmp_path: Path
) -> None:
    out = "out-pod-lost"
    order = WorkOrder(job_uid="lost-1", input_uri=f"s3://{store.bucket}/in/",
                      output=OutputOptions(uri=f"s3://{store.bucket}/{out}/"), shards=1,
                      device="cpu")
    order.model.name = str(store.model)
    order.transcription.pack_short_clips = False
    # As above: against a store that is gone, fewer waits.
    env = {**store.env, contract.ENV_WORK_ORDER: order.to_json(),
           contract.ENV_COMPLETION_INDEX: "0", "AWS_MAX_ATTEMPTS": "3"}
    planned = subprocess.run([str(WHISPERFLEET), "plan", "--termination-log",
                              str(tmp_path / "plan.log")], env=env, capture_output=True,
                             text=True, timeout=300)
    assert planned.returncode == 0, planned.stderr

    def pod(log: str) -> list[str]:
        return [str(WHISPERFLEET), "run-shard", "--termination-log", str(tmp_path / log)]

    code, _, _, port = lose_store_midway(store, pod("first.log"), env, out, tmp_path / "1.txt")
    assert code == contract.EXIT_STORAGE, (tmp_path / "1.txt").read_text()  # Job retries it
    report = ShardReport.from_json((tmp_path / "first.log").read_text())
    assert report.error_reason == Reason.UNREACHABLE.value and "re-run" in report.error_message
    assert report.total == len(SOURCES) and 0 < report.succeeded < len(SOURCES)
    done = store.done(out)

    with FaultProxy(store.endpoint, Faults(), port) as back:  # the retried pod
        second = subprocess.run(pod("second.log"), env={**env, "AWS_ENDPOINT_URL": back.endpoint},
                                capture_output=True, text=True, timeout=540)
    assert second.returncode == 0, second.stderr
    retry = ShardReport.from_json((tmp_path / "second.log").read_text())
    assert (retry.skipped, retry.succeeded, retry.failed) == (
        len(done), len(SOURCES) - len(done), 0)
    assert store.outputs(out) == store.clean
