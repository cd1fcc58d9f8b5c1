"""The Hugging Face hub settings of worker pods, for models named rather than staged.

A token comes from a Secret by reference (`secretKeyRef`): the operator never reads it, so
it cannot reach a log, the status or an Event. A CA bundle comes from a ConfigMap, mounted
read-only; the hub client (httpx) reads SSL_CERT_FILE, requests-based clients
REQUESTS_CA_BUNDLE, so both point at it. `hub_offline` sets HF_HUB_OFFLINE=1: on an
air-gapped cluster a model that is not staged then fails at once, naming where the runner
looked, instead of after the hub client's retries.
"""

from __future__ import annotations

from whisperfleet_operator.objects import Obj
from whisperfleet_operator.settings import OperatorSettings

HUB_CA_VOLUME = "hub-ca"
HUB_CA_DIR = "/etc/whisperfleet/hub-ca"


def hub_settings(settings: OperatorSettings) -> tuple[list[Obj], list[Obj], list[Obj]]:
    """(env, volumes, mounts) for a worker container; nothing when no setting is made."""
    env: list[Obj] = []
    volumes: list[Obj] = []
    mounts: list[Obj] = []
    if settings.hub_offline:
        env.append({"name": "HF_HUB_OFFLINE", "value": "1"})
    if settings.hub_endpoint:
        env.append({"name": "HF_ENDPOINT", "value": settings.hub_endpoint})
    if settings.hub_token_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": settings.hub_token_secret, "key": settings.hub_token_key}}})
    if settings.hub_ca_configmap:
        volumes.append({"name": HUB_CA_VOLUME, "configMap": {
            "name": settings.hub_ca_configmap,
            "items": [{"key": settings.hub_ca_key, "path": "ca.crt"}]}})
        mounts.append({"name": HUB_CA_VOLUME, "mountPath": HUB_CA_DIR, "readOnly": True})
        bundle = f"{HUB_CA_DIR}/ca.crt"
        env += [{"name": "SSL_CERT_FILE", "value": bundle},
                {"name": "REQUESTS_CA_BUNDLE", "value": bundle}]
    return env, volumes, mounts
