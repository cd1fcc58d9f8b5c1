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


def _ci_debian_packages() -> set[str]:
    text = (REPO / ".ci" / "run").read_text()
    loop = re.search(r"for package in (.*?); do", text, re.S)
    assert loop, ".ci/run must name its Debian packages in one `for package in …; do` loop"
    return set(loop.group(1).replace("\\\n", " ").split())


def test_readme_names_the_debian_packages_ci_installs() -> None:
    """A user who follows the README installs what CI installs: the image and real-node tests
    fail without these packages."""
    text = (REPO / "README.md").read_text()
    named = re.search(r"`apt-get install -y ([^`]*)`", text)
    assert named, "README must say which Debian packages the tests need"
    assert set(named.group(1).split()) == _ci_debian_packages()
