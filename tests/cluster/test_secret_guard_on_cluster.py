"""The secret guard reads what a namespace of the local cluster shows: it learns the values
of the namespace's Secrets, and finds a value in a pod's termination message and log and in
an Event. (The value shown here is not a Secret of the namespace, so the guard of this very
test has nothing to flag; the checker is called directly with it.)"""

from __future__ import annotations

import base64

import pytest

from tests.cluster.local_cluster import LocalCluster
from tests.cluster.manifests import restricted_pod
from tests.cluster.waiting import eventually
from tests.support import secret_sources
from tests.support.secrets_guard import Secrets

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
SHOWN = "shown-Value/of-the-guard-test-9876"
HELD = "held-Value-of-the-guard-test-5432"
# The stand-in kubelet points env values equal to the termination message path at its file.
ECHO = ("import os; print('key', os.environ['SHOWN'], flush=True); "
        "open(os.environ['TERMINATION_LOG'], 'w').write('done with ' + os.environ['SHOWN'])")


def test_the_guard_reads_secrets_pods_and_events_of_the_namespace(
    cluster: LocalCluster, namespace: str
) -> None:
    rest = cluster.rest()
    rest.create(f"/api/v1/namespaces/{namespace}/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "data": {k: base64.b64encode(v.encode()).decode()
                 for k, v in {"TOKEN": HELD, "REGION": "eu-1"}.items()}})
    rest.create(f"/api/v1/namespaces/{namespace}/pods", restricted_pod(
        "echo", ["python3", "-c", ECHO], tolerate_gpu=False,
        container={"env": [{"name": "SHOWN", "value": SHOWN},
                           {"name": "TERMINATION_LOG", "value": "/dev/termination-log"}]}))
    rest.create(f"/api/v1/namespaces/{namespace}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "guard.1"},
        "involvedObject": {"kind": "Pod", "name": "echo", "namespace": namespace},
        "reason": "Leaky", "message": f"signed with {SHOWN}", "type": "Warning"})

    def finished() -> bool:
        pod = rest.get(f"/api/v1/namespaces/{namespace}/pods/echo") or {}
        return (pod.get("status") or {}).get("phase") == "Succeeded"

    eventually(finished, timeout=60, what="pod echo to succeed")
    held = secret_sources.cluster_secrets(cluster, namespace)
    assert held[f"Secret {namespace}/creds TOKEN"] == HELD
    assert held["the cluster's S3 secret key"] == cluster.s3.secret_key
    guarded = Secrets()
    guarded.add_found(held)
    assert guarded.mask(f"x{HELD}x") == f"x<Secret {namespace}/creds TOKEN>x"  # watched
    assert guarded.mask("eu-1") == "eu-1"  # too short to be a credential: not watched

    secrets = Secrets({"the shown value": SHOWN})
    channels = {leak.channel for channel, text in secret_sources.cluster_texts(cluster, namespace)
                for leak in secrets.find(channel, text)}
    assert channels == {f"pod {namespace}/echo status", f"pod {namespace}/echo log",
                        "Event Leaky of Pod/echo"}
