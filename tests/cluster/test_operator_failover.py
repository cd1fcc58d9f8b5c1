"""Two operator replicas of one release, peered by kopf as the chart sets them up
(replicaCount 2, peering.enabled; kopf's peering CRDs from the chart's crds/): the older is
active, the younger waits paused, and when the active one is killed (SIGKILL, as a node
failure would) in the middle of a job, the standby takes it over once the dead one's
keep-alive runs out: the job finishes with no Job created twice and no status lost.

Both replicas are the chart's Deployment run as local processes (OperatorProcess), each
with its ServiceAccount's token, as every cluster test runs the operator; the session's
operator stands aside meanwhile (it watches every namespace too)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.test_operator_metrics import scrape
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import OperatorProcess, install_chart
from tests.support.paths import AUDIO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
LIFETIME = 10  # seconds a replica's keep-alive counts (peering.lifetimeSeconds)
TERMINAL = ("Succeeded", "PartiallySucceeded", "Failed")


def reconciles(operator: OperatorProcess) -> float:
    return sum(scrape(operator).get("whisperfleet_operator_reconciles_total", {}).values())


@pytest.fixture
def replicas(cluster: LocalCluster, operator: OperatorProcess
             ) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    """The peered release's two replicas, started one after the other (the first is the
    older, so the active one); the session's operator stopped meanwhile."""
    release = install_chart(cluster, "wf-ha", "wf-ha", {
        "replicaCount": 2, "peering": {"enabled": True, "lifetimeSeconds": LIFETIME},
        "userRoles": {"enabled": False}, "metrics": {"progressIntervalSeconds": 1}})
    cluster.kubectl("wait", "--for=condition=Established",
                    "crd/clusterkopfpeerings.kopf.dev", "--timeout=60s")
    operator.stop()
    first = OperatorProcess(cluster, release, cluster.state_dir / "operator-ha-1")
    second = OperatorProcess(cluster, release, cluster.state_dir / "operator-ha-2")
    try:
        first.start()
        second.start()
        yield first, second
    finally:
        first.stop()
        second.stop()
        operator.start()


def test_the_standby_takes_over_a_job_when_the_active_replica_dies(
        cluster: LocalCluster, job_namespace: str,
        replicas: tuple[OperatorProcess, OperatorProcess]) -> None:
    active, standby = replicas
    ns = job_namespace
    # Both keep their records in the release's peering object; kopf starts a replica paused
    # until that object shows no live peer of higher priority, so the younger stays so.
    peering = "/apis/kopf.dev/v1/clusterkopfpeerings/wf-ha-whisperfleet"
    peers = eventually(lambda: len((cluster.rest().get(peering) or {}).get("status") or {})
                       == 2 and cluster.rest().get(peering)["status"], timeout=60,
                       what="both replicas' records in the peering object")
    priorities = sorted(peer["priority"] for peer in peers.values())
    assert priorities[0] < priorities[1], peers
    bucket = tjs.bucket_with(cluster, {f"in/{n}.wav": AUDIO / "hello.wav" for n in "abcd"})
    # Suspended from the start: planned and its worker Job made, it cannot finish before
    # the active replica is killed.
    tjs.create(cluster, ns, "handover", tjs.job_spec(cluster, bucket, shards=2, suspend=True))
    held = tjs.wait_for(cluster, ns, "handover", "Suspended", *TERMINAL)
    assert held["status"]["phase"] == "Suspended", json.dumps(held["status"], indent=1)
    jobs_before = {j["metadata"]["name"]: j["metadata"]["uid"] for j in tjs.jobs(cluster, ns)}
    assert len(jobs_before) == 2, jobs_before  # the planner's and the workers'
    assert reconciles(active) > 0 and reconciles(standby) == 0  # only one was at work

    active.stop(kill=True)
    cluster.kubectl("patch", "tj", "handover", "-n", ns, "--type=merge",
                    "-p", '{"spec": {"suspend": false}}')
    done = tjs.wait_for(cluster, ns, "handover", *TERMINAL, timeout=240)
    status = done["status"]
    assert status["phase"] == "Succeeded", standby.log_tail()
    assert "Resuming operations after the pause" in standby.log_path.read_text()
    # Nothing made twice: the same two Jobs, the same objects (uids), no third.
    jobs_after = {j["metadata"]["name"]: j["metadata"]["uid"] for j in tjs.jobs(cluster, ns)}
    assert jobs_after == jobs_before
    # Nothing of the status lost: what the first replica wrote stands, the counts add up.
    assert status["startTime"] == held["status"]["startTime"]
    planned = tjs.condition(held, "Planned")
    assert tjs.condition(done, "Planned")["lastTransitionTime"] == planned["lastTransitionTime"]
    assert status["files"] == {"total": 4, "succeeded": 4, "failed": 0, "skipped": 0}, status
    assert status["shards"]["total"] == 2 and status["shards"]["succeeded"] == 2, status
    assert reconciles(standby) > 0
    reasons = [r for _, r, _ in tjs.events(cluster, ns, "handover")]
    assert reasons.count("Resumed") == 1, reasons
