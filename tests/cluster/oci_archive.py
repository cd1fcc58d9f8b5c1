"""A one-layer OCI image archive made from local files, for `ctr images import`.

Owns the OCI image-layout tar (oci-layout, index.json, blobs: a gzipped layer, the image
config and the manifest) that containerd imports without any registry. The real node's
pause (sandbox) image is made this way from the pause binary built here; nothing is pulled.
Standard library only.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

NAME_ANNOTATION = "io.containerd.image.name"  # what `ctr images import` names the image by
REF_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class ImageFile:
    """One file of the image's single layer."""

    path: str  # inside the image, without a leading /
    data: bytes
    mode: int = 0o755


@dataclass(frozen=True)
class ImageSpec:
    """What the image runs: its files, entrypoint, user and environment."""

    ref: str  # e.g. whisperfleet.local/pause:3.10.2
    files: tuple[ImageFile, ...]
    entrypoint: tuple[str, ...]
    user: str = ""
    env: tuple[str, ...] = field(default_factory=tuple)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layer(files: tuple[ImageFile, ...]) -> tuple[bytes, bytes]:
    """(gzipped layer, uncompressed tar): the config names the latter's digest (diff id)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = sorted({str(Path(f.path).parent) for f in files} - {"."})
        for directory in directories:
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for item in files:
            info = tarfile.TarInfo(item.path)
            info.size, info.mode = len(item.data), item.mode
            tar.addfile(info, io.BytesIO(item.data))
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0), raw  # mtime 0: the same files give the same digest


def write_archive(spec: ImageSpec, archive: Path) -> Path:
    """Write `spec` as an OCI image-layout tar at `archive`."""
    layer, diff = _layer(spec.files)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": list(spec.entrypoint), "User": spec.user,
                   "Env": list(spec.env)},
        "rootfs": {"type": "layers", "diff_ids": [_digest(diff)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _digest(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": _digest(manifest), "size": len(manifest),
                       "annotations": {NAME_ANNOTATION: spec.ref, REF_ANNOTATION: spec.ref}}],
    }, sort_keys=True).encode()
    entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for blob in (layer, config, manifest):
        entries["blobs/sha256/" + _digest(blob).split(":", 1)[1]] = blob
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return archive
