"""Pure status aggregation: what `kubectl get tj -o yaml` shows for given Jobs and pods."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.transcription_jobs import parsed
from whisperfleet_operator import status as st
from whisperfleet_operator.conditions import set_condition
from whisperfleet_operator.spec import TranscriptionJob
from whisperfleet_operator.status import events, fold
from whisperfleet_runner.contract import FileFailure, GpuIdentity, PlanReport, ShardReport

NOW, LATER = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"
Obj = dict[str, Any]


def tj(status: Obj | None = None, **spec: Any) -> tuple[TranscriptionJob, Obj]:
    """(the parsed TranscriptionJob, its current status), as the status functions take them."""
    return parsed(name="t", uid="u", generation=3, **spec), status or {}


def pod(message: str, *, phase: str = "Succeeded", index: int | None = None,
        finished: str = NOW, name: str = "p") -> Obj:
    annotations = {} if index is None else {"batch.kubernetes.io/job-completion-index": str(index)}
    return {"metadata": {"name": name, "annotations": annotations},
            "spec": {"nodeName": "node-a"},
            "status": {"phase": phase, "containerStatuses": [{"name": "runner", "state": {
                "terminated": {"message": message, "finishedAt": finished}}}]}}


def job(*conditions: tuple[str, str], **status: Any) -> Obj:
    return {"metadata": {"name": "t-work"}, "status": {**status, "conditions": [
        {"type": t, "status": "True", "reason": r, "message": f"{t} because {r}"}
        for t, r in conditions]}}


def planned_status() -> Obj:
    out = st.planning_status(*tj(), st.PlannerOutcome("succeeded", PlanReport(
        files=4, shards=2, manifest_uri="s3://b/m.jsonl")), "t-plan", NOW)
    return out


def report(shard: int, ok: int, failed: tuple[str, ...] = (), seconds: float = 30.0) -> str:
    return ShardReport(
        shard=shard, total=ok + len(failed), succeeded=ok, failed=len(failed),
        audio_seconds=seconds, pod=f"w-{shard}", node="node-a",
        gpus=[GpuIdentity(uuid=f"GPU-{shard}", name="A100", memory_mib=40960, device_index=0,
                          pci_bus_id=f"00000000:{shard + 1:02X}:00.0", compute_capability="8.0")],
        failures=[FileFailure(uri=u, reason="InvalidMedia") for u in failed]).to_json()


def cond(status: Obj, type_: str) -> Obj:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_index_sets_follow_kubernetes_notation() -> None:
    assert fold.parse_indexes("1,3-5,7") == {1, 3, 4, 5, 7}
    assert fold.parse_indexes("") == set() and fold.parse_indexes(None) == set()


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    first = set_condition([], "Running", True, "ShardsRunning", "1 of 2", 1, NOW)
    same = set_condition(first, "Running", True, "ShardsRunning", "2 of 2", 2, LATER)
    assert same[0]["lastTransitionTime"] == NOW and same[0]["message"] == "2 of 2"
    assert same[0]["observedGeneration"] == 2
    flipped = set_condition(same, "Running", False, "Succeeded", "done", 2, LATER)
    assert flipped[0]["lastTransitionTime"] == LATER and len(flipped) == 1


def test_condition_reasons_are_valid_for_the_api() -> None:
    # metav1.Condition reasons must match ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$
    out = set_condition([], "Failed", True, "bucket not-found!", "m", 1, NOW)
    assert out[0]["reason"] == "bucketnotfound"
    assert set_condition([], "Failed", True, "", "m", 1, NOW)[0]["reason"] == "Failed"


@pytest.mark.parametrize(("seconds", "text"), [
    (45, "45s"), (750, "12m30s"), (3 * 3600 + 300, "3h05m"), (2 * 86400 + 4 * 3600, "2d04h")])
def test_audio_duration_for_the_printer_column(seconds: float, text: str) -> None:
    assert fold.format_duration(seconds) == text


def test_a_new_job_is_accepted_pending_then_planning_keeps_its_start_and_says_so() -> None:
    accepted = st.accepted_status(3, NOW)
    assert accepted["phase"] == "Pending" and accepted["observedGeneration"] == 3
    assert cond(accepted, "Planned")["status"] == "False"
    assert cond(accepted, "Planned")["reason"] == "Accepted"
    planning = st.planning_status(*tj(accepted), st.PlannerOutcome("running"), "t-plan", LATER)
    assert planning["phase"] == "Planning" and planning["startTime"] == NOW
    assert cond(planning, "Planned")["reason"] == "Planning"
    assert [r for _, r, _ in events.transitions(accepted, planning)] == ["Planning"]


def test_planner_running_then_plan_read_from_its_termination_message() -> None:
    assert st.planner_outcome({"status": {"active": 1}}, []).state == "running"
    plan = PlanReport(files=3, shards=1, manifest_uri="s3://b/m")
    outcome = st.planner_outcome(job(("Complete", "")), [pod(plan.to_json())])
    assert outcome.state == "succeeded" and outcome.plan == plan


def test_planner_error_reason_wins_over_the_job_reason() -> None:
    text = PlanReport(error_reason="BucketNotFound", error_message="no bucket b").to_json()
    outcome = st.planner_outcome(job(("Failed", "PodFailurePolicy")), [pod(text, phase="Failed")])
    assert (outcome.state, outcome.reason, outcome.message) == (
        "failed", "BucketNotFound", "no bucket b")
    failed = st.planning_status(*tj(), outcome, "t-plan", NOW)
    assert failed["phase"] == "Failed" and cond(failed, "Failed")["reason"] == "BucketNotFound"


def test_planner_without_report_or_files_fails_clearly() -> None:
    assert st.planner_outcome(job(("Complete", "")), [pod("garbage{")]).reason == \
        "PlanUnreadable"
    empty = PlanReport(files=0, shards=0).to_json()
    assert st.planner_outcome(job(("Complete", "")), [pod(empty)]).reason == "NoMatchingFiles"
    assert st.planner_outcome(job(("Failed", "DeadlineExceeded")), []).reason == \
        "DeadlineExceeded"


def test_running_folds_each_finished_shard_once_with_its_gpus_and_failures() -> None:
    base = tj(planned_status())
    pods = [pod(report(0, 2, seconds=90.0), index=0, name="w-0", finished=NOW),
            pod(report(1, 1, ("s3://b/bad.mp3",)), phase="Failed", index=1, name="w-1",
                finished=LATER)]
    # Shard 1's pod failed, but the Job retries it: only shard 0 is final.
    out = st.running_status(*base, job(active=1, succeeded=1, completedIndexes="0"), pods, LATER)
    assert out["phase"] == "Running"
    assert out["files"] == {"total": 4, "succeeded": 2, "failed": 0, "skipped": 0}
    assert out["shards"] == {"total": 2, "succeeded": 1, "failed": 0, "active": 1}
    assert out["audioSeconds"] == 90.0 and out["filesSummary"] == "2/4"
    assert out["foldedShards"] == "0" and [w["pod"] for w in out["workers"]] == ["w-0"]
    # Shard 1 fails for good (bad media): folded in, newest worker first.
    final = st.running_status(*tj({**planned_status(), **out}), job(
        ("Failed", "FailedIndexes"), succeeded=1, completedIndexes="0", failedIndexes="1"),
        pods, LATER)
    assert final["files"] == {"total": 4, "succeeded": 3, "failed": 1, "skipped": 0}
    assert final["audioSeconds"] == 120.0 and final["foldedShards"] == "0-1"
    assert [w["pod"] for w in final["workers"]] == ["w-1", "w-0"]
    assert final["workers"][0]["gpus"] == [
        {"uuid": "GPU-1", "name": "A100", "memoryMiB": 40960, "deviceIndex": 0,
         "pciBusId": "00000000:02:00.0", "computeCapability": "8.0"}]
    assert final["failures"] == [{"uri": "s3://b/bad.mp3", "reason": "InvalidMedia"}]
    assert cond(out, "Planned")["status"] == "True"
    assert out["observedGeneration"] == 3 and out["startTime"] == NOW


def test_a_job_failed_by_one_pod_shows_that_pods_reason() -> None:
    # FailJob (exit 2: a model not staged) fails the Job without marking an index failed;
    # the reason its pods reported must still reach the status.
    why = "cannot load the model: no staged model at s3://m/base/: s3://m/base/x does not exist"
    reported = ShardReport(shard=1, error_reason="ModelNotFound", error_message=why).to_json()
    pods = [pod(reported, phase="Failed", index=1, name="w-1")]
    out = st.running_status(*tj(planned_status()), job(("Failed", "PodFailurePolicy")), pods,
                            LATER)
    assert out["phase"] == "Failed"
    assert out["failures"] == [{"uri": "shard 1", "reason": f"ModelNotFound: {why}"}]
    # A pod that failed while the Job goes on is retried: not final, not folded.
    retried = st.running_status(*tj(planned_status()), job(active=1), pods, LATER)
    assert retried.get("failures", []) == []


def test_counts_survive_the_pods_being_deleted() -> None:
    pods = [pod(report(i, 3, seconds=60.0), index=i, name=f"w-{i}") for i in range(2)]
    first = st.running_status(*tj(planned_status()), job(
        active=0, succeeded=2, completedIndexes="0-1"), pods, NOW)
    assert first["files"]["succeeded"] == 6 and first["foldedShards"] == "0-1"
    # The pods are garbage-collected; the same Job status must not change the totals.
    again = st.running_status(*tj({**planned_status(), **first}), job(
        active=0, succeeded=2, completedIndexes="0-1"), [], LATER)
    for key in ("files", "audioSeconds", "gpuSeconds", "workers", "foldedShards"):
        assert again[key] == first[key], key


def test_throughput_is_audio_hours_per_gpu_hour() -> None:
    one_gpu = pod(report(0, 2, seconds=3600.0), index=0, name="w-0")  # 1 h of audio...
    text = json.loads(termination_of(one_gpu))
    text["wall_seconds"] = 120.0  # ... in 2 minutes on one GPU
    one_gpu = pod(json.dumps(text), index=0, name="w-0")
    out = st.running_status(*tj(planned_status()), job(succeeded=1, completedIndexes="0"),
                            [one_gpu], LATER)
    assert out["gpuSeconds"] == 120.0 and out["throughput"] == 30.0


def test_a_finished_shard_whose_pod_is_gone_is_named_not_lost() -> None:
    out = st.running_status(*tj(planned_status()), job(succeeded=1, completedIndexes="0"),
                            [], LATER)
    assert out["foldedShards"] == "0"
    assert out["failures"][0]["uri"] == "shard 0"
    assert "ledger" in out["failures"][0]["reason"]


def termination_of(pod_: Obj) -> str:
    return str(pod_["status"]["containerStatuses"][0]["state"]["terminated"]["message"])


def test_index_ranges_round_trip() -> None:
    for indexes in ({0, 1, 2, 3, 5}, set(), {7}, {0, 2, 4, 5, 6, 9}):
        assert fold.parse_indexes(fold.format_indexes(indexes)) == indexes
    assert fold.format_indexes({0, 1, 2, 3, 5}) == "0-3,5"


def test_a_retried_shard_counts_once_preferring_its_success() -> None:
    base = tj(planned_status())
    pods = [pod(report(0, 0, ("s3://b/x.wav",)), phase="Failed", index=0, name="a",
                finished=LATER),
            pod(report(0, 2), index=0, name="b", finished=NOW)]
    out = st.running_status(*base, job(succeeded=1, completedIndexes="0"), pods, LATER)
    assert out["files"]["succeeded"] == 2 and out["files"]["failed"] == 0


@pytest.mark.parametrize(("conditions", "extra", "phase"), [
    ([("Complete", "")], {}, "Succeeded"),
    ([("Failed", "FailedIndexes")], {"completedIndexes": "0", "failedIndexes": "1"},
     "PartiallySucceeded"),
    ([("Failed", "MaxFailedIndexesExceeded")], {"failedIndexes": "0-1"}, "Failed"),
    ([("Failed", "DeadlineExceeded")], {"completedIndexes": "0"}, "Failed"),
])
def test_job_outcome_to_phase(conditions: list[tuple[str, str]], extra: Obj, phase: str) -> None:
    out = st.running_status(*tj(planned_status()), job(*conditions, **extra), [], LATER)
    assert out["phase"] == phase
    assert out["completionTime"] == LATER
    assert cond(out, "Running")["status"] == "False"
    if phase == "Failed":
        assert cond(out, "Failed")["reason"] == conditions[0][1]
    # Complete only when every file succeeded (`kubectl wait --for=condition=Complete`);
    # a partial success has its own condition, and neither holds for a failed job.
    held = {c["type"]: c["status"] for c in out["conditions"]}
    assert (held.get("Complete"), held.get("PartiallySucceeded")) == {
        "Succeeded": ("True", None), "PartiallySucceeded": (None, "True"),
        "Failed": (None, None)}[phase]


def test_suspended_then_resumed_conditions() -> None:
    paused = st.running_status(*tj(planned_status(), suspend=True), job(), [], NOW)
    assert paused["phase"] == "Suspended" and cond(paused, "Suspended")["status"] == "True"
    resumed = st.running_status(*tj(paused), job(active=2), [], LATER)
    assert resumed["phase"] == "Running"
    assert (cond(resumed, "Suspended")["status"], cond(resumed, "Suspended")["reason"]) == (
        "False", "Resumed")
    assert [r for _t, r, _m in events.transitions(paused, resumed)] == ["Resumed"]


def test_transitions_name_what_changed() -> None:
    planning = st.planning_status(*tj(), st.PlannerOutcome("running"), "t-plan", NOW)
    assert [r for _t, r, _m in events.transitions({}, planning)] == ["Planning"]
    running = st.running_status(*tj(planned_status()), job(active=1), [], NOW)
    assert [r for _t, r, _m in events.transitions(planning, running)] == ["Planned", "Running"]
    assert events.transitions(running, running) == []
    failed = st.running_status(*tj(running), job(("Failed", "BackoffLimitExceeded")), [], NOW)
    assert events.transitions(running, failed)[0][:2] == ("Warning", "BackoffLimitExceeded")


def test_invalid_spec_fails_naming_the_field() -> None:
    out = st.invalid_spec_status({}, 3, "spec.workers.parallelism must be at least 1", NOW)
    assert out["phase"] == "Failed" and "parallelism" in cond(out, "Failed")["message"]


def test_reports_survive_any_termination_message() -> None:
    from whisperfleet_operator.status import reports

    for junk in ("", "null", "42", "[]", '"text"', "[" * 3000, "{}x", '{"shard": -1}',
                 '{"succeeded": "3"}', '{"gpus": [{"uuid": 1}]}', "Traceback: MemoryError"):
        assert reports.parse_shard(junk) is None, junk
        assert reports.parse_plan(junk) is None, junk
    assert reports.parse_shard(report(0, 1)) is not None
    # A shard retried to success gets no failure note for its earlier crash.
    crashed = pod("Killed", phase="Failed", index=0, finished=NOW, name="a")
    retried = pod("", phase="Succeeded", index=0, finished=LATER, name="b")
    assert reports.by_shard([crashed, retried]) == ({}, {})
    chosen, unreadable = reports.by_shard([crashed])
    assert chosen == {} and list(unreadable) == [0]
    assert reports.describe_failure(unreadable[0]) == "Error: Killed"


def crashed(index: int, log_tail: str, *, code: int = 1, reason: str = "Error") -> Obj:
    """A worker pod that died without a report: FallbackToLogsOnError left its log tail."""
    out = pod(log_tail, phase="Failed", index=index, name=f"w-{index}")
    out["status"]["containerStatuses"][0]["state"]["terminated"].update(exitCode=code,
                                                                         reason=reason)
    return out


def test_pods_that_died_without_a_report_are_named_with_their_log_tail() -> None:
    pods = [pod(report(0, 2), index=0, name="w-0"),
            crashed(1, "Traceback (most recent call last):\nMemoryError", code=137,
                    reason="OOMKilled"),
            crashed(2, "null"), crashed(3, "[1, 2]"),
            crashed(4, '{"shard": "four", "succeeded": "many"}')]
    out = st.running_status(*tj(planned_status()), job(
        ("Failed", "FailedIndexes"), succeeded=1, completedIndexes="0",
        failedIndexes="1-4"), pods, LATER)
    assert out["phase"] == "PartiallySucceeded" and out["files"]["succeeded"] == 2
    reasons = {f["uri"]: f["reason"] for f in out["failures"]}
    assert set(reasons) == {"shard 1", "shard 2", "shard 3", "shard 4"}
    assert "OOMKilled (exit code 137)" in reasons["shard 1"]
    assert "MemoryError" in reasons["shard 1"]


def test_oversized_reports_still_give_a_status_within_the_crds_bounds() -> None:
    huge = json.loads(report(0, 1, ("s3://b/x.wav",)))
    huge["gpus"] = [{"uuid": f"GPU-{i}-" + "u" * 200, "name": "N" * 300, "memory_mib": -1,
                     "device_index": i} for i in range(40)]
    huge["pod"], huge["node"] = "p" * 300, "n" * 300
    huge["failures"] = [{"uri": f"s3://b/{i}-" + "k" * 5000, "reason": "r" * 5000}
                        for i in range(30)]
    huge["error_reason"], huge["error_message"] = "StorageError", "m" * 40000
    out = st.running_status(*tj(planned_status()), job(
        ("Failed", "FailedIndexes"), failedIndexes="0"),
        [pod(json.dumps(huge), phase="Failed", index=0)], LATER)
    assert len(out["failures"]) == fold.MAX_FAILURES and out["failures"][0]["uri"] == "shard 0"
    assert all(len(f["uri"]) <= fold.MAX_URI and len(f["reason"]) <= fold.MAX_REASON
               for f in out["failures"])
    (worker,) = out["workers"]
    assert len(worker["pod"]) <= fold.MAX_NAME and len(worker["gpus"]) <= fold.MAX_GPUS
    assert all(g["memoryMiB"] >= 0 and len(g["uuid"]) <= fold.MAX_GPU_TEXT
               for g in worker["gpus"])


def test_a_planner_that_crashed_every_time_is_failed_with_its_log_tail() -> None:
    planner = pod("ImportError: libcudnn_ops.so.9: cannot open shared object file",
                  phase="Failed", name="t-plan-x")
    planner["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = 1
    outcome = st.planner_outcome(job(("Failed", "BackoffLimitExceeded")), [planner])
    assert (outcome.state, outcome.reason) == ("failed", "BackoffLimitExceeded")
    assert "libcudnn_ops.so.9" in outcome.message
    failed = st.planning_status(*tj(), outcome, "t-plan", NOW)
    assert failed["phase"] == "Failed" and "libcudnn_ops.so.9" in cond(failed, "Failed")[
        "message"]


def test_a_completed_planner_whose_pod_is_gone_asks_for_a_re_creation() -> None:
    outcome = st.planner_outcome(job(("Complete", "")), [])
    assert (outcome.state, outcome.reason) == ("failed", "PlanUnreadable")
    assert "re-create the TranscriptionJob" in outcome.message


# --- the TTL ---------------------------------------------------------------------------------


def test_the_ttl_counts_from_when_the_job_finished_and_only_once_it_did() -> None:
    from datetime import datetime, timezone

    from whisperfleet_operator.status import expiry

    done = {"phase": "PartiallySucceeded", "completionTime": "2026-12-07T10:00:00Z"}
    assert expiry.expires_at(60, done) == datetime(2026, 12, 7, 10, 1, tzinfo=timezone.utc)
    assert expiry.expires_at(0, done) == datetime(2026, 12, 7, 10, 0, tzinfo=timezone.utc)
    assert expiry.expires_at(None, done) is None  # unset: keep, as a Job
    assert expiry.expires_at(0, {"phase": "Running"}) is None
    # No completionTime (a status from before it): the last condition change.
    failed = {"phase": "Failed", "conditions": [
        {"type": "Planned", "lastTransitionTime": "2026-12-07T09:00:00Z"},
        {"type": "Failed", "lastTransitionTime": "2026-12-07T09:30:00Z"}]}
    assert expiry.expires_at(10, failed) == datetime(2026, 12, 7, 9, 30, 10, tzinfo=timezone.utc)


def test_the_cleanup_jobs_outcome() -> None:
    from whisperfleet_operator.status import expiry

    assert expiry.cleanup_failure(job()) is None
    assert expiry.cleanup_failure(job(("Complete", ""))) == ""
    failed = {"status": {"conditions": [{"type": "Failed", "status": "True",
                                         "reason": "DeadlineExceeded",
                                         "message": "Job was active longer than specified"}]}}
    assert expiry.cleanup_failure(failed) == "Job was active longer than specified"
