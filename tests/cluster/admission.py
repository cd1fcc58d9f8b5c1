"""Asking the real API server to admit objects: server-side dry runs, and what it answered.

`Admission` sends creates and patches with `fieldValidation=Strict` (what `kubectl
apply`/`create` send: an unknown field is an error, not a pruned warning) and, by default,
`dryRun=All` (every admission step, defaulting and validation run; nothing is stored).
A refusal is an `Answer` too, not an exception, so a test can look at the status code, the
message and the causes (field + message) the server gave.

Also here: the TranscriptionJob CRD as the repository ships it, the paths of its schema
nodes and CEL rules, and schema-driven values (a valid instance of any node, a maximal one)
for the cost and bounds tests.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import yaml
from kubernetes.client import ApiClient

from tests.support.crd_schema import walk
from tests.support.paths import CRD

Obj = dict[str, Any]
API_VERSION = "whisperfleet.io/v1alpha1"
REQUEST_TIMEOUT = 30
DELETE = object()  # a `tj(...)` patch value that removes the field
SKIPPED_RULES_FIELD = "<nil>"


@dataclass(frozen=True)
class Answer:
    """The API server's answer: the object it would store, or a Status saying why not."""

    status: int
    body: Obj
    warnings: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return 200 <= self.status <= 299

    @property
    def message(self) -> str:
        return "" if self.accepted else str(self.body.get("message", ""))

    @property
    def causes(self) -> list[tuple[str, str]]:
        """(field, message) of each cause of a refusal, as the server listed them — without
        its note that CEL rules were skipped because the schema already failed (no field)."""
        details = self.body.get("details") or {}
        return [(str(c.get("field", "")), str(c.get("message", "")))
                for c in details.get("causes") or [] if c.get("field") != SKIPPED_RULES_FIELD]

    def __str__(self) -> str:  # for assertion messages
        if self.accepted:
            return f"accepted ({self.status})"
        return f"{self.status} {self.body.get('reason', '')}: {self.message}"


class Admission:
    """Creates and patches on any API path, dry run unless told otherwise, as `kubectl` sends
    them (strict field validation); and plain reads."""

    def __init__(self, api_client: ApiClient) -> None:
        self._client = api_client

    def _call(self, method: str, path: str, body: Obj | list[Obj] | None,
              params: dict[str, str], content_type: str = "application/json",
              accept: str = "application/json") -> Answer:
        request = self._client.param_serialize(
            method, f"{path}?{urlencode(params)}" if params else path,
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"])
        response = self._client.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
        data = response.read()
        warnings = list(response.headers.getlist("Warning"))
        return Answer(response.status, json.loads(data) if data else {}, warnings)

    @staticmethod
    def _write_params(dry_run: bool) -> dict[str, str]:
        return {"fieldValidation": "Strict", **({"dryRun": "All"} if dry_run else {})}

    def create(self, path: str, body: Obj, *, dry_run: bool = True) -> Answer:
        return self._call("POST", path, body, self._write_params(dry_run))

    def merge_patch(self, path: str, patch: Obj, *, dry_run: bool = True) -> Answer:
        """A JSON merge patch (RFC 7386): maps merge, lists are replaced, null removes."""
        return self._call("PATCH", path, patch, self._write_params(dry_run),
                          "application/merge-patch+json")

    def json_patch(self, path: str, operations: list[Obj], *, dry_run: bool = True) -> Answer:
        """A JSON patch (RFC 6902), e.g. to replace a whole status without a resourceVersion."""
        return self._call("PATCH", path, operations, self._write_params(dry_run),
                          "application/json-patch+json")

    def get(self, path: str, *, accept: str = "application/json",
            params: dict[str, str] | None = None) -> Answer:
        return self._call("GET", path, None, params or {}, accept=accept)

    def created(self, path: str, body: Obj) -> Obj:
        """Create for real (not a dry run) and return the stored object."""
        answer = self.create(path, body, dry_run=False)
        assert answer.accepted, f"creating {body['metadata']['name']}: {answer}"
        return answer.body


def resource_path(obj: Obj, namespace: str) -> str:
    """The collection path of `obj`'s kind in `namespace` (the kinds these tests create)."""
    group_version, kind = obj["apiVersion"], obj["kind"]
    plural = {"Job": "jobs", "ResourceClaimTemplate": "resourceclaimtemplates", "Pod": "pods",
              "Secret": "secrets", "PersistentVolumeClaim": "persistentvolumeclaims",
              "TranscriptionJob": "transcriptionjobs"}[kind]
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


# --- TranscriptionJob objects -----------------------------------------------------------------


def tj(name: str = "t", **patches: Any) -> Obj:
    """A minimal valid TranscriptionJob; patches are spec paths with __ for dots
    (`workers__gpu={...}`); the value DELETE removes the field."""
    obj: Obj = {
        "apiVersion": API_VERSION, "kind": "TranscriptionJob", "metadata": {"name": name},
        "spec": {"input": {"uri": "s3://media/in/"}, "output": {"uri": "s3://media/out/"}},
    }
    for dotted, value in patches.items():
        set_path(obj["spec"], dotted.replace("__", "."), value)
    return obj


def set_path(target: Obj, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    if value is DELETE:
        target.pop(leaf, None)
    else:
        target[leaf] = copy.deepcopy(value)


# --- the CRD's schema ---------------------------------------------------------------------------


def load_crd() -> Obj:
    return dict(yaml.safe_load(CRD.read_text()))


def version_schema(crd: Obj) -> Obj:
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"])


def rules(schema: Obj) -> Iterator[tuple[str, Obj]]:
    """(path of the node, rule) for every x-kubernetes-validations rule."""
    for path, node in walk(schema):
        for rule in node.get("x-kubernetes-validations") or []:
            yield path, rule


def node_at(schema: Obj, path: str) -> Obj:
    """The schema node at a `walk` path."""
    return dict(walk(schema))[path]


# --- values made from the schema ----------------------------------------------------------------

# Valid values the schema alone cannot tell (CEL rules, or patterns a plain letter misses),
# by node path; everything else is built from types, enums, patterns, formats and bounds.
_KNOWN_VALID: dict[str, Any] = {
    "spec.input.uri": "s3://media/in/",
    "spec.output.uri": "s3://media/out/",
    "spec.storage.endpoint": "https://s3.example.com",
    "spec.storage.volume.mountPath": "/data",
    "spec.transcription.language": "en",
    "spec.workers.gpusPerWorker": 1,
    "spec.workers.gpu.resourceName": "nvidia.com/gpu",
    "spec.workers.gpu.minComputeCapability": "8.0",
}
_STRING_CANDIDATES = ("a", "1", "/a")
_BAD_FOR_PATTERN = ("-bad-", "A B!", "/")
DATE_TIME = "2024-11-02T10:00:00Z"


def _toleration(index: int) -> Obj:
    # Equal with a value, NoExecute with seconds: satisfies all three toleration rules.
    return {"key": f"k{index}", "operator": "Equal", "value": f"v{index}", "effect": "NoExecute",
            "tolerationSeconds": 60}


def _volume(index: int) -> Obj:
    return {"name": f"v{index}", "emptyDir": {}}


def _volume_mount(index: int) -> Obj:
    # Mounts the volume of the same index: a mount must name a volume of the job.
    return {"name": f"v{index}", "mountPath": f"/mnt/v{index}"}


_ITEM_FACTORIES = {"spec.workers.tolerations[]": _toleration,
                   "spec.workers.volumes[]": _volume,
                   "spec.workers.volumeMounts[]": _volume_mount}
# Where a value is refused whatever it holds (a rule says why): no bound of it to break.
REFUSED_WHOLE = ("spec.workers.volumes[].hostPath.",)
# A valid object that the spec.workers.volumeMounts[] items made by _volume_mount fit.
WITH_VOLUME = {"workers__volumes": [_volume(0)]}
# Extended resources, requests equal to limits (they cannot be overcommitted).
_RESOURCES = {f"example.com/r{i}": "1" for i in range(16)}
_KNOWN_MAXIMAL_RESOURCES = {"spec.workers.resources.limits": _RESOURCES,
                            "spec.workers.resources.requests": _RESOURCES}


def _selector_item(path: str, item: Obj, index: int, maximal: bool) -> Obj:
    """A selector requirement the CEL rules allow: In/NotIn with values (matchFields: one
    node name); a pod-affinity term with the labelSelector its label keys need."""
    if path.endswith(".matchFields[]"):
        return {**item, "key": "metadata.name", "operator": ("In", "NotIn")[index % 2],
                "values": [f"node-{index}"]}
    if path.endswith(".matchExpressions[]"):
        values = item.get("values") or [f"v{index}"]
        return {**item, "operator": ("In", "NotIn")[index % 2], "values": values}
    if item.get("topologyKey") and not maximal and "labelSelector" not in item:
        return {**item, "labelSelector": {}}
    if maximal and "mismatchLabelKeys" in item:  # not one key in both lists
        return {**item, "mismatchLabelKeys": [f"m{i}" for i in range(
            len(item["mismatchLabelKeys"]))]}
    return item


def _string(node: Obj, index: int) -> str:
    """A string valid for `node`; a different `index` gives a different one where it can."""
    if "enum" in node:
        return str(node["enum"][index % len(node["enum"])])
    if node.get("format") == "date-time":
        return DATE_TIME
    pattern = node.get("pattern")
    for candidate in _STRING_CANDIDATES:
        value = candidate if index == 0 else f"{candidate}{index}"
        if pattern is None or re.search(pattern, value):
            return value
    raise AssertionError(f"no candidate string matches {pattern!r}")


def valid_value(node: Obj, path: str, index: int = 0) -> Any:
    """The smallest valid value of `node` at `path`: only required fields, lists and maps
    at their minimum size; `index` varies it (distinct set items and list-map keys)."""
    if path in _ITEM_FACTORIES:
        return _ITEM_FACTORIES[path](index)
    if path in _KNOWN_VALID:
        return copy.deepcopy(_KNOWN_VALID[path])
    if node.get("x-kubernetes-int-or-string"):
        return str(index + 1)
    kind = node.get("type")
    if kind == "object":
        if isinstance(node.get("additionalProperties"), dict):
            return {}
        return _selector_item(path, {key: valid_value(node["properties"][key], f"{path}.{key}",
                                                      index)
                                     for key in node.get("required", [])}, index, False)
    if kind == "array":
        return [valid_value(node["items"], f"{path}[]", i) for i in range(node.get("minItems", 0))]
    if kind == "string":
        return _string(node, index)
    if kind == "integer":
        return int(node.get("minimum", 1)) + (index if "maximum" not in node else 0)
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    raise AssertionError(f"{path}: no value for schema type {kind!r}")


def server_field(path: str) -> str:
    """How the API server names the field at a `walk` path in an object built by `place`:
    the first list item is [0], the map entry is `.{MAP_KEY}`."""
    return path.replace("[]", "[0]").replace(".*", f".{MAP_KEY}")


# A key every map of the spec takes: a label key (nodeSelector, matchLabels) and a
# resource name that needs no limit beside its request (resources).
MAP_KEY = "memory"


def place(root: Obj, schema: Obj, path: str, value: Any) -> Obj:
    """A copy of `root` with `value` at the `walk` path, every missing ancestor made a valid
    value (a list gets the one item [0], a map the one entry `MAP_KEY`)."""
    root = copy.deepcopy(root)
    steps = re.findall(r"[^.\[\]]+|\[\]", path)
    node, target, walked = schema, root, ""
    for i, step in enumerate(steps):
        last = i == len(steps) - 1
        if step == "[]":
            node, walked = node["items"], f"{walked}[]"
            if not target:
                target.append(valid_value(node, walked))
            if last:
                target[0] = value
            else:
                target = target[0]
            continue
        if step == "*":
            node, walked, key = node["additionalProperties"], f"{walked}.*", MAP_KEY
        else:
            node, walked, key = node["properties"][step], f"{walked}.{step}".lstrip("."), step
        if last:
            target[key] = value
        else:
            if key not in target:
                target[key] = valid_value(node, walked)
            target = target[key]
    return root


@dataclass(frozen=True)
class BoundCase:
    """One schema bound, a value breaking it, and what the server's message then says."""

    path: str  # a `walk` path
    keyword: str
    value: Any
    says: str

    def __str__(self) -> str:
        return f"{self.path} {self.keyword}"


def bound_cases(schema: Obj, under: str) -> list[BoundCase]:
    """A breaking value for every bound (maxLength, minLength, maxItems, minItems,
    maxProperties, minimum, maximum, enum, pattern) of every node under `under`."""
    cases = []
    for path, node in walk(schema):
        if not path.startswith(f"{under}.") or path.startswith(REFUSED_WHOLE):
            continue
        items = node.get("items")
        extra = node.get("additionalProperties")
        for keyword, bound in node.items():
            if keyword == "maxLength":
                cases.append(BoundCase(path, keyword, "1" * (bound + 1),
                                       f"Too long: may not be more than {bound} bytes"))
            elif keyword == "minLength":
                cases.append(BoundCase(path, keyword, "",
                                       f"should be at least {bound} chars long"))
            elif keyword == "maxItems":
                value = [valid_value(items, f"{path}[]", i) for i in range(bound + 1)]
                cases.append(BoundCase(path, keyword, value,
                                       f"Too many: {bound + 1}: must have at most {bound} items"))
            elif keyword == "minItems":
                cases.append(BoundCase(path, keyword, [],
                                       f"should have at least {bound} items"))
            elif keyword == "maxProperties":
                value = {f"k{i}": valid_value(extra, f"{path}.*", i) for i in range(bound + 1)}
                cases.append(BoundCase(path, keyword, value,
                                       f"Too many: {bound + 1}: must have at most {bound} items"))
            elif keyword == "minimum":
                cases.append(BoundCase(path, keyword, bound - 1,
                                       f"should be greater than or equal to {bound}"))
            elif keyword == "maximum":
                cases.append(BoundCase(path, keyword, bound + 1,
                                       f"should be less than or equal to {bound}"))
            elif keyword == "enum":
                cases.append(BoundCase(path, keyword, "Bogus", 'Unsupported value: "Bogus"'))
            elif keyword == "pattern":
                bad = next(v for v in _BAD_FOR_PATTERN if not re.search(bound, v))
                cases.append(BoundCase(path, keyword, bad, "should match"))
    return cases


_ABSENT = object()  # a field left out: a rule makes it exclusive with a larger one

# The largest value the CEL rules and patterns allow, where the schema alone cannot tell.
_KNOWN_MAXIMAL: dict[str, Any] = {
    "spec.input.uri": "s3://in" + "i" * 1017,
    "spec.output.uri": "s3://out" + "o" * 1016,
    "spec.storage.endpoint": "https://" + "e" * 504,
    "spec.storage.volume.mountPath": "/" + "m" * 511,
    # "": languageCandidates, at its 100 items, excludes a language.
    "spec.transcription.language": "",
    # uri (1,024 characters) excludes name (256).
    "spec.model.name": _ABSENT,
    "spec.model.uri": "s3://model" + "m" * 1014,
    "spec.workers.gpu.resourceName": "nvidia.com/" + "g" * 242,
    "spec.workers.gpu.minComputeCapability": "10.10",
}


def maximal_value(node: Obj, path: str, index: int = 0, repeated: bool = False) -> Any:
    """The largest valid value of `node`: every optional field set, every list at maxItems,
    every map at maxProperties, integers at their maximum; strings at maxLength unless
    `repeated` (inside a list or map, where long strings would only multiply the size)."""
    if path in _ITEM_FACTORIES:
        return _ITEM_FACTORIES[path](index)
    if path in _KNOWN_MAXIMAL:
        return _KNOWN_MAXIMAL[path]
    if path in _KNOWN_MAXIMAL_RESOURCES:
        return dict(_KNOWN_MAXIMAL_RESOURCES[path])
    kind = node.get("type")
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return {f"k{i}": maximal_value(extra, f"{path}.*", i, True)
                for i in range(node["maxProperties"])}
    if kind == "object":
        values = {key: maximal_value(sub, f"{path}.{key}", index, repeated)
                  for key, sub in (node.get("properties") or {}).items()}
        return _selector_item(path, {k: v for k, v in values.items() if v is not _ABSENT},
                              index, True)
    if kind == "array":
        return [maximal_value(node["items"], f"{path}[]", i, True)
                for i in range(node["maxItems"])]
    if node.get("x-kubernetes-int-or-string"):
        return str(index + 1)
    if kind == "string":
        longest = "a" * node.get("maxLength", 0)
        if not repeated and longest and "enum" not in node and re.search(
                node.get("pattern", ""), longest):
            return longest
        return _string(node, index)
    if kind == "integer":
        return int(node.get("maximum", 2**31 - 1))
    if kind == "number":
        return 1e9
    if kind == "boolean":
        return True
    raise AssertionError(f"{path}: no value for schema type {kind!r}")
