"""The values table of charts/whisperfleet/README.md, rendered from values.schema.json (the
descriptions, types and rules) and values.yaml (the defaults): no hand-kept copy.

tests/chart/test_values_reference.py fails when the committed table differs from what these
render, or when a value has no description; to refresh it after changing either file, run
`python -m tests.support.chart_values_reference` from the repository root.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from tests.support.paths import CHART

README = CHART / "README.md"
SCHEMA = CHART / "values.schema.json"
VALUES = CHART / "values.yaml"
BEGIN = "<!-- values: generated from values.schema.json and values.yaml, do not edit -->"
END = "<!-- end of values -->"
# Kubernetes structures and label maps passed through whole: one row each, not their keys.
OPAQUE_DEFS = {"resources", "podSecurityContext", "containerSecurityContext", "labels"}
Obj = dict[str, Any]


def _resolve(schema: Obj, node: Obj) -> tuple[str | None, Obj]:
    ref = node.get("$ref")
    if not ref:
        return None, node
    name = ref.rsplit("/", 1)[-1]
    return name, schema["$defs"][name]


def rows(schema: Obj | None = None) -> list[tuple[str, Obj, Obj]]:
    """(dotted path, the property's own node, its resolved node) of every documented value,
    depth first in the schema's order."""
    schema = schema if schema is not None else json.loads(SCHEMA.read_text(encoding="utf-8"))
    out: list[tuple[str, Obj, Obj]] = []

    def walk(node: Obj, path: str) -> None:
        ref, resolved = _resolve(schema, node)
        children = resolved.get("properties")
        if children and ref not in OPAQUE_DEFS:
            for key, child in children.items():
                walk(child, f"{path}.{key}" if path else key)
        elif path:
            out.append((path, node, resolved))

    walk(schema, "")
    return out


def description(node: Obj, resolved: Obj) -> str:
    return str(node.get("description") or resolved.get("description") or "")


def _type(schema: Obj, resolved: Obj) -> str:
    if "enum" in resolved:
        return " \\| ".join(json.dumps(v) for v in resolved["enum"])
    if "const" in resolved:
        return json.dumps(resolved["const"])
    if "anyOf" in resolved:
        kinds = [_type(schema, _resolve(schema, option)[1]) for option in resolved["anyOf"]]
        if "string" in kinds:  # "" is a string too
            kinds = [k for k in kinds if k != '""']
        return " or ".join(dict.fromkeys(k for k in kinds if k))
    kind = resolved.get("type", "")
    kinds = kind if isinstance(kind, list) else [kind]
    if "array" in kinds and "items" in resolved:
        return f"list of {_type(schema, _resolve(schema, resolved['items'])[1])}"
    if "pattern" in resolved and kinds == ["string"] and resolved["pattern"].startswith("^$|"):
        return "string"
    return " or ".join(k for k in kinds if k) or "object"


def _default(values: Obj, path: str) -> str:
    node: Any = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return ""
        node = node[key]
    text = json.dumps(node, ensure_ascii=False, separators=(", ", ": "))
    return f"`{text}`".replace("|", "\\|")


def render() -> str:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    values = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    lines = [BEGIN, "", "| value | type | default | description |", "|---|---|---|---|"]
    for path, node, resolved in rows(schema):
        text = description(node, resolved).replace("|", "\\|")
        lines.append(f"| `{path}` | {_type(schema, resolved)} | {_default(values, path)} "
                     f"| {text} |")
    return "\n".join([*lines, "", END])


def documented(readme: str) -> str:
    """The table as committed: from BEGIN to END."""
    start, end = readme.index(BEGIN), readme.index(END) + len(END)
    return readme[start:end]


def main() -> int:
    readme = README.read_text(encoding="utf-8")
    README.write_text(readme.replace(documented(readme), render()), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
