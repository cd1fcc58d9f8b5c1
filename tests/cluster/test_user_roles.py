"""The chart's user-facing ClusterRoles, aggregated by the real controller-manager into the
built-in `edit` and `view` roles (the API server's bootstrap policy) and checked by the real
authorizer: a tenant bound only to `edit` in one namespace runs TranscriptionJobs there and
nowhere else."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from tests.cluster.admission import Admission, tj
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import POD_SECURITY_LABELS
from tests.cluster.transcription_jobs import tj_path
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import Release

pytestmark = [pytest.mark.slow]
RBAC = "/apis/rbac.authorization.k8s.io/v1"


@pytest.fixture
def two_namespaces(cluster: LocalCluster) -> Iterator[tuple[str, str]]:
    rest = cluster.rest()
    names = tuple(f"tenant-{uuid.uuid4().hex[:6]}" for _ in range(2))
    for name in names:
        rest.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": name,
                                                        "labels": POD_SECURITY_LABELS}})
    yield names[0], names[1]
    for name in names:
        rest.delete(f"/api/v1/namespaces/{name}", {"propagationPolicy": "Background"})


def bind(cluster: LocalCluster, namespace: str, user: str, cluster_role: str) -> None:
    cluster.rest().create(f"{RBAC}/namespaces/{namespace}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{cluster_role}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})


def can(cluster: LocalCluster, user: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", *args, as_user=user, check=False)
    return result.stdout.strip() == "yes"


def test_the_built_in_roles_exist_and_take_in_the_charts_roles(
        cluster: LocalCluster, release: Release) -> None:
    rest = cluster.rest()
    for role in ("edit", "view", "admin"):
        assert rest.get(f"{RBAC}/clusterroles/{role}") is not None, role

    def aggregated(role: str) -> set[str]:
        found = rest.get(f"{RBAC}/clusterroles/{role}") or {}
        return {r for rule in found.get("rules") or [] for r in rule.get("resources", [])
                if "whisperfleet.io" in rule.get("apiGroups", [])}

    for role in ("edit", "admin", "view"):
        eventually(lambda role=role: "transcriptionjobs" in aggregated(role), timeout=60,
                   what=f"TranscriptionJobs aggregated into {role}")


def test_a_tenant_with_edit_runs_jobs_in_its_namespace_only(
        cluster: LocalCluster, release: Release, two_namespaces: tuple[str, str]) -> None:
    mine, theirs = two_namespaces
    alice, bob = f"alice-{mine}", f"bob-{mine}"
    bind(cluster, mine, alice, "edit")
    bind(cluster, mine, bob, "view")
    tjs = "transcriptionjobs.whisperfleet.io"
    eventually(lambda: can(cluster, alice, "create", tjs, "-n", mine), timeout=60,
               what="edit to grant creating TranscriptionJobs")
    # alice creates one for real, as herself (impersonated through the real authorizer).
    as_alice = cluster.kubectl("create", "-n", mine, "-f", "-", "-o", "name", as_user=alice,
                               input=json.dumps(tj("mine")))
    assert as_alice.stdout.strip() == "transcriptionjob.whisperfleet.io/mine"
    for verb in ("get", "list", "watch", "delete", "patch"):
        assert can(cluster, alice, verb, tjs, "-n", mine), verb
    assert can(cluster, alice, "patch", tjs, "--subresource=scale", "-n", mine)
    assert can(cluster, alice, "list", "events", "-n", mine)
    # Nothing in the other namespace, and not the operator's part (status) either.
    for verb in ("get", "list", "create"):
        assert not can(cluster, alice, verb, tjs, "-n", theirs), verb
    assert not can(cluster, alice, "list", tjs, "-A")
    assert not can(cluster, alice, "patch", tjs, "--subresource=status", "-n", mine)
    refused = cluster.kubectl("get", "tj", "-n", theirs, as_user=alice, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr, refused.stderr
    # view reads and never writes.
    assert can(cluster, bob, "list", tjs, "-n", mine)
    assert not can(cluster, bob, "create", tjs, "-n", mine)
    assert not can(cluster, bob, "delete", tjs, "-n", mine)
    created = Admission(cluster.api_client()).get(f"{tj_path(mine)}/mine")
    assert created.accepted
