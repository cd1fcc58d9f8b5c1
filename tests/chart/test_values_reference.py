"""The chart README's values table is generated, current and complete: every value in
values.yaml has a row and every row a description (tests/support/chart_values_reference.py)."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support import chart_values_reference as reference


def test_the_committed_values_table_is_what_the_schema_renders() -> None:
    readme = reference.README.read_text(encoding="utf-8")
    assert reference.documented(readme) == reference.render(), (
        "charts/whisperfleet/README.md is stale: run "
        "`python -m tests.support.chart_values_reference`")


def test_every_value_has_a_description() -> None:
    undescribed = [path for path, node, resolved in reference.rows()
                   if not reference.description(node, resolved).strip()]
    assert undescribed == []


def _paths(values: Any, prefix: str = "") -> list[str]:
    if not isinstance(values, dict) or not values:
        return [prefix]
    out: list[str] = []
    for key, child in values.items():
        out += _paths(child, f"{prefix}.{key}" if prefix else key)
    return out


def test_every_key_of_values_yaml_is_a_row_of_the_table() -> None:
    """A key added to values.yaml without the schema (or the other way round) shows here."""
    rows = {path for path, _, _ in reference.rows()}
    values = yaml.safe_load(reference.VALUES.read_text(encoding="utf-8"))
    missing = [path for path in _paths(values)
               if not any(path == row or path.startswith(f"{row}.") for row in rows)]
    assert missing == []
