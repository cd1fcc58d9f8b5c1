"""Rendering the chart with the real helm binary, shared by the chart's test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.support.paths import CHART

__all__ = ["CHART", "KUBE_VERSION", "NAMESPACE", "of_kind", "refused_by_schema", "render",
           "values_file"]

KUBE_VERSION = "1.34.0"  # DRA (resource.k8s.io/v1) is GA from 1.34
NAMESPACE = "whisperfleet-system"


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def render(helm: Any, tmp_path: Path, values: dict[str, Any],
           release: str = "wf") -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "--namespace", NAMESPACE,
               "--kube-version", KUBE_VERSION, "-f", values_file(tmp_path, values)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def refused_by_schema(helm: Any, tmp_path: Path, values: dict[str, Any], field: str) -> None:
    """`helm template` with `values` fails on values.schema.json, naming `field`."""
    result = helm("template", "wf", str(CHART), "-f", values_file(tmp_path, values),
                  check=False)
    assert result.returncode != 0, f"accepted: {values}\n{result.stdout[:500]}"
    assert "schema" in result.stderr, result.stderr
    assert field in result.stderr, result.stderr
