"""The values platform teams set on every chart they run (as on Kueue's and KubeRay's):
pull Secrets as a pod spec names them, name overrides, whole security contexts, scheduling,
ids left to the platform, and the user-facing ClusterRoles. Rendered by the real helm v4."""

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
)
from whisperfleet_operator.builders.pods import pod_security_context
from whisperfleet_operator.settings import OperatorSettings

pytestmark = pytest.mark.slow  # runs the helm binary

Obj = dict[str, Any]


def operator_pod(docs: list[Obj]) -> Obj:
    (deployment,) = of_kind(docs, "Deployment")
    return deployment["spec"]["template"]


def operator_env(docs: list[Obj]) -> dict[str, str]:
    (container,) = operator_pod(docs)["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_pull_secrets_set_the_way_every_chart_takes_them(helm: Any) -> None:
    out = helm("template", "wf", str(CHART), "--namespace", NAMESPACE,
               "--set", "imagePullSecrets[0].name=regcred",
               "--set", "runner.imagePullSecrets[0].name=regcred",
               "--set", "runner.imagePullSecrets[1].name=mirror").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert operator_pod(docs)["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    settings = OperatorSettings.from_env(operator_env(docs))
    assert settings.image_pull_secrets == ("regcred", "mirror")


def test_a_pull_secret_without_a_name_is_refused(helm: Any, tmp_path: Path) -> None:
    refused_by_schema(helm, tmp_path, {"imagePullSecrets": [{"secret": "regcred"}]},
                      "/imagePullSecrets/0")


def names_of(docs: list[Obj]) -> set[tuple[str, str, str]]:
    return {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"])
            for d in docs}


def test_two_releases_in_one_namespace_share_no_object(helm: Any, tmp_path: Path) -> None:
    """Releases beside the first (user roles off: they are cluster-wide and the first has
    them), one renamed: every object each makes has a name of its own."""
    first = render(helm, tmp_path / "a", {"peering": {"enabled": True}})
    second = render(helm, tmp_path / "b", {"nameOverride": "transcribe",
                                           "peering": {"enabled": True},
                                           "userRoles": {"enabled": False}})
    third = render(helm, tmp_path / "c", {"fullnameOverride": "speech-ops",
                                          "peering": {"enabled": True},
                                          "userRoles": {"enabled": False}}, release="wf2")
    assert not names_of(first) & names_of(second)
    assert not names_of(first) & names_of(third)
    assert not names_of(second) & names_of(third)
    (deployment,) = of_kind(third, "Deployment")
    assert deployment["metadata"]["name"] == "speech-ops"
    (deployment,) = of_kind(second, "Deployment")
    assert deployment["metadata"]["name"] == "wf-transcribe"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "transcribe"
    # Each release's operator elects its leader among its own replicas only.
    peerings = [{a for a in operator_pod(docs)["spec"]["containers"][0]["args"]
                 if a.startswith("--peering=")} for docs in (first, second, third)]
    assert peerings == [{"--peering=wf-whisperfleet"}, {"--peering=wf-transcribe"},
                        {"--peering=speech-ops"}]


def test_security_contexts_and_scheduling_are_passed_through_whole(
        helm: Any, tmp_path: Path) -> None:
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
               "whenUnsatisfiable": "ScheduleAnyway",
               "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}}}]
    docs = render(helm, tmp_path, {
        "podSecurityContext": {"runAsUser": 2000, "fsGroup": 2000,
                               "supplementalGroups": [3000]},
        "securityContext": {"seLinuxOptions": {"level": "s0:c123,c456"}},
        "topologySpreadConstraints": spread,
        "priorityClassName": "system-cluster-critical",
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "node-role.kubernetes.io/infra", "operator": "Exists"}]}]}}},
        "podAnnotations": {"example.com/team": "speech"},
        "podLabels": {"cost-center": "ml"},
        "resources": {"requests": {"cpu": "200m"}},
    })
    template = operator_pod(docs)
    pod = template["spec"]
    # Maps merge into the restricted defaults: what the user gave is added or replaced.
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 2000,
                                      "runAsGroup": 1000, "fsGroup": 2000,
                                      "supplementalGroups": [3000],
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert container["securityContext"]["seLinuxOptions"] == {"level": "s0:c123,c456"}
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["topologySpreadConstraints"] == spread
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert "nodeAffinity" in pod["affinity"]
    assert template["metadata"]["annotations"]["example.com/team"] == "speech"
    assert template["metadata"]["labels"]["cost-center"] == "ml"
    assert container["resources"]["requests"] == {"cpu": "200m", "memory": "128Mi"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


PLATFORM_IDS = {"podSecurityContext": {"runAsUser": None, "runAsGroup": None},
                "runner": {"runAsUser": None, "runAsGroup": None}}


def test_ids_left_to_the_platform_name_no_uid_in_any_pod(helm: Any, tmp_path: Path) -> None:
    """null drops the uid/gid defaults (OpenShift's restricted-v2 assigns both): the
    operator's pod names none, nor do the runner pods it builds or the staging Job."""
    values = {**PLATFORM_IDS, "runner": {**PLATFORM_IDS["runner"],
                                         "modelCacheClaim": "models"},
              "modelStaging": {"enabled": True, "models": ["tiny.en"]}}
    docs = render(helm, tmp_path, values)
    pod = operator_pod(docs)["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    settings = OperatorSettings.from_env(operator_env(docs))
    assert (settings.run_as_user, settings.run_as_group) == (None, None)
    assert pod_security_context(settings) == {"runAsNonRoot": True,
                                              "seccompProfile": {"type": "RuntimeDefault"}}
    (staging,) = of_kind(docs, "Job")
    context = staging["spec"]["template"]["spec"]["securityContext"]
    assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(context), context
    assert context["runAsNonRoot"] is True


def test_fixed_ids_stay_the_default(helm: Any, tmp_path: Path) -> None:
    settings = OperatorSettings.from_env(operator_env(render(helm, tmp_path, {})))
    assert pod_security_context(settings)["runAsUser"] == 1000
    assert pod_security_context(settings)["fsGroup"] == 1000


@pytest.mark.parametrize(("values", "field"), [
    ({"podSecurityContext": {"runAsUSer": 1000}}, "runAsUSer"),
    ({"securityContext": {"capabilities": {"dorp": ["ALL"]}}}, "dorp"),
    ({"podSecurityContext": {"runAsUser": 0}}, "/podSecurityContext/runAsUser"),
    ({"securityContext": {"seccompProfile": {"type": "Default"}}},
     "/securityContext/seccompProfile"),
    ({"nameOverride": "Whisper_Fleet"}, "/nameOverride"),
    ({"topologySpreadConstraints": {"maxSkew": 1}}, "/topologySpreadConstraints"),
    ({"userRoles": {"enabled": "yes"}}, "/userRoles/enabled"),
])
def test_bad_conventional_values_are_refused_with_the_field_named(
        helm: Any, tmp_path: Path, values: Obj, field: str) -> None:
    refused_by_schema(helm, tmp_path, values, field)


def test_user_roles_aggregate_into_edit_admin_and_view(helm: Any, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"fullnameOverride": "whisperfleet"})
    roles = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole")}
    user, viewer = roles["whisperfleet-user"], roles["whisperfleet-viewer"]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in user["metadata"]["labels"].items()
            if k.startswith(aggregate) and v == "true"} == {aggregate + "edit",
                                                            aggregate + "admin"}
    assert {k for k, v in viewer["metadata"]["labels"].items()
            if k.startswith(aggregate) and v == "true"} == {aggregate + "view"}
    for rule in viewer["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}, rule
    off = render(helm, tmp_path / "off", {"userRoles": {"enabled": False}})
    assert [r["metadata"]["name"] for r in of_kind(off, "ClusterRole")] == ["wf-whisperfleet"]


def test_several_replicas_are_peered_rolled_one_by_one_and_kept_through_drains(
        helm: Any, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"replicaCount": 3, "peering": {"enabled": True,
                                                                  "lifetimeSeconds": 15}})
    (deployment,) = of_kind(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--peering=wf-whisperfleet" in container["args"]
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"])
    assert OperatorSettings.from_env(operator_env(docs)).peering_lifetime_seconds == 15
    (budget,) = of_kind(docs, "PodDisruptionBudget")
    assert budget["spec"]["minAvailable"] == 1
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (peering,) = of_kind(docs, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "wf-whisperfleet"
    for doc in docs:
        if not doc["apiVersion"].startswith("kopf.dev/"):
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    # One replica: no budget (it would block every drain), Recreate.
    single = render(helm, tmp_path / "one", {})
    assert not of_kind(single, "PodDisruptionBudget")


@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": 2}, "replicaCount > 1 needs peering.enabled=true"),
    ({"replicaCount": 2, "peering": {"enabled": True},
      "podDisruptionBudget": {"minAvailable": 2}},
     "podDisruptionBudget.minAvailable must be below replicaCount"),
])
def test_replicas_that_would_clash_or_block_drains_are_refused(
        helm: Any, tmp_path: Path, values: Obj, message: str) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm("template", "wf", str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_the_chart_ships_kopfs_peering_crds() -> None:
    crds = {d["metadata"]["name"]: d for d in yaml.safe_load_all(
        (CHART / "crds" / "kopf-peering.yaml").read_text()) if d}
    assert {name: (crd["spec"]["scope"], crd["spec"]["names"]["kind"])
            for name, crd in crds.items()} == {
        "clusterkopfpeerings.kopf.dev": ("Cluster", "ClusterKopfPeering"),
        "kopfpeerings.kopf.dev": ("Namespaced", "KopfPeering")}
    for crd in crds.values():
        kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
