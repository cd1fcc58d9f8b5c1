"""Registers the local-cluster fixtures for tests in this folder."""

from tests.cluster.fixtures import (
    cluster,
    job_namespace,
    namespace,
    operator,
    release,
)

__all__ = ["cluster", "job_namespace", "namespace", "operator", "release"]
