"""The operator under Kubernetes API faults, on the real control plane: conflicts on status
writes, 5xx (a create among them whose success the client never heard of), 429 with
Retry-After, and watches ended with 410 Gone. The operator talks to the API server through
the fault-injecting proxy of api_fault_proxy.py; everything else (kubectl-like reads of
this test, the Job controller, the kubelet) talks to it directly.

Each test asserts what a user would see — the job Succeeded with every file counted, one
planner and one worker Job — and that the faults were really met (the proxy's counts; for
the lost create, the API server's own audit log)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.api_fault_proxy import ApiFaultProxy, Rule
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import restricted_pod
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import OperatorProcess, Release
from tests.support.paths import AUDIO
from whisperfleet_operator import naming, spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TERMINAL = ("Succeeded", "PartiallySucceeded", "Failed")
FILES = {"in/hello.wav": AUDIO / "hello.wav", "in/numbers.wav": AUDIO / "nested/numbers.wav",
         "in/again.wav": AUDIO / "nested/deeper/hello.wav"}
Obj = dict[str, Any]
FOREIGN = "someone-else"  # the owner of a Job the operator must not take for its own
FINAL_WRITE = r'"phase": ?"Succeeded"'  # the status patch that finishes the job


def status_path(ns: str) -> str:
    return rf"/namespaces/{ns}/transcriptionjobs/[^/]+/status$"


def in_namespace(ns: str) -> str:
    return rf"/namespaces/{ns}/"


def jobs_path(ns: str) -> str:
    return rf"/apis/batch/v1/namespaces/{ns}/jobs$"


def succeeded_events(cluster: LocalCluster, ns: str) -> list[tuple[str, str, str]]:
    return [e for e in tjs.events(cluster, ns, "faulted") if e[:2] == ("Normal", "Succeeded")]


@dataclass(frozen=True)
class Case:
    rules: Callable[[str], list[Rule]]  # the test's namespace -> the proxy's rules
    must_hit: tuple[str, ...]  # rule labels that must have fired at least once
    # More to check afterwards: (cluster, namespace, when the operator started, counts).
    extra: Callable[[LocalCluster, str, datetime, Counter[str]], None] = field(
        default=lambda *_: None)


def operator_requests(cluster: LocalCluster, since: datetime) -> list[Obj]:
    """The audit events of the requests the operator's ServiceAccount made since `since`."""
    stamp = since.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return [e for e in cluster.audit_events()
            if e["user"]["username"].startswith("system:serviceaccount:whisperfleet:")
            and e.get("requestReceivedTimestamp", "") >= stamp]


def created_twice_once_refused(cluster: LocalCluster, ns: str, since: datetime,
                               counts: Counter[str]) -> None:
    """The API server saw each Job created once (201) and a repeat it refused (409): the
    operator re-sent a create it believed failed, and took AlreadyExists as done."""
    creates = Counter(e["responseStatus"]["code"] for e in operator_requests(cluster, since)
                      if e["verb"] == "create" and e["objectRef"]["resource"] == "jobs"
                      and e["objectRef"].get("namespace") == ns
                      and "dryRun=" not in e.get("requestURI", ""))
    assert creates[201] == 2 and creates[409] >= 1, creates


def relisted(cluster: LocalCluster, ns: str, since: datetime, counts: Counter[str]) -> None:
    """After each 410 the operator listed the Jobs afresh, not only watched again."""
    lists = [e for e in operator_requests(cluster, since)
             if e["verb"] == "list" and e["objectRef"].get("resource") == "jobs"]
    assert len(lists) >= 1 + counts["410 on the Jobs watch"], lists  # 1: at start-up


CASES = {
    "conflict": Case(
        lambda ns: [
            # The write that finishes the job: a lost one leaves the job Running for good.
            Rule("conflict", "PATCH|PUT", status_path(ns), match=FINAL_WRITE, count=4,
                 max_in_a_row=4, name="409 on the final status write"),
            Rule("conflict", "PATCH|PUT", status_path(ns), match='"phase"', count=4,
                 probability=0.5, name="409 on a status write"),
        ],
        ("409 on the final status write", "409 on a status write")),
    "5xx": Case(
        lambda ns: [
            # Created, but the operator hears 500: its retry must not make a second Job.
            # (The planner's create: the worker Job's dry run before it creates nothing.)
            Rule("500", "POST", jobs_path(ns), match=r'"app.kubernetes.io/component": ?"planner"',
                 lost=True, count=2, name="500 after a Job was created"),
            Rule("503", "GET|PATCH|POST", in_namespace(ns), count=8, probability=0.3),
            Rule("500", "GET|PATCH|POST", in_namespace(ns), count=8, probability=0.3),
        ],
        ("500 after a Job was created", "503", "500"), created_twice_once_refused),
    "5xx-longer-than-one-call-retries": Case(
        lambda ns: [
            Rule("503", "PATCH", status_path(ns), match=FINAL_WRITE, count=15,
                 max_in_a_row=15, name="503 x15 on the final status write"),
        ],
        ("503 x15 on the final status write",)),
    "429": Case(
        lambda ns: [
            Rule("429", "POST", jobs_path(ns), count=2, name="429 on a Job create"),
            Rule("429", "", in_namespace(ns), count=10, probability=0.3),
        ],
        ("429 on a Job create", "429")),
    "410-gone": Case(
        lambda ns: [
            # The first events about this test's objects never arrive on their watch.
            Rule("gone", "GET", r"^/apis/batch/v1/jobs$", match=f'"namespace":"{ns}"',
                 count=3, name="410 on the Jobs watch"),
            Rule("gone", "GET", r"^/apis/whisperfleet\.io/v1alpha1/transcriptionjobs$",
                 match=f'"namespace":"{ns}"', count=2,
                 name="410 on the TranscriptionJobs watch"),
            Rule("gone", "GET", r"^/api/v1/pods$", match=f'"namespace":"{ns}"', count=3,
                 name="410 on the pods watch"),
        ],
        ("410 on the Jobs watch", "410 on the TranscriptionJobs watch",
         "410 on the pods watch"), relisted),
}


@pytest.fixture
def shared_operator_stopped(operator: OperatorProcess) -> Iterator[None]:
    """The session's operator stopped for the test (two operators would both act on every
    job, and the one without faults would hide them), running again after it."""
    operator.stop()
    yield
    if operator.process is None or operator.process.poll() is not None:
        operator.start()


@pytest.mark.parametrize("kind", list(CASES))
@pytest.mark.usefixtures("shared_operator_stopped")
def test_the_job_converges_under_api_faults_without_duplicate_jobs(
    kind: str, cluster: LocalCluster, release: Release, job_namespace: str
) -> None:
    case, ns = CASES[kind], job_namespace
    assert cluster.control_plane is not None
    pki = cluster.control_plane.pki
    workdir = cluster.state_dir / "api-faults" / ns
    workdir.mkdir(parents=True)
    bucket = tjs.bucket_with(cluster, FILES)
    proxy = ApiFaultProxy(cluster.server, pki.ca_cert, pki.serving_cert, pki.serving_key,
                          case.rules(ns), workdir / "proxy.log")
    began, clock = datetime.now(timezone.utc), time.monotonic()
    with proxy:
        faulted = OperatorProcess(cluster, release, workdir / "operator", server=proxy.server)
        try:
            faulted.start()
            tjs.create(cluster, ns, "faulted", tjs.job_spec(cluster, bucket, shards=2))
            try:
                # A clean run takes 10-20 s here: converging only through kopf's one-minute
                # handler retries (its default for any error) would take longer than this.
                done = tjs.wait_for(cluster, ns, "faulted", *TERMINAL, timeout=120)
                # Posted after the status write, by the operator: waited for while it runs.
                eventually(lambda: succeeded_events(cluster, ns), timeout=30,
                           what="the Succeeded Event")
            except AssertionError as error:
                raise AssertionError(f"{error}\nproxy: {dict(proxy.counts())}\n"
                                     f"operator log:\n{faulted.log_tail()}") from None
        finally:
            faulted.stop()
    counts = proxy.last
    print(f"\n{kind}: {time.monotonic() - clock:.1f}s, proxy counts {dict(counts)}")
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["files"] == {"total": 3, "succeeded": 3, "failed": 0, "skipped": 0}, status
    assert status["shards"]["succeeded"] == 2 and status["shards"]["failed"] == 0, status
    tjs.one_of_each_job(cluster, ns)
    assert len(succeeded_events(cluster, ns)) == 1, tjs.events(cluster, ns, "faulted")
    assert all(counts[label] > 0 for label in case.must_hit), dict(counts)
    case.extra(cluster, ns, began, counts)


@pytest.mark.usefixtures("shared_operator_stopped")
def test_a_job_under_its_name_that_it_does_not_own_fails_it_and_is_left_alone(
    cluster: LocalCluster, job_namespace: str, operator: OperatorProcess
) -> None:
    # What a create answered 409 AlreadyExists finds when the Job is not the one a lost
    # answer hid: the operator must neither adopt it (and report its status) nor touch it.
    ns, bucket = job_namespace, tjs.bucket_with(cluster, FILES)
    tj = tjs.create(cluster, ns, "squatted", tjs.job_spec(cluster, bucket))
    planner = naming.planner_job_name(spec.parse(tj))
    cluster.rest().create(f"/apis/batch/v1/namespaces/{ns}/jobs", {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": planner, "labels": {"owner": FOREIGN}},
        "spec": {"suspend": True, "template": {"spec": restricted_pod(
            "x", ["true"], tolerate_gpu=False)["spec"]}}})
    operator.start()
    done = tjs.wait_for(cluster, ns, "squatted", *TERMINAL, timeout=120)
    failed = tjs.condition(done, "Failed")
    assert done["status"]["phase"] == "Failed" and failed["reason"] == "JobRejected", done
    assert f'Job "{planner}" already exists and is not owned' in failed["message"]
    (job,) = tjs.jobs(cluster, ns)
    assert job["metadata"]["labels"] == {"owner": FOREIGN}
    assert not job["metadata"].get("ownerReferences") and job["spec"]["suspend"] is True
