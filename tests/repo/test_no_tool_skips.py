"""No test skips because a program is missing, except the cluster tests without Go.

The README's test command must run every test on a fresh machine. A test that skips where a
tool is absent passes on the machines that have it (a developer's, CI's when CI installs it)
and quietly tests nothing everywhere else. A pytest hook collecting skip reasons would see
only the skips of the machine it runs on, so on a machine with the tool it could never fail;
this reads the source instead, which is the same everywhere. Every skip site in tests/ —
`skipif` marks (pytest's, unittest's), `pytest.skip` calls and the `if` tests above them,
`pytest.importorskip` — is scanned for the programs its condition looks up
(`shutil.which`, also through helper functions defined under tests/, as the cluster's Go
check goes through `build.go_available`). Only Go may be missing.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import REPO

ALLOWED = {"go"}  # the cluster tests build Kubernetes with Go; without it they skip
WHICH = {"which", "find_executable"}  # shutil.which, distutils' find_executable
SKIP_CALLS = {"skip", "importorskip"}
SKIP_MARKS = {"skipif", "skipIf", "skipUnless"}
HELPER_DEPTH = 4


@dataclass(frozen=True)
class Skip:
    where: str  # file:line
    programs: frozenset[str]  # programs the skip's condition looks up ("?" not a literal)
    kind: str


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def functions(trees: dict[Path, ast.Module]) -> dict[str, list[ast.AST]]:
    """Every function defined in the scanned tree, by name (one name may have several)."""
    found: dict[str, list[ast.AST]] = {}
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.setdefault(node.name, []).append(node)
    return found


def looked_up(node: ast.AST, helpers: dict[str, list[ast.AST]], depth: int = 0,
              seen: frozenset[str] = frozenset()) -> set[str]:
    """Programs `node` looks up with `which`, directly or through helpers under tests/."""
    programs: set[str] = set()
    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        name = _name(call.func)
        if name in WHICH:
            arg = call.args[0] if call.args else None
            literal = isinstance(arg, ast.Constant) and isinstance(arg.value, str)
            programs.add(arg.value if literal else "?")  # type: ignore[union-attr]
        elif name in helpers and name not in seen and depth < HELPER_DEPTH:
            for helper in helpers[name]:
                programs |= looked_up(helper, helpers, depth + 1, seen | {name})
    return programs


def _condition(call: ast.Call) -> ast.AST:
    condition = call.args[0] if call.args else next(
        (k.value for k in call.keywords if k.keyword == "condition"), ast.Constant(True))
    if isinstance(condition, ast.Constant) and isinstance(condition.value, str):
        return ast.parse(condition.value, mode="eval")  # skipif("shutil.which('x') is None")
    return condition


def skips(where: str, tree: ast.Module, helpers: dict[str, list[ast.AST]]) -> Iterator[Skip]:
    parents = {child: parent for parent in ast.walk(tree)
               for child in ast.iter_child_nodes(parent)}
    for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
        name = _name(call.func)
        if name in SKIP_MARKS:
            yield Skip(f"{where}:{call.lineno}", frozenset(
                looked_up(_condition(call), helpers)), name)
        elif name in SKIP_CALLS and isinstance(call.func, ast.Attribute) \
                and _name(call.func.value) == "pytest":
            if name == "importorskip":  # a missing module: the dev extra installs them all
                yield Skip(f"{where}:{call.lineno}", frozenset({"?"}), name)
                continue
            tests: list[ast.AST] = []
            node: ast.AST = call
            while node in parents:  # the `if` and `while` tests that lead to this skip
                node = parents[node]
                if isinstance(node, ast.If | ast.While | ast.IfExp):
                    tests.append(node.test)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    break
            yield Skip(f"{where}:{call.lineno}", frozenset(
                set().union(*(looked_up(t, helpers) for t in tests))), name)


def scan(files: list[Path], root: Path = REPO) -> list[Skip]:
    """Every skip site in `files` (named relative to `root`) and what its condition needs."""
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in files}
    helpers = functions(trees)
    return [skip for path, tree in trees.items()
            for skip in skips(str(path.relative_to(root)), tree, helpers)]


def test_no_test_skips_for_a_missing_program_other_than_go() -> None:
    found = scan(sorted((REPO / "tests").rglob("*.py")))
    offending = [f"{s.where}: {s.kind} looks up {sorted(s.programs)}" for s in found
                 if s.programs - ALLOWED]
    assert offending == [], (
        "tests that skip when a program (or module) is missing: make what they need part of "
        "the repository or of `pip install -e '.[dev]'` instead:\n" + "\n".join(offending))
    # The scan sees through helpers: the cluster and helm tests' skip is found, and found to
    # depend on Go (were it blind, the check above could never fail).
    go = {s.where.rsplit(":", 1)[0] for s in found if s.programs == {"go"}}
    assert go == {"tests/cluster/fixtures.py"}, found


def test_without_go_the_cluster_and_helm_tests_skip_with_one_line(tmp_path: Path) -> None:
    # No `go` on PATH and nothing built (an empty cache): what a fresh machine without Go sees.
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not os.path.exists(os.path.join(d, "go")))
    env = {k: v for k, v in os.environ.items() if k != "WHISPERFLEET_REQUIRE_CLUSTER"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/cluster/test_rbac.py", "tests/chart/test_chart.py"],
        cwd=REPO, env={**env, "PATH": path, "XDG_CACHE_HOME": str(tmp_path)},
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and "need Go >= 1.26" in skipped[0], skipped
    count = re.match(r"SKIPPED \[(\d+)\] tests/cluster/fixtures.py:\d+: ", skipped[0])
    assert count and int(count.group(1)) > 10, skipped  # every cluster and helm test here
    assert f" {count.group(1)} skipped" in result.stdout.splitlines()[-1]


def test_the_scan_catches_every_way_a_test_skips_for_a_missing_program(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    # The sample's skips are spelt out only when it is written, so that this file itself
    # holds no skip for a missing program.
    sample.write_text((
        "import shutil, pytest\n"
        "from shutil import which\n"
        "def have(tool):\n"
        "    return which(tool) is not None\n"
        "def sox():\n"
        "    return shutil.which('sox')\n"
        "@MARK_SKIPIF(shutil.which('espeak-ng') is None, reason='x')\n"
        "def test_mark(): ...\n"
        "pytestmark = [MARK_SKIPIF(not sox(), reason='helper')]\n"
        "def test_call():\n"
        "    if not shutil.which('ffmpeg'):\n"
        "        CALL_SKIP('no ffmpeg')\n"
        "def test_variable():\n"
        "    if not have('lame'):\n"
        "        CALL_SKIP('no lame')\n"
        "def test_module():\n"
        "    CALL_IMPORTORSKIP('jiwer')\n"
        "@MARK_SKIPIF(\"shutil.which('flac') is None\", reason='string condition')\n"
        "def test_string(): ...\n"
        "def test_other_reason():\n"
        "    if True:\n"
        "        CALL_SKIP('a real NVIDIA driver is present')\n"
        ).replace("MARK_SKIPIF", "pytest.mark." + "skipif")
        .replace("CALL_SKIP", "pytest." + "skip")
        .replace("CALL_IMPORTORSKIP", "pytest." + "importorskip"),
        encoding="utf-8")
    found = {s.where.rsplit(":", 1)[1]: s.programs for s in scan([sample], tmp_path)}
    assert found == {"7": {"espeak-ng"}, "9": {"sox"}, "12": {"ffmpeg"}, "15": {"?"},
                     "17": {"?"}, "18": {"flac"}, "22": set()}

