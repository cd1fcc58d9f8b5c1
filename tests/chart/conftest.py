"""The real helm binary (v4), built from its Go module with the local cluster's binaries.

Without Go (and nothing built yet) these tests skip with one line, as the cluster tests do;
with WHISPERFLEET_REQUIRE_CLUSTER=1 (CI) that is an error instead.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cluster import build
from tests.cluster.fixtures import skip_without_go


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    """Path to an executable helm v4 binary."""
    skip_without_go()
    return build.ensure_binaries() / "helm"


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


def helm_env(home: Path) -> dict[str, str]:
    """An environment that keeps helm away from the user's kubeconfig, caches and plugins."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG"))}
    for var, sub in (
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ):
        env[var] = str(home / sub)
    env["KUBECONFIG"] = str(home / "no-kubeconfig")
    return env


Helm = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture(scope="session")
def helm(helm_bin: Path, helm_home: Path) -> Helm:
    """Run helm with arguments; fails the test with helm's stderr unless check=False."""
    version = subprocess.run([str(helm_bin), "version", "--short"], capture_output=True,
                             text=True, check=True, env=helm_env(helm_home)).stdout
    assert version.startswith("v4."), version

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(helm_bin), *args], capture_output=True, text=True,
                                env=helm_env(helm_home), timeout=120)
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run
