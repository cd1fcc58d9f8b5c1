"""The one shape every module handles Kubernetes objects in: plain dicts, as the API returns
them (`Obj`), never client model classes."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]
