"""Ids left to the platform, admitted by the real API server under a policy that refuses
fixed ones.

OpenShift's `restricted-v2` SCC assigns each pod a uid (and fsGroup) from its namespace's
range and refuses a pod that names another. No OpenShift runs here; its rule is emulated
in-cluster by a ValidatingAdmissionPolicy (CEL, evaluated by the API server) that refuses
every pod naming a uid, gid or fsGroup. What the stand-in does not do: assign the ids
(OpenShift's mutating SCC admission) or check SELinux levels. The namespace also enforces
the `restricted` Pod Security Standard, as everywhere here.

The chart rendered with the uid/gid defaults nulled must pass, for the operator's own pod
and for the runner pods its operator builds (planner and worker, from the settings the
chart hands the operator); the chart's defaults must be refused, so the policy bites.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cluster.admission import Admission, resource_path, tj
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.test_built_objects_admitted import pod_of
from tests.cluster.transcription_jobs import tj_path
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import Release
from tests.support.paths import CHART
from whisperfleet_operator import spec
from whisperfleet_operator.builders import jobs
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_runner import contract

pytestmark = [pytest.mark.slow]
Obj = dict[str, Any]
POLICY = "test-assigned-ids"
NAMESPACE_LABEL = "whisperfleet.test/assigned-ids"
MESSAGE = "the platform assigns uid, gid and fsGroup here"
PLATFORM_IDS = {"podSecurityContext": {"runAsUser": None, "runAsGroup": None},
                "runner": {"runAsUser": None, "runAsGroup": None}}
NO_FIXED_IDS = " && ".join(f"!has({{ctx}}.{field})" for field in
                           ("runAsUser", "runAsGroup"))


def _containers_rule(field: str) -> str:
    inner = NO_FIXED_IDS.format(ctx="c.securityContext")
    rule = f"object.spec.{field}.all(c, !has(c.securityContext) || ({inner}))"
    return rule if field == "containers" else f"!has(object.spec.{field}) || {rule}"


def policy() -> tuple[Obj, Obj]:
    pod_ids = NO_FIXED_IDS.format(ctx="object.spec.securityContext")
    selector = {"matchLabels": {NAMESPACE_LABEL: "true"}}
    refuse = {
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": selector,
                "resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                   "operations": ["CREATE", "UPDATE"],
                                   "resources": ["pods"]}]},
            "validations": [
                {"expression": "!has(object.spec.securityContext) || "
                               f"({pod_ids} && !has(object.spec.securityContext.fsGroup))",
                 "message": f"{MESSAGE} (pod securityContext)"},
                *({"expression": _containers_rule(field),
                   "message": f"{MESSAGE} ({field})"}
                  for field in ("containers", "initContainers", "ephemeralContainers")),
            ]}}
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": selector}}}
    return refuse, binding


@pytest.fixture(scope="module")
def admission(cluster: LocalCluster) -> Admission:
    return Admission(cluster.api_client())


@pytest.fixture
def assigned_ids(cluster: LocalCluster, namespace: str) -> Iterator[str]:
    """`namespace`, under the policy refusing fixed ids (made for this test, then removed)."""
    rest = cluster.rest()
    base = "/apis/admissionregistration.k8s.io/v1"
    refuse, binding = policy()
    rest.create(f"{base}/validatingadmissionpolicies", refuse)
    rest.create(f"{base}/validatingadmissionpolicybindings", binding)
    rest.merge_patch(f"/api/v1/namespaces/{namespace}",
                     {"metadata": {"labels": {NAMESPACE_LABEL: "true"}}})
    try:
        yield namespace
    finally:
        rest.delete(f"{base}/validatingadmissionpolicybindings/{POLICY}", {})
        rest.delete(f"{base}/validatingadmissionpolicies/{POLICY}", {})


def rendered(cluster: LocalCluster, namespace: str, values: Obj) -> list[Obj]:
    path = cluster.state_dir / f"values-ids-{namespace}-{len(values)}.yaml"
    path.write_text(yaml.safe_dump(values))
    out = cluster.helm("template", "ids", str(CHART), "--namespace", namespace,
                       "-f", str(path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def operator_pod(docs: list[Obj]) -> Obj:
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    template = deployment["spec"]["template"]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "operator-", "labels": template["metadata"]["labels"]},
            "spec": template["spec"]}


def settings_of(docs: list[Obj]) -> OperatorSettings:
    (container,) = operator_pod(docs)["spec"]["containers"]
    return OperatorSettings.from_env({e["name"]: e["value"] for e in container["env"]
                                      if "value" in e})


def runner_pods(admission: Admission, namespace: str, settings: OperatorSettings) -> list[Obj]:
    """The planner's pod and a worker's pod, as the Job controller would make them."""
    answer = admission.create(tj_path(namespace), tj("ids"))
    assert answer.accepted, answer
    job = spec.parse(answer.body)
    plan = contract.PlanReport(files=4, bytes=10**6, shards=2)
    return [pod_of(jobs.build_planner_job(job, settings), None),
            pod_of(jobs.build_worker_job(job, plan, settings), 1)]


def test_pods_with_ids_left_to_the_platform_are_admitted_where_fixed_ones_are_refused(
        cluster: LocalCluster, admission: Admission, assigned_ids: str,
        release: Release) -> None:
    ns = assigned_ids
    platform, defaults = rendered(cluster, ns, PLATFORM_IDS), rendered(cluster, ns, {})
    # The pods name the chart's ServiceAccount: it must exist for them to be admitted.
    (account,) = [d for d in platform if d["kind"] == "ServiceAccount"]
    cluster.rest().create(f"/api/v1/namespaces/{ns}/serviceaccounts", account)

    def refused(pod: Obj) -> str:
        answer = admission.create(resource_path(pod, ns), pod)
        return "" if answer.accepted else answer.message

    # The policy takes effect once the API server has loaded it: the defaults then fail.
    eventually(lambda: MESSAGE in refused(operator_pod(defaults)), timeout=60,
               what="the policy refusing a fixed uid")
    assert refused(operator_pod(platform)) == ""
    for pod in runner_pods(admission, ns, settings_of(platform)):
        assert refused(pod) == "", pod["metadata"]["generateName"]
    for pod in runner_pods(admission, ns, settings_of(defaults)):
        assert MESSAGE in refused(pod), pod["metadata"]["generateName"]
