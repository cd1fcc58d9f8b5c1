"""Walking a CRD's OpenAPI schema: the offline contract tests and the admission tests on the
real API server address schema nodes by the same kubectl-style paths."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Obj = dict[str, Any]


def walk(node: Obj, path: str = "") -> Iterator[tuple[str, Obj]]:
    """Every schema node with its path, kubectl style: spec.workers.tolerations[], x.*."""
    yield path, node
    for key, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{key}" if path else key)
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
