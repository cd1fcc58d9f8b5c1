"""Offline admission of custom resources against a CRD, the way the apiserver does it.

The steps follow kube-apiserver: structural defaulting, then OpenAPI schema validation (with
unknown fields refused, as `kubectl apply` does by default), then every `x-kubernetes-validations`
CEL rule, evaluated with cel-python (`celpy`). Transition rules (those naming `oldSelf`) run only
on updates and only where the old value correlates: object properties, map entries and items
of `x-kubernetes-list-type: map` lists matched by key — never items of set or atomic lists.

As in Kubernetes, CEL sees set and map lists as order-free and cannot see fields preserved by
`x-kubernetes-preserve-unknown-fields`. CEL `matches` runs on RE2 (celpy uses google-re2);
OpenAPI `pattern` runs on Python `re` here (Go's RE2 in the apiserver); patterns keep to the
common subset. What cannot be reproduced offline: the apiserver's CEL type checker and its
cost estimator.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml
from celpy.adapter import json_to_cel

Schema = dict[str, Any]

# Keywords that mean the same in OpenAPI v3 (as Kubernetes uses it) and JSON Schema.
_SHARED_KEYWORDS = (
    "type", "required", "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems",
    "minProperties", "maxProperties", "format",
)
_OLD_SELF = re.compile(r"\boldSelf\b")


@dataclass(frozen=True)
class Violation:
    """One refusal, as `kubectl` would print it: `<path>: <message>`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def load_crd(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def version_schema(crd: dict[str, Any], version: str | None = None) -> Schema:
    """The openAPIV3Schema of `version` (default: the storage version)."""
    for v in crd["spec"]["versions"]:
        if v["name"] == version or (version is None and v.get("storage")):
            return dict(v["schema"]["openAPIV3Schema"])
    raise KeyError(f"CRD {crd['metadata']['name']} has no version {version or '(storage)'}")


def to_json_schema(node: Schema) -> Schema:
    """Convert a structural OpenAPI schema to JSON Schema, honouring x-kubernetes-* extensions."""
    out: Schema = {k: node[k] for k in _SHARED_KEYWORDS if k in node}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "anyOf" in node:
        out["anyOf"] = [to_json_schema(s) for s in node["anyOf"]]
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    if "properties" in node:
        out["properties"] = {k: to_json_schema(s) for k, s in node["properties"].items()}
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    elif "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        # The apiserver prunes unknown fields; kubectl's default strict field validation turns
        # that into an error. Refusing them here is what a user of `kubectl apply` sees.
        out["additionalProperties"] = False
    return out


def apply_defaults(node: Schema, value: Any) -> Any:
    """A copy of `value` with every schema default filled in, nested defaults included."""
    value = copy.deepcopy(value)
    _default_in_place(node, value)
    return value


def _default_in_place(node: Schema, value: Any) -> None:
    if isinstance(value, dict):
        for key, sub in (node.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default_in_place(sub, value[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for item in value.values():
                _default_in_place(extra, item)
    elif isinstance(value, list) and "items" in node:
        for item in value:
            _default_in_place(node["items"], item)


def schema_violations(schema: Schema, value: Any) -> list[Violation]:
    """OpenAPI violations (types, bounds, enums, patterns, unknown fields, duplicate keys)."""
    validator = jsonschema.Draft202012Validator(
        to_json_schema(schema), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    found = [
        Violation(_format_path(list(err.absolute_path)), err.message)
        for err in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    ]
    found.extend(_duplicate_map_keys(schema, value, []))
    return found


def _duplicate_map_keys(node: Schema, value: Any, path: list[Any]) -> list[Violation]:
    found: list[Violation] = []
    if isinstance(value, dict):
        for key, item in value.items():
            sub = (node.get("properties") or {}).get(key)
            if sub is None and isinstance(node.get("additionalProperties"), dict):
                sub = node["additionalProperties"]
            if sub is not None:
                found.extend(_duplicate_map_keys(sub, item, [*path, key]))
    elif isinstance(value, list) and "items" in node:
        keys = node.get("x-kubernetes-list-map-keys") or []
        seen: set[str] = set()
        for i, item in enumerate(value):
            if node.get("x-kubernetes-list-type") == "map" and isinstance(item, dict):
                ident = json.dumps([item.get(k) for k in keys])
                if ident in seen:
                    found.append(Violation(_format_path([*path, i]), f"Duplicate value: {ident}"))
                seen.add(ident)
            found.extend(_duplicate_map_keys(node["items"], item, [*path, i]))
    return found


def cel_violations(schema: Schema, new: Any, old: Any = None) -> list[Violation]:
    """Evaluate every CEL rule of `schema` on `new` (and `old` for transition rules)."""
    found: list[Violation] = []
    _walk(schema, new, old, old is not None, [], found)
    return found


def _walk(
    node: Schema, new: Any, old: Any, has_old: bool, path: list[Any], found: list[Violation]
) -> None:
    for rule in node.get("x-kubernetes-validations") or []:
        transition = bool(_OLD_SELF.search(rule["rule"]))
        if transition and not has_old:
            continue  # creates, and values that do not correlate, skip transition rules
        ok, error = evaluate(rule["rule"], _canonical(node, new),
                             _canonical(node, old) if transition else None)
        if not ok:
            where = _format_path(path) + (rule.get("fieldPath") or "")
            message = rule.get("message") or f"failed rule: {rule['rule']}"
            found.append(Violation(where, f"{message} ({error})" if error else message))
    if isinstance(new, dict):
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, value in new.items():
            sub = props.get(key) or (extra if isinstance(extra, dict) else None)
            if sub is None:
                continue
            correlated = has_old and isinstance(old, dict) and key in old
            _walk(sub, value, old[key] if correlated else None, correlated, [*path, key], found)
    elif isinstance(new, list) and "items" in node:
        keys = node.get("x-kubernetes-list-map-keys") or []
        old_by_key: dict[str, Any] = {}
        if has_old and node.get("x-kubernetes-list-type") == "map" and isinstance(old, list):
            old_by_key = {json.dumps([o.get(k) for k in keys]): o for o in old}
        for i, item in enumerate(new):
            ident = json.dumps([item.get(k) for k in keys]) if old_by_key else ""
            correlated = ident in old_by_key
            _walk(node["items"], item, old_by_key.get(ident), correlated, [*path, i], found)


def _canonical(node: Schema, value: Any) -> Any:
    """The value as Kubernetes CEL sees it: set and map lists compare regardless of order (so
    sort them), and fields kept only by x-kubernetes-preserve-unknown-fields are invisible."""
    if isinstance(value, dict):
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            return {k: _canonical(extra, v) for k, v in value.items()}
        return {k: _canonical(props[k], v) for k, v in value.items() if k in props}
    if isinstance(value, list):
        items = [_canonical(node.get("items") or {}, v) for v in value]
        if node.get("x-kubernetes-list-type") in ("set", "map"):
            items.sort(key=lambda v: json.dumps(v, sort_keys=True))
        return items
    return value


@functools.cache
def compile_rule(rule: str) -> celpy.Runner:
    """Parse a rule once; a syntax error raises celpy.CELParseError naming the rule."""
    env = celpy.Environment()
    return env.program(env.compile(rule))


def evaluate(rule: str, self_value: Any, old_value: Any = None) -> tuple[bool, str]:
    """(passed, evaluation error or ""). A rule that errors or yields a non-bool fails."""
    activation: dict[str, Any] = {"self": json_to_cel(self_value)}
    if old_value is not None:
        activation["oldSelf"] = json_to_cel(old_value)
    try:
        result = compile_rule(rule).evaluate(activation)
    except celpy.CELEvalError as err:
        return False, f"evaluation error: {err.args[0] if err.args else err}"
    if isinstance(result, celpy.CELEvalError):
        return False, f"evaluation error: {result.args[0] if result.args else result}"
    if not isinstance(result, celpy.celtypes.BoolType):
        return False, f"rule returned {type(result).__name__}, not bool"
    return bool(result), ""


def admit(
    crd: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None = None
) -> tuple[dict[str, Any], list[Violation]]:
    """Default, then validate a create (old=None) or an update; returns (stored object, refusals).

    CEL runs only on schema-valid objects: the apiserver would report the schema error, and
    rules written against a typed schema are meaningless on wrongly typed data.
    """
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    served = {f"{group}/{v['name']}" for v in crd["spec"]["versions"] if v.get("served")}
    if obj.get("apiVersion") not in served or obj.get("kind") != kind:
        return obj, [Violation("apiVersion", f"expected one of {sorted(served)}, kind {kind}")]
    if not (obj.get("metadata") or {}).get("name"):
        return obj, [Violation("metadata.name", "Required value")]
    schema = version_schema(crd, obj["apiVersion"].split("/", 1)[1])
    stored = apply_defaults(schema, obj)
    problems = schema_violations(schema, stored)
    if problems:
        return stored, problems
    old_stored = apply_defaults(schema, old) if old is not None else None
    return stored, cel_violations(schema, stored, old_stored)


def _format_path(path: list[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
