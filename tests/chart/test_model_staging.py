"""The chart's model staging Job and hub settings, rendered by the real helm: the Job fills
the model PVC (or an object-storage prefix) with `whisperfleet models pull`, under the
restricted Pod Security Standard, with the same hub settings the operator gives worker
pods (one source: the chart's values; this test checks that both renderings agree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.chart.rendering import KUBE_VERSION, of_kind, refused_by_schema, render
from whisperfleet_operator.builders.hub import hub_settings
from whisperfleet_operator.settings import OperatorSettings

HUB = {"offline": False, "endpoint": "https://hf-mirror.example.com",
       "tokenSecret": {"name": "hub-token", "key": "token"},
       "caBundle": {"configMap": "corp-ca", "key": "bundle.pem"}}
ON_PVC = {"runner": {"modelCacheClaim": "whisper-models", "hub": HUB},
          "modelStaging": {"enabled": True, "models": ["large-v3", "Systran/faster-whisper-small"]}}


def staging_jobs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in of_kind(docs, "Job")
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "model-staging"]


def only_container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_no_staging_job_unless_enabled(helm: Any, tmp_path: Path) -> None:
    assert staging_jobs(render(helm, tmp_path, {"runner": {"modelCacheClaim": "m"}})) == []


def test_the_job_fills_the_model_pvc_under_restricted_pod_security(
        helm: Any, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, ON_PVC)
    (job,) = staging_jobs(docs)
    kubernetes_validate.validate(job, KUBE_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    container = only_container(job)
    assert container["command"] == ["whisperfleet"]
    assert container["args"] == ["models", "pull", "large-v3", "Systran/faster-whisper-small",
                                 "--into", "$(WHISPERFLEET_STAGE_INTO)",
                                 "--model-cache", "/tmp/hub"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["WHISPERFLEET_STAGE_INTO"] == "/models"
    (models,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert models["persistentVolumeClaim"] == {"claimName": "whisper-models"}
    assert {"name": models["name"], "mountPath": "/models"} in container["volumeMounts"]
    # restricted: non-root, no token, no privilege, read-only root with emptyDirs.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    ctx = container["securityContext"]
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False


def test_the_job_and_the_worker_pods_get_the_same_hub_settings(
        helm: Any, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, ON_PVC)
    (deployment,) = of_kind(docs, "Deployment")
    operator_env = {e["name"]: e["value"]
                    for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]
                    if "value" in e}
    settings = OperatorSettings.from_env(operator_env)
    assert (settings.hub_endpoint, settings.hub_token_secret, settings.hub_ca_configmap) == (
        "https://hf-mirror.example.com", "hub-token", "corp-ca")
    env, volumes, mounts = hub_settings(settings)
    (job,) = staging_jobs(docs)
    container = only_container(job)
    hub_names = {e["name"] for e in env}
    assert [e for e in container["env"] if e["name"] in hub_names] == env
    assert "HF_HUB_OFFLINE" not in hub_names  # hub.offline is false here
    assert [v for v in job["spec"]["template"]["spec"]["volumes"] if "configMap" in v] == volumes
    assert [m for m in container["volumeMounts"] if m["name"] == mounts[0]["name"]] == mounts
    # The token only by reference.
    (token,) = [e for e in container["env"] if e["name"] == "HF_TOKEN"]
    assert token == {"name": "HF_TOKEN",
                     "valueFrom": {"secretKeyRef": {"name": "hub-token", "key": "token"}}}


def test_staging_to_object_storage_uses_the_storage_secret_and_no_volume(
        helm: Any, tmp_path: Path) -> None:
    values = {"modelStaging": {"enabled": True, "models": ["large-v3"],
                               "to": "s3://models/whisper/", "storageSecret": "s3-credentials",
                               "endpoint": "http://minio.minio:9000"}}
    (job,) = staging_jobs(render(helm, tmp_path, values))
    container = only_container(job)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["WHISPERFLEET_STAGE_INTO"] == "s3://models/whisper/"
    assert env["AWS_ENDPOINT_URL"] == "http://minio.minio:9000"
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert not [v for v in job["spec"]["template"]["spec"]["volumes"]
                if "persistentVolumeClaim" in v]


def test_the_job_is_renamed_when_its_settings_change_only(helm: Any, tmp_path: Path) -> None:
    def name(values: dict[str, Any], sub: str) -> str:
        (job,) = staging_jobs(render(helm, tmp_path / sub, values))
        return str(job["metadata"]["name"])

    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()
    more = {**ON_PVC, "modelStaging": {"enabled": True, "models": ["large-v3", "turbo"]}}
    assert name(ON_PVC, "a") == name(ON_PVC, "b") != name(more, "c")


def test_staging_without_a_place_to_stage_is_refused(helm: Any, tmp_path: Path) -> None:
    from tests.chart.rendering import CHART, values_file

    result = helm("template", "wf", str(CHART), "-f", values_file(tmp_path, {
        "modelStaging": {"enabled": True, "models": ["large-v3"]}}), check=False)
    assert result.returncode != 0
    assert "modelStaging.to (object storage) or runner.modelCacheClaim" in result.stderr


@pytest.mark.parametrize(("values", "field"), [
    ({"runner": {"hub": {**HUB, "endpoint": "hf-mirror:8080"}}}, "endpoint"),
    ({"modelStaging": {"enabled": True, "models": ["large-v3"], "to": "http://m/"}}, "to"),
    ({"modelStaging": {"enabled": True, "models": []}}, "models"),
    ({"modelStaging": {"enabled": True, "models": ["../etc"]}}, "models"),
])
def test_bad_staging_and_hub_values_are_refused_naming_the_field(
        helm: Any, tmp_path: Path, values: dict[str, Any], field: str) -> None:
    refused_by_schema(helm, tmp_path, values, field)
