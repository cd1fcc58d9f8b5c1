"""What kube-apiserver checks in a Job beyond its OpenAPI schema.

`kubernetes_validate` checks shapes and types only. The API server also runs the Go
validation of `pkg/apis/batch/validation` and `pkg/apis/core/validation`; these are the rules
from there that a whisperfleet Job could break (podFailurePolicy with backoffLimitPerIndex,
Indexed pod hostnames, labels, resources, node affinity, tolerations). Each problem is
returned as `<field>: <why>`, the way the API server words a 422.
"""

from __future__ import annotations

import re
from typing import Any

Obj = dict[str, Any]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
NATIVE_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
ACTIONS = {"FailJob", "FailIndex", "Ignore", "Count"}
# pkg/apis/batch/validation limits
MAX_PARALLELISM_INDEXED = 100_000
COMPLETIONS_SOFT_LIMIT = 100_000
PARALLELISM_HIGH_COMPLETIONS = 10_000
MAX_FAILED_INDEXES_HIGH_COMPLETIONS = 100_000


def qualified_name_problems(key: str) -> list[str]:
    """A label key / condition type: optional DNS-subdomain prefix (<=253) + name (<=63)."""
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        problems.append(f"prefix {prefix!r} is not a DNS subdomain")
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        problems.append(f"name part {name!r} is not a qualified name")
    return problems


def labels_problems(path: str, labels: Obj | None) -> list[str]:
    out = []
    for key, value in (labels or {}).items():
        out += [f"{path}[{key}]: {p}" for p in qualified_name_problems(key)]
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            out.append(f"{path}[{key}]: {value!r} is not a valid label value")
    return out


def _quantity(text: Any) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3, "k": 1e3,
             "M": 1e6, "G": 1e9, "T": 1e12}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    assert match, f"unparsable quantity {text!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def _resources_problems(path: str, res: Obj, claim_names: set[str]) -> list[str]:
    out = []
    limits, requests = res.get("limits") or {}, res.get("requests") or {}
    for name, value in requests.items():
        if name in limits and _quantity(value) > _quantity(limits[name]):
            out.append(f"{path}.requests[{name}]: must be less than or equal to the limit")
    for name, value in {**requests, **limits}.items():
        if name not in NATIVE_RESOURCES and "/" in name:  # extended resources
            if name in requests and name in limits and requests[name] != limits[name]:
                out.append(f"{path}[{name}]: extended resource requests must equal limits")
            if not re.fullmatch(r"[0-9]+", str(value)):
                out.append(f"{path}[{name}]: extended resources must be whole numbers")
    for claim in res.get("claims") or []:
        if claim.get("name") not in claim_names:
            out.append(f"{path}.claims: {claim.get('name')!r} is not in pod resourceClaims")
    return out


def _node_affinity_problems(path: str, affinity: Obj | None) -> list[str]:
    required = (((affinity or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return []
    terms = required.get("nodeSelectorTerms") or []
    out = [] if terms else [f"{path}.nodeSelectorTerms: must have at least one term"]
    for i, term in enumerate(terms):
        for j, req in enumerate(term.get("matchExpressions") or []):
            where = f"{path}.nodeSelectorTerms[{i}].matchExpressions[{j}]"
            values = req.get("values") or []
            op = req.get("operator")
            out += [f"{where}.key: {p}" for p in qualified_name_problems(req.get("key", ""))]
            if op in ("In", "NotIn") and not values:
                out.append(f"{where}.values: must be specified for {op}")
            if op in ("Exists", "DoesNotExist") and values:
                out.append(f"{where}.values: may not be specified for {op}")
            if op in ("Gt", "Lt") and (len(values) != 1 or
                                       not re.fullmatch(r"-?[0-9]+", values[0])):
                out.append(f"{where}.values: {op} needs exactly one integer value")
    return out


def _toleration_problems(path: str, tolerations: list[Obj]) -> list[str]:
    out = []
    for i, tol in enumerate(tolerations):
        if not tol.get("key") and tol.get("operator", "Equal") != "Exists":
            out.append(f"{path}[{i}].operator: must be Exists when key is empty")
        if tol.get("operator") == "Exists" and tol.get("value"):
            out.append(f"{path}[{i}].value: must be empty when operator is Exists")
        if "tolerationSeconds" in tol and tol.get("effect") != "NoExecute":
            out.append(f"{path}[{i}].effect: must be NoExecute when tolerationSeconds is set")
    return out


def pod_spec_problems(path: str, spec: Obj) -> list[str]:
    out: list[str] = []
    volumes = {v["name"] for v in spec.get("volumes") or []}
    claim_names = {c["name"] for c in spec.get("resourceClaims") or []}
    names = [c["name"] for c in spec.get("containers") or []]
    if len(names) != len(set(names)) or not all(DNS_LABEL.match(n) for n in names):
        out.append(f"{path}.containers: names must be unique DNS labels")
    for c in spec.get("containers") or []:
        where = f"{path}.containers[{c['name']}]"
        env_names = [e["name"] for e in c.get("env") or []]
        out += [f"{where}.env: {n!r} is not a valid name" for n in env_names
                if not ENV_NAME.match(n)]
        out += [f"{where}.volumeMounts: {m['name']!r} is not a volume"
                for m in c.get("volumeMounts") or [] if m["name"] not in volumes]
        out += _resources_problems(f"{where}.resources", c.get("resources") or {}, claim_names)
    out += labels_problems(f"{path}.nodeSelector", spec.get("nodeSelector"))
    out += _node_affinity_problems(f"{path}.affinity.nodeAffinity", spec.get("affinity"))
    out += _toleration_problems(f"{path}.tolerations", spec.get("tolerations") or [])
    for secret in spec.get("imagePullSecrets") or []:
        if not DNS_SUBDOMAIN.match(secret.get("name", "")):
            out.append(f"{path}.imagePullSecrets: {secret!r} is not a valid name")
    return out


def _failure_policy_problems(spec: Obj, containers: set[str]) -> list[str]:
    policy = spec.get("podFailurePolicy")
    if policy is None:
        return []
    rules = policy.get("rules") or []
    out = [] if len(rules) <= 20 else ["spec.podFailurePolicy.rules: at most 20"]
    for i, rule in enumerate(rules):
        where = f"spec.podFailurePolicy.rules[{i}]"
        if rule.get("action") not in ACTIONS:
            out.append(f"{where}.action: {rule.get('action')!r} not supported")
        if rule.get("action") == "FailIndex" and spec.get("backoffLimitPerIndex") is None:
            out.append(f"{where}.action: FailIndex requires backoffLimitPerIndex")
        codes, conditions = rule.get("onExitCodes"), rule.get("onPodConditions")
        if (codes is None) == (not conditions):
            out.append(f"{where}: exactly one of onExitCodes and onPodConditions")
        if codes is not None:
            values = codes.get("values") or []
            if codes.get("operator") not in ("In", "NotIn"):
                out.append(f"{where}.onExitCodes.operator: must be In or NotIn")
            if "containerName" in codes and codes["containerName"] not in containers:
                out.append(f"{where}.onExitCodes.containerName: not a container")
            if not 1 <= len(values) <= 255 or values != sorted(set(values)):
                out.append(f"{where}.onExitCodes.values: 1-255 unique values, ordered")
            if codes.get("operator") == "In" and 0 in values:
                out.append(f"{where}.onExitCodes.values: must not be 0 for In")
        for j, pattern in enumerate(conditions or []):
            if qualified_name_problems(pattern.get("type", "")):
                out.append(f"{where}.onPodConditions[{j}].type: not a qualified name")
            if pattern.get("status", "True") not in ("True", "False", "Unknown"):
                out.append(f"{where}.onPodConditions[{j}].status: True, False or Unknown")
    if spec.get("podReplacementPolicy", "Failed") != "Failed":
        out.append("spec.podReplacementPolicy: must be Failed with podFailurePolicy")
    if spec["template"]["spec"].get("restartPolicy") != "Never":
        out.append("spec.template.spec.restartPolicy: only Never with podFailurePolicy")
    return out


def job_problems(job: Obj) -> list[str]:
    """Every rule above that `job` breaks; [] when the API server would accept it."""
    meta, spec = job["metadata"], job["spec"]
    name = meta["name"]
    out: list[str] = []
    if len(name) > 253 or not DNS_SUBDOMAIN.match(name):
        out.append(f"metadata.name: {name!r} is not a DNS subdomain")
    out += labels_problems("metadata.labels", meta.get("labels"))
    out += labels_problems("spec.template.metadata.labels",
                           (spec["template"].get("metadata") or {}).get("labels"))
    restart = spec["template"]["spec"].get("restartPolicy")
    if restart not in ("Never", "OnFailure"):
        out.append("spec.template.spec.restartPolicy: Never or OnFailure")
    indexed = spec.get("completionMode") == "Indexed"
    completions, parallelism = spec.get("completions"), spec.get("parallelism", 1)
    per_index, max_failed = spec.get("backoffLimitPerIndex"), spec.get("maxFailedIndexes")
    if indexed:
        if completions is None:
            out.append("spec.completions: required for Indexed")
        else:
            hostname = f"{name}-{completions - 1}"
            if len(hostname) > 63 or not DNS_LABEL.match(hostname):
                out.append(f"metadata.name: pods would get the invalid hostname {hostname!r}")
        if parallelism > MAX_PARALLELISM_INDEXED:
            out.append("spec.parallelism: too high for an Indexed Job")
        if max_failed is not None and completions is not None and max_failed > completions:
            out.append("spec.maxFailedIndexes: must be <= completions")
        if completions and completions > COMPLETIONS_SOFT_LIMIT and per_index is not None:
            if max_failed is None:
                out.append("spec.maxFailedIndexes: required above 100000 completions")
            if parallelism > PARALLELISM_HIGH_COMPLETIONS:
                out.append("spec.parallelism: <= 10000 above 100000 completions")
    elif per_index is not None or max_failed is not None:
        out.append("spec.backoffLimitPerIndex/maxFailedIndexes: need Indexed completion mode")
    if max_failed is not None and per_index is None:
        out.append("spec.backoffLimitPerIndex: required with maxFailedIndexes")
    containers = {c["name"] for c in spec["template"]["spec"].get("containers") or []}
    out += _failure_policy_problems(spec, containers)
    out += pod_spec_problems("spec.template.spec", spec["template"]["spec"])
    return out
