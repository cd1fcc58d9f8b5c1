"""Registers the local-cluster fixtures (`cluster`, `namespace`) for tests in this folder."""

from tests.cluster.fixtures import cluster, namespace, pytest_runtestloop

__all__ = ["cluster", "namespace", "pytest_runtestloop"]
