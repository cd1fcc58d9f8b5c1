"""The CRD's copies of core Kubernetes schemas match the real API server's.

spec.workers.tolerations, .affinity, .resources, .volumes and .volumeMounts are hand-typed in
the CRD rather than
generated, on purpose: a CRD cannot $ref core types, and the copies carry bounds (maxItems,
maxLength) that the upstream schemas lack and the API server's CEL cost estimate needs.
What keeps them honest is this test: every field and type of the copy must be the API
server's (Kubernetes 1.37, pinned in tests/cluster/go/k8s), so a user's manifest never meets
a field the pods would accept and the CRD would not, nor the other way round.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.cluster.local_cluster import LocalCluster
from tests.support.paths import CRD

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
CORE = "io.k8s.api.core.v1."
# Fields the copies leave out deliberately (the pods never need them).
OMITTED: dict[str, set[str]] = {
    "resources": {"claims"},  # DRA claims come from spec.workers.gpu.deviceClassName
    # Propagation needs a privileged container; subPathExpr, recursiveReadOnly and
    # bindMountOptions (new in 1.37) no job needs.
    "volumeMounts": {"mountPropagation", "recursiveReadOnly", "subPathExpr",
                     "bindMountOptions"},
    # Owners and modes of projected files and emptyDirs, new in 1.37: no job needs them.
    "volumes": {"configMap.defaultUser", "configMap.items[].user", "secret.defaultUser",
                "secret.items[].user", "emptyDir.mode"},
}
# Fields the copies keep, where they keep few: the volume types the restricted Pod Security
# level allows that a job has use for, and hostPath (typed only to be refused by name).
KEPT: dict[str, set[str]] = {
    "volumes": {"name", "configMap", "secret", "persistentVolumeClaim", "emptyDir", "hostPath"},
}


@pytest.fixture(scope="module")
def core_schemas(cluster: LocalCluster) -> Obj:
    spec = json.loads(cluster.kubectl("get", "--raw", "/openapi/v3/api/v1").stdout)
    return dict(spec["components"]["schemas"])


def shape(schema: Obj, schemas: Obj, depth: int = 0) -> Any:
    """The field names and types of `schema`, $refs resolved: what must match."""
    if "$ref" in schema:
        return shape(schemas[schema["$ref"].rsplit("/", 1)[1]], schemas, depth)
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return shape(schema["allOf"][0], schemas, depth)
    alternatives = {alt.get("type") for alt in schema.get("oneOf") or schema.get("anyOf") or []}
    if (schema.get("x-kubernetes-int-or-string") or schema.get("format") == "int-or-string"
            or alternatives in ({"string", "integer"}, {"string", "number"})):
        return "int-or-string"  # a Quantity is this too
    if depth > 12:
        return "…"
    kind = schema.get("type")
    if kind == "array":
        return ["array", shape(schema.get("items") or {}, schemas, depth + 1)]
    if "properties" in schema:
        return {name: shape(child, schemas, depth + 1)
                for name, child in sorted(schema["properties"].items())}
    if isinstance(schema.get("additionalProperties"), dict):
        return ["map", shape(schema["additionalProperties"], schemas, depth + 1)]
    return kind or "any"


def crd_workers() -> Obj:
    crd = yaml.safe_load(CRD.read_text(encoding="utf-8"))
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return dict(spec["properties"]["workers"]["properties"])


@pytest.mark.parametrize(("field", "core"), [
    ("tolerations", "Toleration"), ("affinity", "Affinity"),
    ("resources", "ResourceRequirements"), ("volumes", "Volume"),
    ("volumeMounts", "VolumeMount")])
def test_the_crd_copy_has_exactly_the_api_servers_fields(
    core_schemas: Obj, field: str, core: str
) -> None:
    copy = crd_workers()[field]
    upstream = shape(core_schemas[CORE + core], core_schemas)
    if isinstance(upstream, dict):
        upstream = {k: v for k, v in upstream.items() if k not in OMITTED.get(field, set())
                    and k in KEPT.get(field, upstream.keys())}
        for dotted in OMITTED.get(field, set()):
            _drop(upstream, dotted)
    if copy.get("type") == "array":
        upstream = ["array", upstream]
    assert shape(copy, {}) == upstream


def _drop(tree: Any, dotted: str) -> None:
    """Remove the field at `dotted` (`a.items[].b`) from a `shape`, if it is there."""
    *parents, leaf = dotted.split(".")
    for step in parents:
        array = step.endswith("[]")
        tree = tree.get(step.removesuffix("[]")) if isinstance(tree, dict) else None
        if array and isinstance(tree, list):
            tree = tree[1]
    if isinstance(tree, dict):
        tree.pop(leaf, None)
