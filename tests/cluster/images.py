#!/usr/bin/env python3
"""Builds the operator and runner images from their Dockerfiles without a Docker daemon, and
caches them: a Debian base made with mmdebstrap (debian_base.py), then buildah (buildah.py)
builds the unchanged Dockerfiles on it and exports each image as an OCI archive.

    python3 tests/cluster/images.py    # build what is missing, print one JSON line:
    {"operator": {"ref": "localhost/whisperfleet-operator:<key>", "archive": "….oci.tar"},
     "runner": {…}}

In Python: `build_images() -> dict[str, BuiltImage]` (`.ref`, `.archive`). An archive is an
OCI image layout tar whose index names the image `ref`, for `ctr -n k8s.io images import`.

The set is cached in `${XDG_CACHE_HOME:-~/.cache}/whisperfleet/images-<key>/`, keyed by the
Dockerfiles, every file of their build context (.dockerignore applied: the constraints, the
packages, pyproject.toml, README.md, the example audio), the base recipe, buildah's version
and build flags, and the archive layout; the base alone in `debian-<suite>-<key>/`.
Concurrent callers wait on a file lock.
The buildah store that built a set stays beside its archives, so tests can run the images.

Needs, as root: mmdebstrap and buildah (Debian packages; .ci/run installs them), and the
Debian and PyPI registries. Standard library only: CI starts it before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# Run as a script, this folder is sys.path[0]: drop it, so these modules are imported the one
# way pytest imports them (tests.cluster.<module>), never twice.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.cluster import build, debian_base  # noqa: E402
from tests.cluster.build_context import context_files  # noqa: E402
from tests.cluster.buildah import (  # noqa: E402
    ARCHIVE_LAYOUT,
    BUILD_FLAGS,
    Buildah,
    BuildahError,
)

DOCKERFILES = {
    "operator": Path("operator/Dockerfile"),
    "runner": Path("job_runner/Dockerfile"),
}
RESULT = "images.json"  # written last: a set without it is incomplete
REF_FORMAT = "localhost/whisperfleet-{name}:{key}"  # never pulled: no registry serves localhost/
# The pip secrets the Dockerfiles' install step mounts (RUN --mount=type=secret): this
# machine reaches PyPI through a TLS proxy that its own CA bundle trusts, so pip in the
# build trusts that bundle too. Nothing of it stays in an image.
PIP_CONF = "[global]\ncert = /run/secrets/pip-ca.crt\ntimeout = 120\nretries = 10\n"


class ImageBuildError(RuntimeError):
    """The images could not be built; the message says why."""


@dataclass(frozen=True)
class BuiltImage:
    """One built image: its name in the store and in its archive, and the archive."""

    ref: str
    archive: Path

    def as_json(self) -> dict[str, str]:
        return {"ref": self.ref, "archive": str(self.archive)}


def available() -> bool:
    """Whether this machine can build the images (the programs; network is not checked)."""
    return all(shutil.which(p) for p in ("mmdebstrap", "buildah")) and os.geteuid() == 0


def cache_key() -> str:
    """A short hash of everything that decides the images."""
    digest = hashlib.sha256()
    for rel in context_files(REPO):
        digest.update(rel.encode() + b"\0" + (REPO / rel).read_bytes() + b"\0")
    for path in DOCKERFILES.values():  # inside the context's exclusions, so hashed here
        digest.update(str(path).encode() + b"\0" + (REPO / path).read_bytes())
    recipe = [debian_base.recipe_key(), BUILD_FLAGS, ARCHIVE_LAYOUT, PIP_CONF, REF_FORMAT,
              Buildah.version()]
    digest.update(json.dumps(recipe).encode())
    return digest.hexdigest()[:12]


def set_dir() -> Path:
    return build.cache_root() / f"images-{cache_key()}"


def base_tar() -> Path:
    return (build.cache_root() / f"debian-{debian_base.SUITE}-{debian_base.recipe_key()}"
            / "rootfs.tar")


def builder(directory: Path) -> Buildah:
    """The buildah store of the set in `directory`."""
    return Buildah(directory / "storage", directory / "run")


def _read(directory: Path) -> dict[str, BuiltImage] | None:
    try:
        data = json.loads((directory / RESULT).read_text())
    except (OSError, ValueError):
        return None
    images = {name: BuiltImage(d["ref"], Path(d["archive"])) for name, d in data["images"].items()}
    if set(images) != set(DOCKERFILES) or not all(i.archive.is_file() for i in images.values()):
        return None
    return images


def cached_images() -> dict[str, BuiltImage] | None:
    """The set if the cache already holds it complete (nothing is built)."""
    return _read(set_dir())


def _log(message: str) -> None:
    print(f"images.py: {message}", file=sys.stderr, flush=True)


def _ensure_base() -> Path:
    target = base_tar()
    if target.is_file():
        return target
    with build._exclusive(target.parent.with_suffix(".lock")):
        if not target.is_file():
            began = time.monotonic()
            _log(f"making the Debian {debian_base.SUITE} base with mmdebstrap ...")
            try:
                debian_base.make_rootfs(target)
            except debian_base.BaseError as error:
                raise ImageBuildError(str(error)) from error
            _log(f"base made in {time.monotonic() - began:.0f}s: {target}")
    return target


def _host_ca_bundle() -> Path:
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"),
                      ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ImageBuildError("no CA bundle on this machine for pip to trust PyPI with")


def _unmount_below(directory: Path) -> None:
    # A build that was killed can leave its container's overlay mounted in the store.
    prefix = str(directory) + "/"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1]
        if target.startswith(prefix):
            subprocess.run(["umount", "-l", target], check=False, capture_output=True)


def _build_set(directory: Path) -> dict[str, BuiltImage]:
    base = _ensure_base()
    _unmount_below(directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    store = builder(directory)
    secrets_dir = Path(tempfile.mkdtemp(prefix="secrets-", dir=directory))
    (secrets_dir / "pip.conf").write_text(PIP_CONF)
    shutil.copyfile(_host_ca_bundle(), secrets_dir / "pip-ca.crt")
    secrets = {"pip.conf": secrets_dir / "pip.conf", "pip-ca.crt": secrets_dir / "pip-ca.crt"}
    key = directory.name.removeprefix("images-")
    images: dict[str, BuiltImage] = {}
    sizes: dict[str, dict[str, object]] = {}
    try:
        store.import_rootfs(base, debian_base.IMAGE_NAME, debian_base.CONFIG)
        for name, dockerfile in DOCKERFILES.items():
            ref = REF_FORMAT.format(name=name, key=key)
            began = time.monotonic()
            _log(f"building {name} ({dockerfile}) ...")
            store.build(REPO, REPO / dockerfile, ref, secrets=secrets,
                        log=directory / f"{name}-build.log")
            built = time.monotonic() - began
            archive = directory / f"{name}.oci.tar"
            store.export_oci_archive(ref, archive)
            images[name] = BuiltImage(ref, archive)
            sizes[name] = {"build_seconds": round(built, 1),
                           "image_size": store.image_size(ref),
                           "archive_bytes": archive.stat().st_size}
            _log(f"built {name} in {built:.0f}s: {sizes[name]}")
    except BuildahError as error:
        raise ImageBuildError(str(error)) from error
    finally:
        shutil.rmtree(secrets_dir, ignore_errors=True)
    result = {"images": {n: i.as_json() for n, i in images.items()}, "sizes": sizes}
    (directory / RESULT).write_text(json.dumps(result, indent=1))
    return images


def build_images() -> dict[str, BuiltImage]:
    """Both images, building them first (under a file lock) if the cache lacks them."""
    directory = set_dir()
    found = _read(directory)
    if found is not None:
        return found
    if not available():
        raise ImageBuildError("building the images needs root, mmdebstrap and buildah: "
                              "apt-get install -y mmdebstrap buildah")
    with build._exclusive(directory.with_suffix(".lock")):
        found = _read(directory)  # the caller before us may have built them meanwhile
        if found is None:
            began = time.monotonic()
            found = _build_set(directory)
            _log(f"images built in {time.monotonic() - began:.0f}s: {directory}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    try:
        images = build_images()
    except ImageBuildError as error:
        _log(f"error: {error}")
        return 1
    print(json.dumps({name: image.as_json() for name, image in images.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
