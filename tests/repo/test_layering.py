"""Imports flow one way: cli -> local | pod -> core -> storage | gpu -> the contract.

A module may import its own layer and the layers below, never above, and never a sibling
package of its layer (local and pod stay apart, so do storage and gpu). The operator may
import only the runner's contract (`config`): nothing that pulls in faster-whisper.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

RUNNER = REPO / "job_runner" / "whisperfleet_runner"
OPERATOR = REPO / "operator" / "whisperfleet_operator"
CONTRACT = {"config", "transcript"}
CORE = {"audio", "audio_header", "damage", "models", "engine", "packing", "packed_decode",
        "formats", "ledger", "batch", "overlap", "scheduler", "worker", "metrics",
        "accounting", "inprocess", "speech_chunks", "encoder", "chunk_decode", "chunk_batcher",
        "prepare", "outbox", "lazy_engine"}
# layer number and, for packages, the package: a module may import lower layers, its own
# package, and core modules of its own layer.
LAYERS = {"contract": 0, "storage": 1, "gpu": 1, "core": 2, "local": 3, "pod": 3, "cli": 4}


def unit_of(module: str) -> str:
    """`whisperfleet_runner.gpu.nvml` -> "gpu"; `…engine` -> "core"; `…config` -> "contract"."""
    parts = module.split(".")[1:]
    if not parts or parts == ["__init__"]:
        return "package"
    head = parts[0]
    if head in CONTRACT:
        return "contract"
    if head in CORE:
        return "core"
    if head in LAYERS:
        return head
    raise AssertionError(f"{module}: not placed in a layer (add it to tests/repo/test_layering)")


def allowed(importer: str, imported: str) -> bool:
    source, target = unit_of(importer), unit_of(imported)
    if target == "package":  # __version__ only
        return True
    if source == "package":
        return False
    return source == target or LAYERS[target] < LAYERS[source]


def imports_of(path: Path, root: Path) -> list[str]:
    """Every whisperfleet_* module `path` imports (relative imports resolved; `from pkg
    import name` counts as importing pkg.name when that is a module)."""
    parts = module_name(path, root).split(".")
    package = parts[:-1]  # a module's relative imports start from its package
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.append(target)
            found += [f"{target}.{a.name}" for a in node.names
                      if _is_module(f"{target}.{a.name}")]
    return [m for m in found if m.startswith(("whisperfleet_runner", "whisperfleet_operator"))]


def _is_module(dotted: str) -> bool:
    for top in (RUNNER.parent, OPERATOR.parent):
        path = top / Path(*dotted.split("."))
        if path.is_dir() or path.with_suffix(".py").exists():
            return True
    return False


def module_name(path: Path, root: Path) -> str:
    """`…/whisperfleet_runner/gpu/nvml.py` -> `whisperfleet_runner.gpu.nvml`; a package's
    `__init__.py` keeps `__init__`, so its relative imports resolve from the package."""
    return ".".join(path.relative_to(root.parent).with_suffix("").parts)


def test_the_rule_refuses_upward_and_sideways_imports() -> None:
    assert allowed("whisperfleet_runner.cli.transcribe", "whisperfleet_runner.scheduler")
    assert allowed("whisperfleet_runner.pod.shard", "whisperfleet_runner.gpu.devices")
    assert allowed("whisperfleet_runner.batch", "whisperfleet_runner.storage.keys")
    assert allowed("whisperfleet_runner.gpu.devices", "whisperfleet_runner.gpu.nvml")
    assert not allowed("whisperfleet_runner.batch", "whisperfleet_runner.pod.shard")
    assert not allowed("whisperfleet_runner.pod.shard", "whisperfleet_runner.local.inputs")
    assert not allowed("whisperfleet_runner.storage.errors", "whisperfleet_runner.gpu.nvml")
    assert not allowed("whisperfleet_runner.config", "whisperfleet_runner.storage")
    assert not allowed("whisperfleet_runner.engine", "whisperfleet_runner.cli.options")
    jobs = imports_of(OPERATOR / "jobs.py", OPERATOR)
    assert "whisperfleet_runner.config" in jobs and "whisperfleet_operator.gpu" in jobs


def test_runner_imports_flow_downward() -> None:
    problems = []
    for path in sorted(RUNNER.rglob("*.py")):
        importer = module_name(path, RUNNER)
        for imported in imports_of(path, RUNNER):
            if imported.startswith("whisperfleet_operator"):
                problems.append(f"{importer} imports the operator ({imported})")
            elif not allowed(importer, imported):
                problems.append(f"{importer} ({unit_of(importer)}) imports {imported} "
                                f"({unit_of(imported)})")
    assert problems == []


def test_the_operator_imports_only_the_runners_contract() -> None:
    problems = []
    for path in sorted(OPERATOR.rglob("*.py")):
        for imported in imports_of(path, OPERATOR):
            if imported.startswith("whisperfleet_runner") and imported not in (
                    "whisperfleet_runner", "whisperfleet_runner.config"):
                problems.append(f"{module_name(path, OPERATOR)} imports {imported}")
    assert problems == []
