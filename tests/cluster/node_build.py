#!/usr/bin/env python3
"""Builds the real node's binaries from pinned Go modules (and pause from its C source), cached.

Owns which binaries the real node runs and how each is built: kubelet and kube-proxy
(go/node, a wrapper of k8s.io/kubernetes with the control plane's generated replace list),
containerd with its runc shim and ctr (go/containerd), runc with seccomp (go/runc; cgo and
Debian's libseccomp-dev), the CNI plugins bridge, host-local, loopback and portmap (go/cni),
the stand-in GPU plugins written here (go/gpuplugins), and the pause (sandbox) binary from
the pause.c that ships in the k8s.io/kubernetes module (gcc -static). Each set is cached on
its own in ~/.cache/whisperfleet by version and hash (build.BinarySet), so a change to one
(the GPU plugins, say) does not rebuild the others, and none of them touches the control
plane's cache key.

Standard library only, like build.py: CI starts it in the background before the virtualenv.

    python3 tests/cluster/node_build.py    # build what is missing, print {name: path} as JSON
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__:
    from tests.cluster import build
else:  # run as a script: this folder is sys.path[0]
    import build  # type: ignore[no-redef]

Binary, BinarySet, BuildError = build.Binary, build.BinarySet, build.BuildError

CONTAINERD_VERSION = "v2.4.2"
RUNC_VERSION = "v1.5.3"
CNI_PLUGINS_VERSION = "v1.10.0"
# The pause image version kubelet 1.37 and containerd 2.4 expect (registry.k8s.io/pause).
PAUSE_VERSION = "3.10.2"
PAUSE_SOURCE = "build/pause/linux/pause.c"  # inside the k8s.io/kubernetes module
PAUSE_CFLAGS = ("-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{PAUSE_VERSION}-whisperfleet")
SECCOMP_HINT = "runc needs gcc and libseccomp-dev (Debian: apt-get install gcc libseccomp-dev)"

_CGO_ENV = (("CGO_ENABLED", "1"), ("GOWORK", "off"), ("GOFLAGS", ""))
_STATIC_ENV = tuple(build.BUILD_ENV.items())
_K8S_LDFLAGS = tuple(build.k8s_version_ldflags())

KUBERNETES_NODE = BinarySet("node", build.KUBERNETES_VERSION, tuple(
    Binary(name, "node", f"k8s.io/kubernetes/cmd/{name}", tags="selinux,notest",
           ldflags=_K8S_LDFLAGS) for name in build.NODE_COMMANDS), _STATIC_ENV)
CONTAINERD = BinarySet("containerd", CONTAINERD_VERSION, tuple(
    Binary(name, "containerd", f"github.com/containerd/containerd/v2/cmd/{name}",
           tags="no_btrfs", ldflags=(
               f"-X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}",))
    for name in ("containerd", "containerd-shim-runc-v2", "ctr")), _STATIC_ENV)
RUNC = BinarySet("runc", RUNC_VERSION, (
    # libpathrs (a Rust library) is left out: runc then uses its Go fallback.
    Binary("runc", "runc", "github.com/opencontainers/runc", tags="seccomp,urfave_cli_no_docs"),
), _CGO_ENV)
CNI_PLUGINS = BinarySet("cni", CNI_PLUGINS_VERSION, tuple(
    Binary(path.rsplit("/", 1)[1], "cni", f"github.com/containernetworking/plugins/plugins/{path}")
    for path in ("main/bridge", "ipam/host-local", "main/loopback", "meta/portmap")), _STATIC_ENV)
GPU_PLUGINS = BinarySet("gpuplugins", "v1", tuple(
    Binary(name, "gpuplugins", f"./cmd/{name}")
    for name in ("fake-device-plugin", "fake-dra-plugin")), _STATIC_ENV)
# Not Go: `package` names the C source in the k8s.io/kubernetes module that go/node pins.
PAUSE = BinarySet("pause", PAUSE_VERSION, (Binary("pause", "node", PAUSE_SOURCE),),
                  (("CFLAGS", " ".join(PAUSE_CFLAGS)),))

GO_SETS = (KUBERNETES_NODE, CONTAINERD, RUNC, CNI_PLUGINS, GPU_PLUGINS)


def _build_pause(binaries: BinarySet, target: Path) -> None:
    compiler = shutil.which("gcc")
    if compiler is None:
        raise BuildError(f"`gcc` not found on PATH: {SECCOMP_HINT}")
    source = Path(build.kubernetes_module()["Dir"]) / PAUSE_SOURCE
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{target.parent.name}-",
                                    dir=target.parent.parent))
    try:
        result = subprocess.run([compiler, *PAUSE_CFLAGS, "-o", str(staging / "pause"),
                                 str(source)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"gcc could not build {source}:\n{result.stderr[-3000:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.chmod(0o755)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ensure_node_binaries() -> dict[str, Path]:
    """Every real-node binary by name (building what the cache lacks); the CNI plugins share
    one folder, `cni_bin_dir(...)` gives it."""
    found: dict[str, Path] = {}
    for binaries in GO_SETS:
        began = time.monotonic()
        directory = build.ensure(binaries)
        if time.monotonic() - began > 1:
            build.log(f"{binaries.name} ready in {time.monotonic() - began:.1f}s")
        found.update({b.name: directory / b.name for b in binaries.binaries})
    found["pause"] = build.ensure(PAUSE, _build_pause) / "pause"
    return found


def cni_bin_dir(binaries: dict[str, Path]) -> Path:
    """The folder holding the CNI plugins (containerd's `bin_dirs`)."""
    return binaries["bridge"].parent


def cached_node_binaries() -> dict[str, Path] | None:
    """The binaries if the cache holds all of them (no `go` needed), else None."""
    found: dict[str, Path] = {}
    for binaries in (*GO_SETS, PAUSE):
        directory = build.cached(binaries)
        if directory is None:
            return None
        found.update({b.name: directory / b.name for b in binaries.binaries})
    return found


def main() -> int:
    try:
        binaries = ensure_node_binaries()
    except BuildError as error:
        build.log(f"error: {error}")
        return 1
    print(json.dumps({name: str(path) for name, path in sorted(binaries.items())}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
