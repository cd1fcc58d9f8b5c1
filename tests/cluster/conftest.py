"""Registers the local-cluster and image fixtures for tests in this folder."""

from tests.cluster.fixtures import (
    built_images,
    cluster,
    job_namespace,
    kueue,
    kueue_namespace,
    namespace,
    node_binaries,
    operator,
    release,
)

__all__ = ["built_images", "cluster", "job_namespace", "kueue", "kueue_namespace", "namespace",
           "node_binaries", "operator", "release"]
