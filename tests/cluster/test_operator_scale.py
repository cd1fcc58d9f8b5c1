"""The operator among many jobs and many other pods (benchmarks/operator_scale.py, small):
every job gets planned and follows a spec change, and the API server's audit log shows the
operator never asked for a pod that is not whisperfleet's — so no event for the busy rest
of the cluster ever reaches it."""

from __future__ import annotations

import json

import pytest

from tests.cluster.local_cluster import LocalCluster
from tests.cluster.whisperfleet_release import OperatorProcess, Release
from tests.support.benchmark_scripts import benchmark_script

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_many_jobs_among_unrelated_pods(
    cluster: LocalCluster, release: Release, operator: OperatorProcess
) -> None:
    user = f"system:serviceaccount:{release.namespace}:{release.service_account}"
    result = benchmark_script("operator_scale").measure(cluster, operator, user, jobs=12,
                                                        unrelated=300, timeout=600)
    print(json.dumps(result, indent=1))
    assert result["pod_list_and_watch_requests"] > 0
    assert result["without_selector"] == []
    assert result["creation_to_first_status_seconds"]["count"] == 12
    assert result["spec_change_to_worker_job_patch_seconds"]["count"] == 12
    assert result["peak_rss_mib"] > 0
    # The unrelated pods are there, unscheduled: the cluster really was busy.
    pods = cluster.rest().get("/api/v1/namespaces/bystanders/pods") or {}
    assert len(pods.get("items") or []) == 300
