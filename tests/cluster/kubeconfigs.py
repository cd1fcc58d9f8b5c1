"""Kubeconfig files for the local cluster: one cluster (CA embedded), one token user."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def write_token_kubeconfig(path: Path, *, server: str, ca_pem: bytes, token: str,
                           user: str = "admin", namespace: str | None = None) -> Path:
    """Write a kubeconfig for `server` authenticating with a bearer `token` (mode 0600)."""
    context: dict[str, str] = {"cluster": "whisperfleet-local", "user": user}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "whisperfleet-local", "cluster": {
            "server": server,
            "certificate-authority-data": base64.b64encode(ca_pem).decode(),
        }}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "whisperfleet-local", "context": context}],
        "current-context": "whisperfleet-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
