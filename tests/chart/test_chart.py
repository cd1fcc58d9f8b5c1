"""The Helm chart, rendered and linted by the real helm v4 binary.

Every manifest is validated offline against the Kubernetes OpenAPI schemas
(kubernetes-validate); RBAC and security contexts are asserted field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.rendering import (
    CHART,
    KUBE_VERSION,
    NAMESPACE,
    of_kind,
    refused_by_schema,
    render,
    values_file,
)
from tests.support.paths import REPO
from whisperfleet_operator.settings import OperatorSettings

pytestmark = pytest.mark.slow  # runs the helm binary

ALL_NAMESPACES: dict[str, Any] = {}
ONE_NAMESPACE = {"watchNamespaces": ["team-a"]}
TWO_NAMESPACES = {"watchNamespaces": ["team-a", "team-b"], "peering": {"enabled": True}}
CUSTOM_IMAGES = {
    "image": {"repository": "registry.example.com/ml/wf-operator", "tag": "1.2.3",
              "pullPolicy": "Always"},
    "imagePullSecrets": [{"name": "regcred"}],
    "runner": {
        "image": {"repository": "registry.example.com/ml/wf-runner", "tag": "1.2.3-cuda12",
                  "digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
        # The chart's first form (plain names) still works, mixed with the pod spec's.
        "imagePullSecrets": ["regcred", {"name": "mirror"}],
        "modelCacheClaim": "whisper-models",
        "workerResources": {"requests": {"cpu": "4", "memory": "12Gi"}},
    },
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                     "effect": "NoSchedule"}],
    "peering": {"enabled": True, "name": "wf-peers"},
    "logLevel": "debug",
    "metrics": {"port": 9100, "progressIntervalSeconds": 5},
}
# The uid and gid left to the platform (OpenShift restricted-v2), with the staging Job.
PLATFORM_IDS = {
    "podSecurityContext": {"runAsUser": None, "runAsGroup": None},
    "runner": {"runAsUser": None, "runAsGroup": None, "modelCacheClaim": "models"},
    "modelStaging": {"enabled": True, "models": ["tiny.en"]},
}
# A second, renamed release with the operator's scheduling and security contexts set.
RENAMED_AND_SCHEDULED = {
    "fullnameOverride": "speech", "userRoles": {"enabled": False},
    "watchNamespaces": ["team-a"],
    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                   "whenUnsatisfiable": "DoNotSchedule",
                                   "labelSelector": {"matchLabels": {
                                       "app.kubernetes.io/instance": "wf"}}}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                         "labelSelector": {"matchLabels": {
                                             "app.kubernetes.io/instance": "wf"}}}}]}},
    "priorityClassName": "system-cluster-critical",
    "podAnnotations": {"example.com/owner": "speech"}, "podLabels": {"team": "speech"},
    "podSecurityContext": {"fsGroup": 1000, "supplementalGroups": [4000]},
    "securityContext": {"seLinuxOptions": {"level": "s0:c1,c2"}},
}
# Two operator replicas, one active (kopf peering), spread over nodes.
REPLICATED = {"replicaCount": 2, "peering": {"enabled": True, "lifetimeSeconds": 20},
              "watchNamespaces": ["team-a", "team-b"],
              "topologySpreadConstraints": [{
                  "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                  "whenUnsatisfiable": "ScheduleAnyway",
                  "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}}}]}
SCENARIOS = {
    "defaults": ALL_NAMESPACES,
    "replicated": REPLICATED,
    "one-namespace": ONE_NAMESPACE,
    "two-namespaces-peering": TWO_NAMESPACES,
    "custom-images": CUSTOM_IMAGES,
    "platform-ids": PLATFORM_IDS,
    "renamed-and-scheduled": RENAMED_AND_SCHEDULED,
}

# The operator's RBAC, rule by rule: (apiGroup, resource) -> verbs. Nothing more, nothing less.
NAMESPACED_RULES = {
    ("whisperfleet.io", "transcriptionjobs"): {"get", "list", "watch", "patch", "delete"},
    ("whisperfleet.io", "transcriptionjobs/status"): {"patch"},
    ("whisperfleet.io", "transcriptionjobs/finalizers"): {"update"},
    ("batch", "jobs"): {"create", "get", "list", "watch", "patch", "delete"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "events"): {"create"},
    ("resource.k8s.io", "resourceclaimtemplates"): {"create", "get", "list", "delete"},
    ("kueue.x-k8s.io", "workloads"): {"list", "patch"},
}
CLUSTER_ONLY_RULES = {("apiextensions.k8s.io", "customresourcedefinitions"): {"list", "watch"}}


def operator_deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment


def operator_cluster_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ClusterRoles bound to the operator (not the user roles the chart also ships)."""
    bound = {b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")}
    return [r for r in of_kind(docs, "ClusterRole") if r["metadata"]["name"] in bound]


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    found: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                found.setdefault((group, resource), set()).update(rule["verbs"])
    return found


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.fixture(scope="module")
def rendered(helm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    return {name: render(helm, tmp_path_factory.mktemp(name), values)
            for name, values in SCENARIOS.items()}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_is_clean(helm: Any, tmp_path: Path, scenario: str) -> None:
    result = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                  "-f", values_file(tmp_path, SCENARIOS[scenario]))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_rendered_manifest_is_valid_kubernetes(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    for doc in rendered[scenario]:
        if doc["apiVersion"].startswith("kopf.dev/"):
            continue  # kopf's own peering CRD: no upstream schema to check against
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def test_the_chart_crd_is_the_repository_crd_byte_for_byte() -> None:
    source = REPO / "crds" / "transcriptionjob.yaml"
    copy = CHART / "crds" / "transcriptionjob.yaml"
    assert copy.read_bytes() == source.read_bytes(), f"run: cp {source} {copy}"
    crd = yaml.safe_load(copy.read_text())
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    assert crd["spec"]["names"]["shortNames"] == ["tj"]


def test_all_namespaces_uses_a_cluster_role_with_exactly_the_operators_verbs(
    rendered: dict[str, list[dict]],
) -> None:
    docs = rendered["defaults"]
    (role,) = operator_cluster_roles(docs)
    assert rules_of(role) == NAMESPACED_RULES | CLUSTER_ONLY_RULES
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    (sa,) = of_kind(docs, "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert not of_kind(docs, "Role") and not of_kind(docs, "RoleBinding")
    pod = operator_deployment(docs)["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    args = pod["containers"][0]["args"]
    assert "--all-namespaces" in args and not any(a.startswith("--namespace") for a in args)


@pytest.mark.parametrize("scenario", ["one-namespace", "two-namespaces-peering"])
def test_watched_namespaces_get_roles_and_no_cluster_scoped_rights(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    docs = rendered[scenario]
    watched = SCENARIOS[scenario]["watchNamespaces"]
    assert not operator_cluster_roles(docs) and not of_kind(docs, "ClusterRoleBinding")
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted(watched)
    peering = SCENARIOS[scenario].get("peering", {}).get("enabled", False)
    expected = NAMESPACED_RULES | (
        {("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"}} if peering else {}
    )
    for role in roles:
        assert rules_of(role) == expected
    bindings = of_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted(watched)
    for binding in bindings:
        assert binding["subjects"][0]["namespace"] == NAMESPACE
    container = operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in container["args"] if a.startswith("--namespace")] == [
        f"--namespace={ns}" for ns in watched
    ]
    assert "--all-namespaces" not in container["args"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rbac_has_no_wildcards_and_never_reads_secrets(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    roles = [d for d in rendered[scenario] if d["kind"] in ("Role", "ClusterRole")]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule
            assert not {"secrets", "configmaps"} & set(rule["resources"]), rule
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), rule


def test_peering_is_standalone_by_default_and_scoped_when_enabled(
    rendered: dict[str, list[dict]],
) -> None:
    default_args = operator_deployment(rendered["defaults"])["spec"]["template"]["spec"][
        "containers"][0]["args"]
    assert "--standalone" in default_args
    assert not [d for d in rendered["defaults"] if d["apiVersion"].startswith("kopf.dev/")]
    docs = rendered["custom-images"]  # all namespaces + peering
    args = operator_deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=wf-peers" in args and "--standalone" not in args
    (role,) = operator_cluster_roles(docs)
    assert rules_of(role)[("kopf.dev", "clusterkopfpeerings")] == {"get", "list", "watch", "patch"}
    assert [d["metadata"]["name"] for d in of_kind(docs, "ClusterKopfPeering")] == ["wf-peers"]
    namespaced = of_kind(rendered["two-namespaces-peering"], "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in namespaced) == ["team-a", "team-b"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_operator_runs_kopf_once_with_a_liveness_probe(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    deployment = operator_deployment(rendered[scenario])
    if scenario == "replicated":  # peered: one active, the others paused (test_conventions)
        assert deployment["spec"]["replicas"] == 2
        assert "--peering=wf-whisperfleet" in deployment["spec"]["template"]["spec"][
            "containers"][0]["args"]
    else:
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["kopf"]
    assert container["args"][:2] == ["run", "--module=whisperfleet_operator"]
    (liveness_arg,) = [a for a in container["args"] if a.startswith("--liveness=")]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["health"]
    assert liveness_arg == f"--liveness=http://0.0.0.0:{port}/healthz"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_operator_pod_meets_the_restricted_pod_security_standard(
    rendered: dict[str, list[dict]], scenario: str
) -> None:
    pod = operator_deployment(rendered[scenario])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # A uid, when named, is not root (platform-ids names none: the platform assigns one).
    assert pod["securityContext"].get("runAsUser", 1) > 0
    assert ("runAsUser" in pod["securityContext"]) == (scenario != "platform-ids")
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in pod and "hostPID" not in pod and "hostIPC" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all(set(v) == {"name", "emptyDir"} for v in volumes.values())  # no hostPath etc.
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["runAsNonRoot"] is True
        assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "privileged" not in ctx
        # The one writable path is an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_default_values_hand_the_operator_its_own_defaults(
    rendered: dict[str, list[dict]],
) -> None:
    """The chart's documented runner defaults are exactly what the operator would assume."""
    container = operator_deployment(rendered["defaults"])["spec"]["template"]["spec"][
        "containers"][0]
    assert container["image"] == "ghcr.io/whisperfleet/whisperfleet-operator:0.1.0"
    from_chart = OperatorSettings.from_env(env_of(container))
    assert from_chart == OperatorSettings()


def test_custom_images_and_runner_defaults_reach_the_operator(
    rendered: dict[str, list[dict]],
) -> None:
    pod = operator_deployment(rendered["custom-images"])["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example.com/ml/wf-operator:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == CUSTOM_IMAGES["tolerations"]
    assert "--debug" in container["args"]
    settings = OperatorSettings.from_env(env_of(container))
    assert settings.runner_image == "registry.example.com/ml/wf-runner@sha256:" + "ab" * 32
    assert settings.image_pull_policy == "Always"
    assert settings.image_pull_secrets == ("regcred", "mirror")
    assert settings.model_cache_claim == "whisper-models"
    # Helm merges maps: the default memory limit stays unless the user nulls it.
    assert settings.worker_resources == {"requests": {"cpu": "4", "memory": "12Gi"},
                                         "limits": {"memory": "16Gi"}}
    assert (settings.metrics_port, settings.progress_interval_seconds) == (9100, 5)


def test_notes_tell_the_user_how_to_apply_and_watch_a_job(helm: Any, tmp_path: Path) -> None:
    # `helm template` omits NOTES.txt; a client-side dry run renders it without a cluster.
    out = helm("install", "wf", str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
               "-f", values_file(tmp_path, ONE_NAMESPACE)).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "kubectl -n team-a get tj -w" in notes
    assert "kubectl -n team-a apply -f" in notes
    assert "create secret generic" in notes
    assert "rollout status deployment/wf-whisperfleet" in notes and NAMESPACE in notes


@pytest.mark.parametrize(("scenario", "operator_image", "runner_image"), [
    ("defaults", "ghcr.io/whisperfleet/whisperfleet-operator:0.1.0",
     "ghcr.io/whisperfleet/whisperfleet-runner:0.1.0"),
    ("custom-images", "registry.example.com/ml/wf-operator:1.2.3",
     "registry.example.com/ml/wf-runner@sha256:" + "ab" * 32),
])
def test_notes_name_the_images_and_say_what_an_image_pull_back_off_means(
        helm: Any, tmp_path: Path, scenario: str, operator_image: str, runner_image: str) -> None:
    out = helm("install", "wf", str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
               "-f", values_file(tmp_path, SCENARIOS[scenario])).stdout
    notes = out.split("NOTES:", 1)[1]
    assert "no one publishes" in notes
    assert f"operator: {operator_image}\n" in notes and f"runner:   {runner_image}\n" in notes
    # Build and push under a tag (a digest is what the registry gives back, not a build tag).
    runner_tag = runner_image.replace("@sha256:" + "ab" * 32, ":1.2.3-cuda12")
    assert f"docker build -f operator/Dockerfile   -t {operator_image} ." in notes
    assert f"docker build -f job_runner/Dockerfile -t {runner_tag} ." in notes
    assert f"docker push {runner_tag}" in notes
    assert "ImagePullBackOff" in notes and "imagePullSecrets" in notes
    secrets = {"defaults": ("[]", "[]"), "custom-images": ("[regcred]", "[regcred, mirror]")}
    operator_secrets, runner_secrets = secrets[scenario]
    assert f"imagePullSecrets:        {operator_secrets}  (the operator's, in {NAMESPACE})" in notes
    assert f"runner.imagePullSecrets: {runner_secrets}  (in each namespace" in notes


BAD_VALUES = {
    "pull policy typo": ({"image": {"repository": "r/op", "tag": "1", "pullPolicy": "Sometimes"}},
                         "/image/pullPolicy"),
    "namespace not a DNS label": ({"watchNamespaces": ["Team_A"]}, "/watchNamespaces/0"),
    "namespaces as a string": ({"watchNamespaces": "team-a"}, "/watchNamespaces"),
    "unknown top-level key": ({"runnerImage": "x"}, "runnerImage"),
    "unknown runner key": ({"runner": {"image": {"repository": "r/x", "tag": "1",
                                                 "pullPolicy": "Always"}, "gpus": 2}},
                           "gpus"),
    "image tag with a colon": ({"runner": {"image": {"repository": "r/x", "tag": "a:b",
                                                     "pullPolicy": "Always"}}},
                               "/runner/image/tag"),
    "bad digest": ({"image": {"repository": "r/op", "tag": "", "digest": "sha256:xyz",
                              "pullPolicy": "Always"}}, "/image/digest"),
    "root runner user": ({"runner": {"image": {"repository": "r/x", "tag": "1",
                                               "pullPolicy": "Always"}, "runAsUser": 0}},
                         "/runner/runAsUser"),
    "cpu not a quantity": ({"resources": {"requests": {"cpu": "lots"}}},
                           "/resources/requests/cpu"),
    "existing SA without a name": ({"serviceAccount": {"create": False}}, "/serviceAccount"),
    "log level typo": ({"logLevel": "loud"}, "/logLevel"),
    "metrics port out of range": ({"metrics": {"port": 70000}}, "/metrics/port"),
    "progress every 0 seconds": ({"metrics": {"progressIntervalSeconds": 0}},
                                 "/metrics/progressIntervalSeconds"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_are_refused_with_the_field_named(
    helm: Any, tmp_path: Path, case: str
) -> None:
    values, field = BAD_VALUES[case]
    refused_by_schema(helm, tmp_path, values, field)
