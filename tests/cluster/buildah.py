"""Debian's buildah, driven for the images built here: one private store per image set, the
Debian base imported into it, Dockerfiles built with no Docker daemon, images exported as
OCI archives, and commands run inside a built image.

Why buildah: it is one Debian package (`apt-get install buildah`, seconds), builds
Dockerfiles as root with no daemon, and with `--isolation chroot` needs no OCI runtime at
all; BuildKit would first have to be built from its Go module and run as a daemon
(buildkitd) with a runc or containerd worker. RUN steps share this machine's network,
whose only reachable hosts are the package registries the Dockerfiles install from.

Standard library only (CI builds the images before any virtualenv exists).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path

ISOLATION = "chroot"
STORAGE_DRIVER = "overlay"
# Everything of a build but the Dockerfile, its context and tag: part of the images' cache key.
BUILD_FLAGS = ("--isolation", ISOLATION, "--network", "host", "--pull=never", "--format", "oci",
               "--layers=false")
# io.containerd.image.name: `ctr images import` names an image by this annotation; a bare
# org.opencontainers.image.ref.name is filtered out unless it starts with ctr's --base-name.
CONTAINERD_NAME = "io.containerd.image.name"
# What export_oci_archive writes, in the cache key too: bump it when that changes.
ARCHIVE_LAYOUT = f"oci-layout tar, {CONTAINERD_NAME} on each manifest, v1"


class BuildahError(RuntimeError):
    """A buildah command failed; the message holds the command and the end of its output."""


class Buildah:
    """buildah with its own store (`root`) and run state (`runroot`)."""

    def __init__(self, root: Path, runroot: Path) -> None:
        self.root = root
        self.runroot = runroot

    @staticmethod
    def available() -> bool:
        return shutil.which("buildah") is not None

    @staticmethod
    def version() -> str:
        """`buildah --version`, e.g. "buildah version 1.28.2 (image-spec 1.1.0-rc2, …)"."""
        if not Buildah.available():
            return "none"
        return subprocess.run(["buildah", "--version"], capture_output=True, text=True,
                              check=False).stdout.strip()

    def command(self, *args: str) -> list[str]:
        return ["buildah", "--root", str(self.root), "--runroot", str(self.runroot),
                "--storage-driver", STORAGE_DRIVER, *args]

    def run_buildah(self, *args: str, log: Path | None = None, timeout: float | None = None,
                    ) -> str:
        if not self.available():
            raise BuildahError("`buildah` not found: apt-get install -y buildah")
        argv = self.command(*args)
        if log is None:
            result = subprocess.run(argv, capture_output=True, text=True, check=False,
                                    timeout=timeout)
            output, errors = result.stdout, result.stderr
        else:
            with log.open("a") as sink:
                sink.write(f"$ {' '.join(argv)}\n")
                sink.flush()
                result = subprocess.run(argv, stdout=sink, stderr=subprocess.STDOUT,
                                        text=True, check=False, timeout=timeout)
            output, errors = "", log.read_text(errors="replace")
        if result.returncode != 0:
            tail = "\n".join((errors or output).strip().splitlines()[-30:])
            raise BuildahError(f"`buildah {args[0]}` failed (exit {result.returncode}):\n{tail}")
        return output

    def import_rootfs(self, rootfs_tar: Path, name: str, config: dict[str, str]) -> None:
        """Store a root filesystem tar as the image `name` (one layer, `config` applied)."""
        container = self.run_buildah("from", "scratch").strip()
        try:
            self.run_buildah("add", container, str(rootfs_tar), "/")
            self.run_buildah("config", "--cmd", config["cmd"], "--env", config["env"], container)
            self.run_buildah("commit", "--quiet", container, name)
        finally:
            self.run_buildah("rm", container)

    def build(self, context: Path, dockerfile: Path, tag: str, *, secrets: dict[str, Path],
              log: Path) -> None:
        """`docker build -f dockerfile -t tag context`, with the base only from this store."""
        args = ["bud", *BUILD_FLAGS, "-f", str(dockerfile), "-t", tag]
        for name, path in secrets.items():
            args += ["--secret", f"id={name},src={path}"]
        self.run_buildah(*args, str(context), log=log)

    def export_oci_archive(self, tag: str, archive: Path) -> None:
        """Write `tag` as an OCI image-layout tar that `ctr images import` names `tag`."""
        layout = archive.with_name(archive.name + ".layout")
        shutil.rmtree(layout, ignore_errors=True)
        self.run_buildah("push", "--quiet", tag, f"oci:{layout}:{tag}")
        index_path = layout / "index.json"
        index = json.loads(index_path.read_text())
        for manifest in index["manifests"]:
            manifest.setdefault("annotations", {})[CONTAINERD_NAME] = tag
        index_path.write_text(json.dumps(index))
        partial = archive.with_name(archive.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            for path in sorted(layout.rglob("*")):
                tar.add(path, arcname=path.relative_to(layout).as_posix(), recursive=False)
        partial.rename(archive)
        shutil.rmtree(layout)

    def image_size(self, tag: str) -> str:
        """The image's size, uncompressed, as `buildah images` shows it (e.g. "288 MB")."""
        images = json.loads(self.run_buildah("images", "--json", tag))
        return str(images[0]["size"])

    def inspect(self, tag: str) -> dict[str, object]:
        """The image's OCI config (`config` section: User, Env, Entrypoint, …)."""
        data = json.loads(self.run_buildah("inspect", "--type", "image", tag))
        return dict(data["OCIv1"]["config"])

    def run_in_image(self, tag: str, argv: Sequence[str], *, timeout: float = 300,
                     ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in a fresh container of `tag`, as the image's user, with its env, and
        with no network: chroot isolation shares the caller's network namespace, so buildah
        runs in a new, empty one."""
        container = self.run_buildah("from", "--pull=never", "--quiet", tag).strip()
        try:
            return subprocess.run(
                ["unshare", "--net", *self.command("run", "--isolation", ISOLATION, container,
                                                   "--", *argv)],
                capture_output=True, text=True, check=False, timeout=timeout)
        finally:
            self.run_buildah("rm", container)
