"""Imports flow one way, stage by stage: cli -> local | pod -> fleet -> pipeline -> decode ->
media -> storage | gpu -> contract.

A module may import its own package and the layers below, never above, and never a sibling
package of its layer (local and pod stay apart, so do storage and gpu). The operator may
import only the runner's contract (`contract`): nothing that pulls in faster-whisper.
Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO

RUNNER = REPO / "job_runner" / "whisperfleet_runner"
OPERATOR = REPO / "operator" / "whisperfleet_operator"
# The runner's packages, lowest first: a package may import those of a lower layer
# (`__main__`, the program, sits above the commands).
LAYERS = {"contract": 0, "storage": 1, "gpu": 1, "media": 2, "decode": 3, "pipeline": 4,
          "fleet": 5, "local": 6, "pod": 6, "cli": 7, "__main__": 8}


def unit_of(module: str) -> str:
    """`whisperfleet_runner.gpu.nvml` -> "gpu"; `whisperfleet_runner` -> "package"."""
    parts = module.split(".")[1:]
    if not parts or parts == ["__init__"]:
        return "package"
    if parts[0] in LAYERS:
        return parts[0]
    raise AssertionError(f"{module}: not in a layer's package (see LAYERS in "
                         "tests/repo/test_layering.py)")


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
    assert allowed("whisperfleet_runner.cli.transcribe", "whisperfleet_runner.fleet.scheduler")
    assert allowed("whisperfleet_runner.pod.shard", "whisperfleet_runner.gpu.devices")
    assert allowed("whisperfleet_runner.pipeline.run", "whisperfleet_runner.storage.keys")
    assert allowed("whisperfleet_runner.decode.engine", "whisperfleet_runner.media.audio")
    assert not allowed("whisperfleet_runner.media.audio", "whisperfleet_runner.decode.engine")
    assert not allowed("whisperfleet_runner.decode.engine", "whisperfleet_runner.pipeline.run")
    assert allowed("whisperfleet_runner.gpu.devices", "whisperfleet_runner.gpu.nvml")
    assert not allowed("whisperfleet_runner.pipeline.run", "whisperfleet_runner.pod.shard")
    assert not allowed("whisperfleet_runner.pod.shard", "whisperfleet_runner.local.inputs")
    assert not allowed("whisperfleet_runner.storage.errors", "whisperfleet_runner.gpu.nvml")
    assert not allowed("whisperfleet_runner.contract.options", "whisperfleet_runner.storage")
    assert not allowed("whisperfleet_runner.decode.engine", "whisperfleet_runner.cli.options")
    jobs = imports_of(OPERATOR / "builders" / "jobs.py", OPERATOR)
    assert "whisperfleet_runner.contract" in jobs and "whisperfleet_operator.builders.gpu" in jobs


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
                    "whisperfleet_runner", "whisperfleet_runner.contract") and not \
                    imported.startswith("whisperfleet_runner.contract."):
                problems.append(f"{module_name(path, OPERATOR)} imports {imported}")
    assert problems == []


# The operator's own layers: vocabulary, then the pure builders and status (apart from each
# other), then the API edge and what runs beside the handlers, then the reconciler, then kopf.
OPERATOR_LAYERS = {"objects": 0, "conditions": 1, "settings": 1, "spec": 1, "naming": 2,
                   "kueue": 2,
                   "builders": 3, "status": 3, "metrics": 3, "kube": 4, "changes": 4,
                   "retries": 4,
                   "progress": 5, "reconcile": 6, "handlers": 7}


def test_operator_imports_flow_from_handlers_to_pure_code() -> None:
    problems = []
    for path in sorted(OPERATOR.rglob("*.py")):
        importer = module_name(path, OPERATOR).split(".")
        if importer[1:] in ([], ["__init__"]):
            continue
        source = importer[1]
        for imported in imports_of(path, OPERATOR):
            parts = imported.split(".")
            if parts[0] != "whisperfleet_operator" or len(parts) < 2:
                continue
            target = parts[1]
            if target != source and OPERATOR_LAYERS[target] >= OPERATOR_LAYERS[source]:
                problems.append(f"{'.'.join(importer)} imports {imported}")
    assert problems == []
