"""status.progress: what `kubectl get tj` shows between shard completions, computed from the
finished shards plus what the running pods' metrics say (as the runner really serves them)."""

from __future__ import annotations

from datetime import datetime, timezone

from prometheus_client import generate_latest

from whisperfleet_operator.progress import Sample, parse_metrics, progress
from whisperfleet_runner.contract import FAILED, SKIPPED, SUCCEEDED
from whisperfleet_runner.fleet.metrics import RunMetrics
from whisperfleet_runner.pipeline.ledger import LedgerRecord

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=timezone.utc)
STARTED = "2026-12-01T11:00:00Z"  # an hour before NOW


def running(succeeded: int = 0, failed: int = 0, skipped: int = 0, total: int = 1000,
            audio: float = 0.0, **extra: object) -> dict:
    return {"phase": "Running", "startTime": STARTED, "audioSeconds": audio,
            "files": {"total": total, "succeeded": succeeded, "failed": failed,
                      "skipped": skipped}, **extra}


def test_a_runner_scrape_counts_every_finished_file_and_its_audio() -> None:
    run = RunMetrics()
    for status, seconds in ((SUCCEEDED, 30.0), (SUCCEEDED, 12.5), (FAILED, 0.0),
                            (SKIPPED, 0.0)):
        run.record(LedgerRecord(uri="s3://b/a.wav", key="a.wav", status=status,
                                audio_seconds=seconds))
    run.tuned("cuda:0", 4, 1)
    assert parse_metrics(generate_latest(run.registry).decode()) == Sample(4, 42.5)


def test_running_pods_add_to_the_finished_shards_and_give_a_pace() -> None:
    status = running(succeeded=200, failed=10, skipped=40, audio=3600.0)
    shown = progress(status, [Sample(100, 900.0), Sample(150, 1800.0)], NOW)
    # 500 of 1000 in one hour: one more hour at that pace.
    assert shown["filesDone"] == 500 and shown["summary"] == "50%"
    assert shown["eta"] == "1h00m"
    assert shown["audioSecondsDone"] == 6300.0
    assert shown["throughput"] == 1.75  # 6300 audio seconds in 3600 wall seconds
    assert shown["updateTime"] == "2026-12-01T12:00:00Z"


def test_before_any_file_is_done_there_is_no_eta_rather_than_a_wrong_one() -> None:
    shown = progress(running(), [], NOW)
    assert (shown["filesDone"], shown["eta"], shown["summary"]) == (0, "", "0%")


def test_files_done_never_goes_backwards_while_a_finished_pod_awaits_folding() -> None:
    # The pod that reported 300 files finished; its shard is not folded into files yet.
    before = running(succeeded=100, progress={"filesDone": 400})
    assert progress(before, [Sample(50, 10.0)], NOW)["filesDone"] == 400


def test_live_counts_never_exceed_the_plan() -> None:
    # A re-run pod counts files a lost pod had done: never more than 100%.
    shown = progress(running(succeeded=900), [Sample(300, 0.0)], NOW)
    assert (shown["filesDone"], shown["summary"], shown["eta"]) == (1000, "100%", "0s")


def test_a_finished_job_shows_its_final_counts_timed_to_its_completion() -> None:
    final = {**running(succeeded=990, failed=4, audio=7200.0),
             "phase": "PartiallySucceeded", "completionTime": "2026-12-01T11:30:00Z",
             "progress": {"filesDone": 999}}
    shown = progress(final, [], NOW)
    # The live peak (999) gives way to the folded counts; files no report covered stay out.
    assert (shown["filesDone"], shown["summary"], shown["eta"]) == (994, "99%", "0s")
    assert shown["throughput"] == 4.0  # 7200 audio seconds over its 30 minutes, not 60
