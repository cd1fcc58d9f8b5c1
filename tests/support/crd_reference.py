"""The field reference of docs/transcriptionjob.md, rendered from the CRD (its one source).

Every spec and status field gets a row: type, default, the rules admission enforces (enums,
bounds, CEL messages that name it) and its description. tests/repo/test_docs.py fails when
the committed reference differs from what the CRD renders; to refresh it after changing the
CRD, run `python -m tests.support.crd_reference` from the repository root.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import CRD, REPO

DOC = REPO / "docs" / "transcriptionjob.md"
BEGIN = "<!-- field reference: generated from crds/transcriptionjob.yaml, do not edit -->"
END = "<!-- end of field reference -->"
# Core Kubernetes structures passed through as they are: one row each, not their insides.
OPAQUE = {"tolerations", "affinity", "resources", "nodeSelector"}
Obj = dict[str, Any]


def fields(schema: Obj, path: str) -> list[tuple[str, Obj]]:
    """(path, node) of every documented field under `schema`, depth first."""
    out: list[tuple[str, Obj]] = []
    name = path.rsplit(".", 1)[-1]
    if name in OPAQUE:
        return [(path, schema)]
    props = schema.get("properties") or {}
    items = schema.get("items") or {}
    if props:
        if "." in path:
            out.append((path, schema))
        for key, child in props.items():
            out += fields(child, f"{path}.{key}")
    elif schema.get("type") == "array" and items.get("properties"):
        out.append((path, schema))
        for key, child in items["properties"].items():
            out += fields(child, f"{path}[].{key}")
    else:
        out.append((path, schema))
    return out


def cel_messages(schema: Obj, path: str) -> dict[str, list[str]]:
    """CEL messages by the field they name (else the object they are declared on)."""
    found: dict[str, list[str]] = {}
    for rule in schema.get("x-kubernetes-validations") or []:
        message = str(rule.get("message") or rule.get("messageExpression") or rule["rule"])
        named = re.match(r"(spec(?:\.[A-Za-z]+|\[\])+)", message)
        found.setdefault(named.group(1) if named else path, []).append(message)
    for key, child in (schema.get("properties") or {}).items():
        for field, messages in cel_messages(child, f"{path}.{key}").items():
            found.setdefault(field, []).extend(messages)
    if "items" in schema:
        for field, messages in cel_messages(schema["items"], f"{path}[]").items():
            found.setdefault(field, []).extend(messages)
    return found


def bounds(node: Obj) -> list[str]:
    rules = []
    if "enum" in node:
        rules.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "enum" in (node.get("items") or {}):
        rules.append("each one of " + ", ".join(f"`{v}`" for v in node["items"]["enum"]))
    for key, text in (("minimum", "≥ {}"), ("maximum", "≤ {}"), ("minLength", "≥ {} chars"),
                      ("maxLength", "≤ {} chars"), ("minItems", "≥ {} items"),
                      ("maxItems", "≤ {} items"), ("maxProperties", "≤ {} entries")):
        if key in node:
            rules.append(text.format(node[key]))
    return rules


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(rows: list[tuple[str, Obj]], messages: dict[str, list[str]]) -> str:
    lines = ["| Field | Type | Default | Rules | Description |", "|---|---|---|---|---|"]
    for path, node in rows:
        default = f"`{json.dumps(node['default'])}`" if "default" in node else ""
        rules = bounds(node) + messages.get(path, [])
        lines.append(f"| `{path}` | {node.get('type', 'object')} | {_cell(default)} | "
                     f"{_cell('; '.join(rules))} | {_cell(node.get('description', ''))} |")
    return "\n".join(lines)


def columns(version: Obj) -> str:
    """The printer columns: what `kubectl get tj` shows, and `-o wide` adds."""
    lines = ["| Column | Shown by | From | Description |", "|---|---|---|---|"]
    for column in version.get("additionalPrinterColumns") or []:
        shown = "`kubectl get tj -o wide`" if column.get("priority") else "`kubectl get tj`"
        lines.append(f"| {column['name']} | {shown} | `{column['jsonPath']}` | "
                     f"{_cell(column.get('description', ''))} |")
    return "\n".join(lines)


def render(crd: Obj | None = None) -> str:
    crd = crd or yaml.safe_load(CRD.read_text(encoding="utf-8"))
    (version,) = crd["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]["properties"]
    messages = cel_messages(root["spec"], "spec")
    return "\n\n".join([
        BEGIN,
        "### Printer columns",
        columns(version),
        "### spec",
        table(fields(root["spec"], "spec"), messages),
        "### status",
        table(fields(root["status"], "status"), {}),
        END,
    ])


def documented(doc: str) -> str:
    """The generated part of the committed doc ("" when the markers are missing)."""
    start, end = doc.find(BEGIN), doc.find(END)
    return doc[start:end + len(END)] if start >= 0 and end > start else ""


def main() -> None:
    text = DOC.read_text(encoding="utf-8")
    old = documented(text)
    if not old:
        sys.exit(f"{DOC}: the markers {BEGIN!r} and {END!r} are missing")
    DOC.write_text(text.replace(old, render()), encoding="utf-8")
    print(f"rewrote the field reference in {Path(DOC).relative_to(REPO)}")


if __name__ == "__main__":
    main()
