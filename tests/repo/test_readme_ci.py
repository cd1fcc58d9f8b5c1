"""The README's two opening commands are the ones CI and users actually run."""

import re

from tests.support.paths import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert first_block, "README must open with a bash block"
    return [ln for ln in first_block.group(1).splitlines() if ln and not ln.startswith("#")]


def test_readme_opens_with_main_job_then_tests() -> None:
    main_job, tests = _readme_commands()
    assert "whisperfleet transcribe examples/audio" in main_job
    assert tests.endswith("python -m pytest")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    _, tests = _readme_commands()
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert tests in ci_lines


def test_constraints_pin_every_runtime_dependency_once() -> None:
    lines = (REPO / ".ci" / "constraints.txt").read_text().splitlines()
    names = [ln.split("==")[0].lower() for ln in lines if "==" in ln]
    assert len(names) == len(set(names))
    for required in ("faster-whisper", "ctranslate2", "kopf", "moto", "s3fs"):
        assert required in names
