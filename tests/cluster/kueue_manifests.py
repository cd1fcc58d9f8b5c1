"""Kueue's own CRDs, webhook configurations and manager ClusterRole, rendered for a cluster in
which the manager runs as a process on the host.

Kueue releases these as kustomize bases (config/components/ of its module; kueue_build.py
keeps a copy beside the binary). Its release overlay (config/default) names them with the
prefix `kueue-` and points every webhook at a Service. Here there is no Service in front of
the manager: each webhook's and conversion webhook's `clientConfig` becomes a URL on the
manager's own serving address with the CA that signed its certificate. Everything else —
which webhooks exist, their rules, failure policies and namespace selectors (the overlay's
patches, applied here as its strategic merge would) — stays as Kueue ships it.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
NAME_PREFIX = "kueue-"  # config/default's namePrefix


def _documents(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kustomization(folder: Path) -> Obj:
    return dict(yaml.safe_load((folder / "kustomization.yaml").read_text(encoding="utf-8")))


def _client_config(url: str, ca_pem: bytes) -> Obj:
    return {"url": url, "caBundle": base64.b64encode(ca_pem).decode()}


def crds(config: Path, webhook_url: str, ca_pem: bytes) -> list[Obj]:
    """Kueue's CRDs; those its kustomization gives a conversion webhook get one at
    `webhook_url` + its path (`/convert`)."""
    folder = config / "crd"
    kustomization = _kustomization(folder)
    found = [doc for resource in kustomization["resources"]
             for doc in _documents(folder / resource)]
    by_name = {doc["metadata"]["name"]: doc for doc in found}
    for patch_ref in kustomization.get("patches") or []:
        for patch in _documents(folder / patch_ref["path"]):
            conversion = copy.deepcopy(patch["spec"]["conversion"])
            service = conversion["webhook"]["clientConfig"]["service"]
            conversion["webhook"]["clientConfig"] = _client_config(
                webhook_url + service["path"], ca_pem)
            by_name[patch["metadata"]["name"]]["spec"]["conversion"] = conversion
    return found


def _merge_webhooks(configuration: Obj, patch: Obj) -> None:
    # What kustomize's strategic merge does with the overlay's patches: webhooks are a
    # list keyed by name, and each patched key replaces the shipped one.
    webhooks = {hook["name"]: hook for hook in configuration["webhooks"]}
    for change in patch.get("webhooks") or []:
        webhooks[change["name"]].update({k: v for k, v in change.items() if k != "name"})


def webhook_configurations(config: Path, webhook_url: str, ca_pem: bytes) -> list[Obj]:
    """Kueue's Mutating- and ValidatingWebhookConfiguration, each webhook calling
    `webhook_url` + its path."""
    folder = config / "webhook"
    kustomization = _kustomization(folder)
    configurations = [doc for doc in _documents(folder / "manifests.yaml")
                      if doc.get("kind", "").endswith("WebhookConfiguration")]
    for patch_ref in kustomization.get("patches") or []:
        patch = yaml.safe_load(patch_ref["patch"])
        for configuration in configurations:
            if (configuration["kind"], configuration["metadata"]["name"]) == \
                    (patch["kind"], patch["metadata"]["name"]):
                _merge_webhooks(configuration, patch)
    for configuration in configurations:
        configuration["metadata"]["name"] = NAME_PREFIX + configuration["metadata"]["name"]
        for hook in configuration["webhooks"]:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = _client_config(webhook_url + path, ca_pem)
    return configurations


def manager_namespaced_rbac(config: Path, namespace: str) -> list[Obj]:
    """The manager's Role and RoleBinding in its own namespace (Secrets there: MultiKueue's
    kubeconfigs), as shipped, in `namespace`, prefixed, bound to the `kueue-` ServiceAccount."""
    found = []
    for name in ("manager_secrets_role.yaml", "manager_secrets_role_binding.yaml"):
        (doc,) = _documents(config / "rbac" / name)
        doc["metadata"] = {"name": NAME_PREFIX + doc["metadata"]["name"],
                           "namespace": namespace}
        if "roleRef" in doc:
            doc["roleRef"]["name"] = NAME_PREFIX + doc["roleRef"]["name"]
            doc["subjects"] = [{**subject, "name": NAME_PREFIX + subject["name"],
                                "namespace": namespace} for subject in doc["subjects"]]
        found.append(doc)
    return found


def manager_cluster_role(config: Path) -> Obj:
    """The manager's ClusterRole (`kueue-manager-role`): the permissions Kueue's controllers
    declare (generated from their RBAC markers), nothing more."""
    (role,) = [doc for doc in _documents(config / "rbac" / "role.yaml")
               if doc["kind"] == "ClusterRole"]
    role["metadata"]["name"] = NAME_PREFIX + role["metadata"]["name"]
    return role
