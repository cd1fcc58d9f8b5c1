"""Least privilege, checked by the real API server: the chart's RBAC in both modes (asked with
`kubectl auth can-i --as` the operator's ServiceAccount), worker pods without an API token,
every pod admitted under the `restricted` Pod Security Standard."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import POD_SECURITY_LABELS
from tests.cluster.whisperfleet_release import OperatorProcess, Release, install_chart
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def can(cluster: LocalCluster, release: Release, *args: str) -> bool:
    account = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    result = cluster.kubectl("auth", "can-i", *args, as_user=account, check=False)
    return result.stdout.strip() == "yes"


def test_cluster_wide_operator_reads_no_secrets_and_writes_only_what_it_makes(
    cluster: LocalCluster, release: Release
) -> None:
    allowed = [("watch", "transcriptionjobs.whisperfleet.io", "-A"),
               ("patch", "transcriptionjobs.whisperfleet.io/status", "-n", "x"),
               ("create", "jobs.batch", "-n", "x"), ("list", "pods", "-A"),
               ("create", "events", "-n", "x"),
               ("create", "resourceclaimtemplates.resource.k8s.io", "-n", "x"),
               # the TTL of a finished TranscriptionJob
               ("delete", "transcriptionjobs.whisperfleet.io", "-n", "x"),
               # a queued job's Kueue Workload: Kueue's reason, and spec.active for suspend
               ("list", "workloads.kueue.x-k8s.io", "-n", "x"),
               ("patch", "workloads.kueue.x-k8s.io", "-n", "x")]
    denied = [("get", "secrets", "-n", "x"), ("list", "secrets", "-A"),
              ("get", "configmaps", "-n", "x"), ("delete", "pods", "-n", "x"),
              ("create", "pods", "-n", "x"), ("patch", "nodes"), ("create", "clusterroles"),
              ("impersonate", "serviceaccounts"), ("create", "pods/exec", "-n", "x"),
              ("create", "workloads.kueue.x-k8s.io", "-n", "x"),
              ("delete", "workloads.kueue.x-k8s.io", "-n", "x"),
              ("patch", "clusterqueues.kueue.x-k8s.io")]
    assert [a for a in allowed if not can(cluster, release, *a)] == []
    assert [d for d in denied if can(cluster, release, *d)] == []


@pytest.fixture
def team(cluster: LocalCluster) -> Iterator[str]:
    name = f"team-{uuid.uuid4().hex[:6]}"
    cluster.rest().create("/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": POD_SECURITY_LABELS}})
    yield name
    cluster.rest().delete(f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})


def test_namespaced_operator_works_in_its_namespace_and_nowhere_else(
    cluster: LocalCluster, team: str, operator: OperatorProcess
) -> None:
    scoped = install_chart(cluster, f"wf-{team}", f"ops-{team}",
                           {"watchNamespaces": [team]})
    assert can(cluster, scoped, "create", "jobs.batch", "-n", team)
    assert can(cluster, scoped, "list", "transcriptionjobs.whisperfleet.io", "-n", team)
    for other in ("default", "kube-system", operator.release.namespace):
        assert not can(cluster, scoped, "list", "transcriptionjobs.whisperfleet.io",
                       "-n", other)
        assert not can(cluster, scoped, "create", "jobs.batch", "-n", other)
    assert not can(cluster, scoped, "list", "transcriptionjobs.whisperfleet.io", "-A")
    assert not can(cluster, scoped, "get", "secrets", "-n", team)
    assert not can(cluster, scoped, "list", "nodes")
    # It runs a job there with nothing but those rights (the cluster-wide one stands aside).
    tjs.storage_secret(cluster, team)
    bucket = tjs.bucket_with(cluster, {"in/hello.wav": AUDIO / "hello.wav"})
    operator.stop()
    namespaced = OperatorProcess(cluster, scoped, cluster.state_dir / f"operator-{team}")
    try:
        namespaced.start()
        tjs.create(cluster, team, "scoped", tjs.job_spec(cluster, bucket))
        done = tjs.wait_for(cluster, team, "scoped", "Succeeded", "PartiallySucceeded",
                            "Failed")
        assert done["status"]["phase"] == "Succeeded", namespaced.log_tail()
    finally:
        namespaced.stop()
        operator.start()


def test_pods_are_admitted_as_restricted_and_workers_hold_no_api_token(
    cluster: LocalCluster, job_namespace: str
) -> None:
    ns = job_namespace
    labels = cluster.rest().get(f"/api/v1/namespaces/{ns}")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    bucket = tjs.bucket_with(cluster, {"in/hello.wav": AUDIO / "hello.wav"})
    tjs.create(cluster, ns, "locked", tjs.job_spec(cluster, bucket))
    done = tjs.wait_for(cluster, ns, "locked", "Succeeded", "PartiallySucceeded", "Failed")
    assert done["status"]["phase"] == "Succeeded"
    # The Job controller made every pod: PodSecurity admission refused none.
    job_events = [e for e in tjs.listed(cluster, f"/api/v1/namespaces/{ns}/events")
                  if e["involvedObject"]["kind"] == "Job"]
    assert not [e for e in job_events if e.get("reason") == "FailedCreate"], job_events
    pods = tjs.pods(cluster, ns)
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods} == {
        "planner", "worker"}
    for pod in pods:  # as admitted: no token volume was injected
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        projected = [v for v in spec.get("volumes") or [] if "projected" in v]
        assert not projected, json.dumps(projected)
        for container in spec["containers"]:
            mounts = [m["mountPath"] for m in container.get("volumeMounts") or []]
            assert not [m for m in mounts if "serviceaccount" in m], mounts
