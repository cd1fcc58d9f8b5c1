"""Upgrading a release from the chart as it was before its last CRD fields were added
(tests/fixtures/charts/whisperfleet-before-workers-env: spec.workers.env, podLabels,
podAnnotations and serviceAccountName did not exist) to the current chart, by the documented
steps: the CRDs applied first (helm never updates crds/), then `helm upgrade`.

A TranscriptionJob made under the old release is held suspended across the upgrade; after
it, the new operator (the upgraded Deployment's command and env) finishes it, and the API
server serves the new fields. The session's operator stands aside meanwhile (it watches
every namespace too). The cluster's CRD is the old one only during this test: the upgrade
step (or, on failure, the cleanup) puts the current one back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.cluster import transcription_jobs as tjs
from tests.cluster.admission import Admission, tj
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.whisperfleet_release import (
    CRD_NAME,
    OperatorProcess,
    install_chart,
    release_of,
)
from tests.support.paths import AUDIO, CHART, FIXTURES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
PREVIOUS_CHART = FIXTURES / "charts" / "whisperfleet-before-workers-env"
TERMINAL = ("Succeeded", "PartiallySucceeded", "Failed")
NEW_FIELDS = {"env": [{"name": "HTTPS_PROXY", "value": "http://proxy.example:3128"}],
              "podLabels": {"team": "speech"}}


def apply_crds(cluster: LocalCluster, chart: str) -> None:
    """The documented upgrade step: `kubectl apply --server-side --force-conflicts -f
    <chart>/crds/` (server-side, as helm's client-side create left no last-applied state)."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", f"{chart}/crds/")
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")


def served_workers_fields(cluster: LocalCluster) -> set[str]:
    crd = json.loads(cluster.kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    (version,) = [v for v in crd["spec"]["versions"] if v["served"]]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return set(spec["properties"]["workers"]["properties"])


@pytest.fixture
def old_crd(cluster: LocalCluster, operator: OperatorProcess) -> Iterator[None]:
    """The previous chart's CRD in the cluster, the session's operator stopped; both put
    back afterwards."""
    operator.stop()
    try:
        apply_crds(cluster, str(PREVIOUS_CHART))
        yield
    finally:
        apply_crds(cluster, str(CHART))
        operator.start()


def test_a_release_of_the_previous_chart_upgrades_and_its_job_finishes(
        cluster: LocalCluster, job_namespace: str, old_crd: None) -> None:
    ns = job_namespace
    assert not set(NEW_FIELDS) & served_workers_fields(cluster)
    values = {"watchNamespaces": [ns], "metrics": {"progressIntervalSeconds": 1}}
    old = install_chart(cluster, "wf-up", f"{ns}-ops", values, chart=PREVIOUS_CHART)
    bucket = tjs.bucket_with(cluster, {f"in/{n}.wav": AUDIO / "hello.wav" for n in "ab"})
    before = OperatorProcess(cluster, old, cluster.state_dir / f"operator-{ns}-old").start()
    try:
        tjs.create(cluster, ns, "across", tjs.job_spec(cluster, bucket, suspend=True))
        held = tjs.wait_for(cluster, ns, "across", "Suspended", *TERMINAL)
        assert held["status"]["phase"] == "Suspended", json.dumps(held["status"], indent=1)
        # The old CRD does not know the new fields: kubectl's strict validation refuses them.
        admission = Admission(cluster.api_client())
        refused = admission.create(tjs.tj_path(ns), tj("new", workers=NEW_FIELDS))
        assert not refused.accepted and "unknown field" in refused.message, refused
    finally:
        before.stop()  # a rollout replaces the old pod

    apply_crds(cluster, str(CHART))
    cluster.helm("upgrade", "wf-up", str(CHART), "--namespace", f"{ns}-ops",
                 "--reset-then-reuse-values", "--wait=false")
    assert set(NEW_FIELDS) <= served_workers_fields(cluster)
    new = release_of(cluster, "wf-up", f"{ns}-ops")
    assert new.env != old.env  # the upgraded Deployment, not the old one
    after = OperatorProcess(cluster, new, cluster.state_dir / f"operator-{ns}-new").start()
    try:
        cluster.kubectl("patch", "tj", "across", "-n", ns, "--type=merge",
                        "-p", '{"spec": {"suspend": false}}')
        done = tjs.wait_for(cluster, ns, "across", *TERMINAL)
        assert done["status"]["phase"] == "Succeeded", after.log_tail()
        assert done["status"]["files"]["succeeded"] == 2
        assert done["status"]["startTime"] == held["status"]["startTime"]
        # The new fields are served now, and kept as given.
        accepted = admission.create(tjs.tj_path(ns), tj("new", workers=NEW_FIELDS))
        assert accepted.accepted, accepted
        assert {k: accepted.body["spec"]["workers"][k] for k in NEW_FIELDS} == NEW_FIELDS
    finally:
        after.stop()
