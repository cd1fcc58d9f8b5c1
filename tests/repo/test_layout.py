"""The repository layout users and packaging rely on."""

import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO


def test_top_level_folders_are_not_packages() -> None:
    # `operator/__init__.py` would shadow the standard library's `operator` module.
    assert not (REPO / "operator" / "__init__.py").exists()
    assert not (REPO / "job_runner" / "__init__.py").exists()


def test_import_operator_is_still_the_standard_library() -> None:
    code = "import operator, sys; print(operator.__file__); print(operator.add(2, 3))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[1] == "5"
    assert "site-packages" not in out[0] and not out[0].startswith(str(REPO))


def test_both_import_packages_are_installed() -> None:
    import whisperfleet_operator
    import whisperfleet_runner

    runner_dir = Path(whisperfleet_runner.__file__).parent
    operator_dir = Path(whisperfleet_operator.__file__).parent
    assert runner_dir == REPO / "job_runner" / "whisperfleet_runner"
    assert operator_dir == REPO / "operator" / "whisperfleet_operator"


def test_operator_never_imports_faster_whisper() -> None:
    code = (
        "import sys, whisperfleet_operator, whisperfleet_runner.contract\n"
        "import pkgutil, importlib\n"
        "for m in pkgutil.iter_modules(whisperfleet_operator.__path__):\n"
        "    importlib.import_module('whisperfleet_operator.' + m.name)\n"
        "bad = [m for m in sys.modules if m.startswith(('faster_whisper', 'ctranslate2'))]\n"
        "print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
