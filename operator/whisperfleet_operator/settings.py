"""Operator-wide settings, read once from the operator pod's environment.

The Helm chart sets these variables; every one has a default that works out of the box.

| variable                                  | field                       |
|-------------------------------------------|-----------------------------|
| WHISPERFLEET_RUNNER_IMAGE                 | runner_image                |
| WHISPERFLEET_IMAGE_PULL_POLICY            | image_pull_policy           |
| WHISPERFLEET_IMAGE_PULL_SECRETS           | image_pull_secrets (a,b)    |
| WHISPERFLEET_MODEL_CACHE_CLAIM            | model_cache_claim           |
| WHISPERFLEET_WORKER_RESOURCES             | worker_resources (JSON)     |
| WHISPERFLEET_PLANNER_RESOURCES            | planner_resources (JSON)    |
| WHISPERFLEET_WORKER_SERVICE_ACCOUNT       | worker_service_account      |
| WHISPERFLEET_RUN_AS_USER / _RUN_AS_GROUP  | run_as_user / run_as_group  |
|   (a number, or `platform`: None)         |                             |
| WHISPERFLEET_PLANNER_BACKOFF_LIMIT        | planner_backoff_limit       |
| WHISPERFLEET_PLANNER_DEADLINE_SECONDS     | planner_deadline_seconds    |
| WHISPERFLEET_CLEANUP_DEADLINE_SECONDS     | cleanup_deadline_seconds    |
| WHISPERFLEET_DRA_ATTRIBUTE_DOMAIN         | dra_attribute_domain        |
| WHISPERFLEET_METRICS_PORT                 | metrics_port (0: none)      |
| WHISPERFLEET_PROGRESS_INTERVAL_SECONDS    | progress_interval_seconds   |
| WHISPERFLEET_OPERATOR_METRICS_PORT        | operator_metrics_port (0: off) |
| WHISPERFLEET_OPERATOR_METRICS_HOST        | operator_metrics_host       |
| WHISPERFLEET_PEERING_LIFETIME_SECONDS     | peering_lifetime_seconds    |
| WHISPERFLEET_HUB_ENDPOINT                 | hub_endpoint (HF_ENDPOINT)  |
| WHISPERFLEET_HUB_TOKEN_SECRET / _KEY      | hub_token_secret / _key     |
| WHISPERFLEET_HUB_CA_CONFIGMAP / _KEY      | hub_ca_configmap / _key     |
| WHISPERFLEET_HUB_OFFLINE (true/false)     | hub_offline                 |
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from whisperfleet_operator.objects import Obj
from whisperfleet_runner import contract

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
DEFAULT_RUNNER_IMAGE = "ghcr.io/whisperfleet/whisperfleet-runner:0.1.0"
# The value of WHISPERFLEET_RUN_AS_USER/_GROUP that leaves the id to the platform.
PLATFORM_ASSIGNED = "platform"


def _default_worker_resources() -> dict[str, dict[str, str]]:
    # Decoding audio and the CTranslate2 host side need a few cores and several GiB;
    # the limit guards the node against a runaway decode of a huge file.
    return {"requests": {"cpu": "2", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}


def _default_planner_resources() -> dict[str, dict[str, str]]:
    return {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@dataclass(frozen=True)
class OperatorSettings:
    runner_image: str = DEFAULT_RUNNER_IMAGE
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    model_cache_claim: str = ""  # PVC used when a TranscriptionJob names none; "" = no cache
    worker_resources: Obj = field(default_factory=_default_worker_resources)
    planner_resources: Obj = field(default_factory=_default_planner_resources)
    worker_service_account: str = ""  # "" = namespace default; its token is never mounted
    # None: pods name no uid (gid and fsGroup) and the platform assigns one, as OpenShift's
    # restricted-v2 does from the namespace's range (it refuses a fixed one).
    run_as_user: int | None = 1000
    run_as_group: int | None = 1000
    planner_backoff_limit: int = 2
    planner_deadline_seconds: int = 3600
    # How long the TTL's cleanup Job may take before the job is deleted without it.
    cleanup_deadline_seconds: int = 300
    dra_attribute_domain: str = "gpu.nvidia.com"  # NVIDIA DRA driver's attribute domain
    # Worker pods serve Prometheus metrics here; the operator reads them for live progress
    # every progress_interval_seconds (0: metrics off, progress from finished shards only).
    metrics_port: int = contract.DEFAULT_METRICS_PORT
    progress_interval_seconds: int = 30
    # The operator's own /metrics (reconciles, errors, API latency, jobs by phase); 0: off.
    operator_metrics_port: int = 8081
    operator_metrics_host: str = "0.0.0.0"
    # With kopf peering (several replicas): how long a replica's keep-alive counts, and so
    # how soon a standby takes over from an active replica that died without saying so.
    peering_lifetime_seconds: int = 60
    # The Hugging Face hub, for worker pods that download a model by name: a mirror, a
    # token (a Secret's key, passed by reference: the operator never reads it), a CA bundle
    # (a ConfigMap's key), or no hub at all (air-gapped: fail at once instead of retrying).
    hub_endpoint: str = ""
    hub_token_secret: str = ""
    hub_token_key: str = "HF_TOKEN"
    hub_ca_configmap: str = ""
    hub_ca_key: str = "ca.crt"
    hub_offline: bool = False

    def __post_init__(self) -> None:
        if not self.runner_image:
            raise ValueError("WHISPERFLEET_RUNNER_IMAGE must not be empty")
        if self.image_pull_policy not in PULL_POLICIES:
            raise ValueError(
                f"WHISPERFLEET_IMAGE_PULL_POLICY must be one of {', '.join(PULL_POLICIES)}, "
                f"got {self.image_pull_policy!r}"
            )
        # The restricted Pod Security Standard refuses uid/gid 0 with runAsNonRoot.
        if any(i is not None and i <= 0 for i in (self.run_as_user, self.run_as_group)):
            raise ValueError("WHISPERFLEET_RUN_AS_USER/GROUP must be positive (non-root)")
        if self.planner_backoff_limit < 0 or self.planner_deadline_seconds < 0:
            raise ValueError("planner backoff limit and deadline must not be negative")
        if self.cleanup_deadline_seconds < 1:
            raise ValueError("WHISPERFLEET_CLEANUP_DEADLINE_SECONDS must be at least 1")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError("WHISPERFLEET_METRICS_PORT must be a port number (0: off)")
        if not 0 <= self.operator_metrics_port <= 65535:
            raise ValueError("WHISPERFLEET_OPERATOR_METRICS_PORT must be a port number (0: off)")
        if self.peering_lifetime_seconds < 10:
            # kopf renews a record 5-10 s before it expires.
            raise ValueError("WHISPERFLEET_PEERING_LIFETIME_SECONDS must be at least 10")
        if self.progress_interval_seconds < 1:
            raise ValueError("WHISPERFLEET_PROGRESS_INTERVAL_SECONDS must be at least 1")
        for name in ("worker_resources", "planner_resources"):
            _check_resources(name, getattr(self, name))
        if self.hub_endpoint and not self.hub_endpoint.startswith(("https://", "http://")):
            raise ValueError("WHISPERFLEET_HUB_ENDPOINT must be an http(s):// URL")
        if (self.hub_token_secret and not self.hub_token_key) or (
                self.hub_ca_configmap and not self.hub_ca_key):
            raise ValueError("WHISPERFLEET_HUB_TOKEN_KEY / WHISPERFLEET_HUB_CA_KEY must not be "
                             "empty when their Secret / ConfigMap is set")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorSettings:
        env = os.environ if env is None else env
        kwargs: Obj = {}
        strings = {
            "WHISPERFLEET_RUNNER_IMAGE": "runner_image",
            "WHISPERFLEET_IMAGE_PULL_POLICY": "image_pull_policy",
            "WHISPERFLEET_MODEL_CACHE_CLAIM": "model_cache_claim",
            "WHISPERFLEET_WORKER_SERVICE_ACCOUNT": "worker_service_account",
            "WHISPERFLEET_DRA_ATTRIBUTE_DOMAIN": "dra_attribute_domain",
            "WHISPERFLEET_HUB_ENDPOINT": "hub_endpoint",
            "WHISPERFLEET_HUB_TOKEN_SECRET": "hub_token_secret",
            "WHISPERFLEET_HUB_TOKEN_KEY": "hub_token_key",
            "WHISPERFLEET_HUB_CA_CONFIGMAP": "hub_ca_configmap",
            "WHISPERFLEET_HUB_CA_KEY": "hub_ca_key",
            "WHISPERFLEET_OPERATOR_METRICS_HOST": "operator_metrics_host",
        }
        for var, name in strings.items():
            if var in env:
                kwargs[name] = env[var].strip()
        for var, name in {
            "WHISPERFLEET_IMAGE_PULL_SECRETS": "image_pull_secrets",
        }.items():
            if var in env:
                kwargs[name] = tuple(p.strip() for p in env[var].split(",") if p.strip())
        if env.get("WHISPERFLEET_HUB_OFFLINE", "").strip():
            offline = env["WHISPERFLEET_HUB_OFFLINE"].strip().lower()
            if offline not in ("true", "false"):
                raise ValueError(f"WHISPERFLEET_HUB_OFFLINE must be true or false, got {offline!r}")
            kwargs["hub_offline"] = offline == "true"
        for var, name in {
            "WHISPERFLEET_RUN_AS_USER": "run_as_user",
            "WHISPERFLEET_RUN_AS_GROUP": "run_as_group",
        }.items():
            if env.get(var, "").strip() == PLATFORM_ASSIGNED:
                kwargs[name] = None
        for var, name in {
            "WHISPERFLEET_RUN_AS_USER": "run_as_user",
            "WHISPERFLEET_RUN_AS_GROUP": "run_as_group",
            "WHISPERFLEET_PLANNER_BACKOFF_LIMIT": "planner_backoff_limit",
            "WHISPERFLEET_PLANNER_DEADLINE_SECONDS": "planner_deadline_seconds",
            "WHISPERFLEET_CLEANUP_DEADLINE_SECONDS": "cleanup_deadline_seconds",
            "WHISPERFLEET_METRICS_PORT": "metrics_port",
            "WHISPERFLEET_PROGRESS_INTERVAL_SECONDS": "progress_interval_seconds",
            "WHISPERFLEET_OPERATOR_METRICS_PORT": "operator_metrics_port",
            "WHISPERFLEET_PEERING_LIFETIME_SECONDS": "peering_lifetime_seconds",
        }.items():
            if env.get(var, "").strip() and name not in kwargs:
                try:
                    kwargs[name] = int(env[var])
                except ValueError:
                    raise ValueError(f"{var} must be an integer, got {env[var]!r}") from None
        for var, name in {
            "WHISPERFLEET_WORKER_RESOURCES": "worker_resources",
            "WHISPERFLEET_PLANNER_RESOURCES": "planner_resources",
        }.items():
            if env.get(var, "").strip():
                try:
                    kwargs[name] = json.loads(env[var])
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{var} is not valid JSON: {exc}") from None
        return cls(**kwargs)


def _check_resources(name: str, value: Any) -> None:
    if not isinstance(value, dict) or set(value) - {"requests", "limits"}:
        raise ValueError(f"{name} must be an object with only 'requests' and 'limits'")
    for part in value.values():
        if not isinstance(part, dict) or not all(isinstance(v, (str, int)) for v in part.values()):
            raise ValueError(f"{name}: requests/limits must map resource names to quantities")
