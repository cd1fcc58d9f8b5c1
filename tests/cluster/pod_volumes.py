"""Host folders standing in for a pod's volumes (there is no mount namespace).

Owns the mapping mountPath -> host path for one container: emptyDir is a fresh folder per
pod, persistentVolumeClaim a folder per (namespace, claimName) in the cluster's state
dir that outlives pods, hostPath the path itself, and secret/configMap volumes folders
filled with their keys. Projected and downwardAPI volumes are empty folders (not
materialised). A missing Secret/ConfigMap of a non-optional volume keeps the pod waiting
in ContainerCreating, as a failing mount does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cluster.pod_env import ContainerConfigError

Obj = dict[str, Any]
# (kind "secret"|"configmap", namespace, name) -> its data, or None when absent.
SourceReader = Callable[[str, str, str], "dict[str, str] | None"]


def _fill(folder: Path, data: dict[str, str], items: list[Obj] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    wanted = {item["key"]: item["path"] for item in items} if items else {k: k for k in data}
    for key, relative in wanted.items():
        if key in data:
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key], encoding="utf-8")


def _volume_folder(pod: Obj, volume: Obj, pod_dir: Path, state_dir: Path,
                   read_source: SourceReader) -> Path:
    namespace = pod["metadata"]["namespace"]
    name = volume["name"]
    if "persistentVolumeClaim" in volume:
        folder = state_dir / "pvcs" / namespace / volume["persistentVolumeClaim"]["claimName"]
    elif "hostPath" in volume:
        return Path(volume["hostPath"]["path"])
    else:
        folder = pod_dir / "volumes" / name
    folder.mkdir(parents=True, exist_ok=True)
    for kind, key, name_field in (("secret", "secret", "secretName"),
                                  ("configmap", "configMap", "name")):
        if key not in volume:
            continue
        source = volume[key]
        data = read_source(kind, namespace, source.get(name_field, ""))
        if data is None and not source.get("optional"):
            raise ContainerConfigError(
                f'MountVolume.SetUp failed for volume "{name}" : {kind} '
                f'"{source.get(name_field, "")}" not found', reason="ContainerCreating")
        _fill(folder, data or {}, source.get("items"))
    return folder


def container_mounts(pod: Obj, container: Obj, pod_dir: Path, state_dir: Path,
                     read_source: SourceReader) -> dict[str, Path]:
    """mountPath -> host path for each of the container's volumeMounts."""
    volumes = {volume["name"]: volume for volume in pod["spec"].get("volumes") or []}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None:
            raise ContainerConfigError(f"volume {mount['name']} is not in the pod's volumes")
        folder = _volume_folder(pod, volume, pod_dir, state_dir, read_source)
        if mount.get("subPath"):
            folder = folder / mount["subPath"]
            folder.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = folder
    return mounts
