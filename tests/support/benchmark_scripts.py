"""A script of benchmarks/ loaded as a module, for the smoke tests that run it small (the
folder is no package: its scripts are run by path)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from tests.support.paths import REPO


def benchmark_script(name: str) -> ModuleType:
    """benchmarks/<name>.py, imported afresh."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
