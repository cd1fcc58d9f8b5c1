"""Where worker pods get their model: spec.model.uri (staged in object storage), and the hub
settings for models named rather than staged (a mirror, a token by reference, a CA bundle,
or no hub at all)."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.support.transcription_jobs import parsed
from whisperfleet_operator.builders import jobs, workorder
from whisperfleet_operator.builders.hub import HUB_CA_DIR
from whisperfleet_operator.settings import OperatorSettings
from whisperfleet_runner import contract

PLAN = contract.PlanReport(files=4, bytes=10**6, shards=2, manifest_uri="s3://x/m.jsonl")
HUB = {"WHISPERFLEET_HUB_ENDPOINT": "https://hf-mirror.internal",
       "WHISPERFLEET_HUB_TOKEN_SECRET": "hub-token",
       "WHISPERFLEET_HUB_CA_CONFIGMAP": "corp-ca", "WHISPERFLEET_HUB_CA_KEY": "bundle.pem",
       "WHISPERFLEET_HUB_OFFLINE": "false"}


def worker(settings: OperatorSettings, **spec: Any) -> dict[str, Any]:
    job = jobs.build_worker_job(parsed(**spec), PLAN, settings)
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    return job


def pod_of(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = pod_of(job)["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_a_staged_model_uri_is_what_the_runner_loads() -> None:
    uri = "s3://models/whisper/large-v3/"
    order = workorder.work_order_for(parsed(model={"uri": uri, "computeType": "int8"}))
    assert (order.model.name, order.model.compute_type) == (uri, "int8")
    # No name and no uri: the default model, as before.
    assert workorder.work_order_for(parsed(model={})).model.name == contract.DEFAULT_MODEL


@pytest.mark.parametrize(("model", "message"), [
    ({"name": "large-v3", "uri": "s3://m/large-v3/"}, "give name or uri, not both"),
    ({"uri": "https://huggingface.co/x"}, "spec.model.uri must be an object-storage prefix"),
    ({"uri": "file:///models/large-v3"}, "spec.model.name inside spec.model.cacheVolume"),
    ({"uri": "s3://"}, "spec.model.uri must be"),
])
def test_a_bad_model_source_is_refused_naming_the_field(model: dict[str, str],
                                                        message: str) -> None:
    # What admission refuses; the operator refuses it too when the CRD lacks its rules.
    with pytest.raises(ValueError, match=message):
        workorder.work_order_for(parsed(model=model))


def test_without_hub_settings_worker_pods_get_none_of_them() -> None:
    env = env_of(worker(OperatorSettings()))
    assert not {"HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "SSL_CERT_FILE"} & set(env)


def test_hub_settings_reach_worker_pods_by_reference_only() -> None:
    settings = OperatorSettings.from_env(HUB)
    job = worker(settings)
    env = env_of(job)
    assert env["HF_ENDPOINT"] == "https://hf-mirror.internal"
    # The token by reference: the operator never holds its value.
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hub-token", "key": "HF_TOKEN"}}
    assert env["SSL_CERT_FILE"] == env["REQUESTS_CA_BUNDLE"] == f"{HUB_CA_DIR}/ca.crt"
    assert "HF_HUB_OFFLINE" not in env
    (ca,) = [v for v in pod_of(job)["volumes"] if "configMap" in v]
    assert ca["configMap"] == {"name": "corp-ca",
                               "items": [{"key": "bundle.pem", "path": "ca.crt"}]}
    (container,) = pod_of(job)["containers"]
    assert {"name": ca["name"], "mountPath": HUB_CA_DIR, "readOnly": True} in \
        container["volumeMounts"]
    # The planner never loads a model: it gets none of it.
    planner = jobs.build_planner_job(parsed(), settings)
    (planner_container,) = pod_of(planner)["containers"]
    assert not {"HF_TOKEN", "HF_ENDPOINT"} & {e["name"] for e in planner_container["env"]}


def test_an_air_gapped_cluster_turns_the_hub_off_in_worker_pods() -> None:
    env = env_of(worker(OperatorSettings.from_env({"WHISPERFLEET_HUB_OFFLINE": "true"})))
    assert env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(("env", "message"), [
    ({"WHISPERFLEET_HUB_OFFLINE": "yes"}, "HUB_OFFLINE must be true or false"),
    ({"WHISPERFLEET_HUB_ENDPOINT": "hf-mirror:8080"}, "HUB_ENDPOINT must be an http"),
    ({"WHISPERFLEET_HUB_TOKEN_SECRET": "t", "WHISPERFLEET_HUB_TOKEN_KEY": ""}, "TOKEN_KEY"),
])
def test_bad_hub_settings_are_refused_clearly(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OperatorSettings.from_env(env)
