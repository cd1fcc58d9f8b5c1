#!/usr/bin/env python3
"""Builds the local control plane's binaries from pinned Go modules, and caches them.

Owns the six binaries the test cluster runs (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kubectl, helm): which module and package each comes from (the wrapper
modules under tests/cluster/go/), the flags they are built with, where the finished set
is cached, and the check that a Kubernetes wrapper's replace list still matches
Kubernetes' own go.mod. Also owns how any set of binaries is built and cached
(`BinarySet`, `ensure`), which node_build.py uses for the real node's binaries.

Standard library only: CI starts `python3 tests/cluster/build.py` in the background
before any virtualenv exists.

    python3 tests/cluster/build.py               # build what is missing, print the bin dir
    python3 tests/cluster/build.py --regenerate  # rewrite go/{k8s,node}/go.mod + go.sum
                                                 # (after a Kubernetes version bump)
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
# Kubernetes publishes each staging module k8s.io/X at v0.<minor>.<patch>.
STAGING_VERSION = "v0" + KUBERNETES_VERSION[2:]
HELM_VERSION = "v4.3.1"

GO_DIR = Path(__file__).resolve().parent / "go"
K8S_MODULE_DIR = GO_DIR / "k8s"
K8S_WRAPPER_MODULE = "whisperfleet.local/tests/cluster/k8s"
K8S_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# The real node's Kubernetes binaries (node_build.py), in a wrapper of their own so that the
# control plane's cache key does not change with them.
NODE_COMMANDS = ("kube-proxy", "kubelet")
# Every wrapper module of k8s.io/kubernetes: folder under go/ -> its tools (cmd/<name>).
KUBERNETES_WRAPPERS = {"k8s": K8S_COMMANDS, "node": NODE_COMMANDS}
GO_INSTALL_HINT = (
    "install Go >= 1.26 (https://go.dev/dl/) and put `go` on PATH; "
    "the build downloads modules through the Go module proxy"
)


class BuildError(RuntimeError):
    """A binary could not be built; the message says why."""


def k8s_version_ldflags() -> list[str]:
    # Both packages carry the version: component-base for the servers' /version,
    # client-go for kubectl's client version.
    major, minor = KUBERNETES_VERSION[1:].split(".")[:2]
    flags = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={KUBERNETES_VERSION}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return flags


@dataclass(frozen=True)
class Binary:
    """One binary: the wrapper module it is built in, its package, and its build flags."""

    name: str
    module: str  # folder under tests/cluster/go/
    package: str
    tags: str = ""
    ldflags: tuple[str, ...] = ()

    def build_command(self, output: Path) -> list[str]:
        command = ["build", "-trimpath", "-buildvcs=false", "-mod=readonly"]
        if self.tags:
            command.append(f"-tags={self.tags}")
        command += ["-ldflags", " ".join(("-s", "-w", *self.ldflags)), "-o", str(output)]
        return [*command, self.package]


@dataclass(frozen=True)
class BinarySet:
    """Binaries built and cached together: `<cache>/<name>-<version>-<hash>/bin`, the hash
    covering their wrapper modules, flags and build environment."""

    name: str
    version: str
    binaries: tuple[Binary, ...]
    env: tuple[tuple[str, str], ...]

    @property
    def modules(self) -> set[str]:
        return {b.module for b in self.binaries}

    def cache_key(self) -> str:
        """A short hash of everything that decides the binaries: the wrapper modules and flags."""
        digest = hashlib.sha256()
        for path in sorted(GO_DIR.rglob("*")):
            if not path.is_file() or path.relative_to(GO_DIR).parts[0] not in self.modules:
                continue
            if path.suffix == ".go" or path.name in ("go.mod", "go.sum"):
                digest.update(path.relative_to(GO_DIR).as_posix().encode())
                digest.update(path.read_bytes())
        flags = [(b.name, b.module, b.package, b.tags, b.ldflags) for b in self.binaries]
        digest.update(json.dumps([flags, dict(self.env), sys.platform,
                                  platform.machine()]).encode())
        return digest.hexdigest()[:12]

    def bin_dir(self) -> Path:
        """Where the finished set lives (it may not exist yet)."""
        return cache_root() / f"{self.name}-{self.version}-{self.cache_key()}" / "bin"

    def complete(self, directory: Path) -> bool:
        return all((directory / b.name).is_file() for b in self.binaries)


BINARIES: tuple[Binary, ...] = (
    Binary("etcd", "etcd", "."),
    *(
        Binary(name, "k8s", f"k8s.io/kubernetes/cmd/{name}", tags="selinux,notest",
               ldflags=tuple(k8s_version_ldflags()))
        for name in K8S_COMMANDS
    ),
    Binary("helm", "helm", "helm.sh/helm/v4/cmd/helm", ldflags=(
        f"-X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",
        "-X helm.sh/helm/v4/internal/version.metadata=",
        "-X helm.sh/helm/v4/internal/version.gitTreeState=clean",
    )),
)
BUILD_ENV = {"CGO_ENABLED": "0", "GOWORK": "off", "GOFLAGS": ""}
CONTROL_PLANE = BinarySet("k8s", KUBERNETES_VERSION, BINARIES, tuple(BUILD_ENV.items()))


def go_available() -> bool:
    return shutil.which("go") is not None


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "whisperfleet"


def bin_dir() -> Path:
    """Where the control plane's finished set lives (it may not exist yet)."""
    return CONTROL_PLANE.bin_dir()


def log(message: str) -> None:
    print(f"build.py: {message}", file=sys.stderr, flush=True)


def _go(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    if not go_available():
        raise BuildError(f"`go` not found on PATH: {GO_INSTALL_HINT}")
    result = subprocess.run(["go", *args], cwd=cwd, env={**os.environ, **(env or BUILD_ENV)},
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-30:])
        raise BuildError(f"`go {' '.join(args)}` in {cwd} failed:\n{tail}")
    return result.stdout


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    # A second caller (pytest while CI's background build runs) waits here for the first.
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- the Kubernetes wrapper's replace list -------------------------------------------------

_STAGING_REPLACE = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[\w.-]+)\s+=>\s+\./staging/", re.M)


def kubernetes_module() -> dict[str, str]:
    """`go mod download -json` of k8s.io/kubernetes@KUBERNETES_VERSION (GoMod, Dir, ...)."""
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"],
                          cwd=K8S_MODULE_DIR))
    if info.get("Error"):
        raise BuildError(f"cannot download k8s.io/kubernetes@{KUBERNETES_VERSION}: {info['Error']}")
    return dict(info)


def kubernetes_go_mod() -> str:
    """Kubernetes' own go.mod at KUBERNETES_VERSION, through the module cache/proxy."""
    return Path(kubernetes_module()["GoMod"]).read_text(encoding="utf-8")


def staging_modules(kubernetes_mod: str) -> list[str]:
    """Every module Kubernetes replaces with its ./staging copy (published at v0.x.y)."""
    return sorted(set(_STAGING_REPLACE.findall(kubernetes_mod)))


def check_k8s_replaces(module_dir: Path = K8S_MODULE_DIR) -> None:
    """Fail when a Kubernetes wrapper's replaces differ from Kubernetes' staging list."""
    expected = {module: STAGING_VERSION for module in staging_modules(kubernetes_go_mod())}
    edit = json.loads(_go(["mod", "edit", "-json"], cwd=module_dir))
    actual = {r["Old"]["Path"]: r["New"].get("Version", r["New"]["Path"])
              for r in edit.get("Replace") or [] if r["Old"]["Path"].startswith("k8s.io/")}
    if actual != expected:
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        wrong = sorted(m for m in set(actual) & set(expected) if actual[m] != expected[m])
        raise BuildError(
            f"{module_dir / 'go.mod'} does not match k8s.io/kubernetes@{KUBERNETES_VERSION}'s "
            f"staging replaces (missing {missing}, extra {extra}, wrong version {wrong}); "
            f"run `python3 {os.path.relpath(__file__)} --regenerate` and commit "
            f"go/{module_dir.name}/go.mod and go.sum")


def regenerate_k8s_module(module: str) -> None:
    """Rewrite go/<module>/go.mod and go.sum, a wrapper of k8s.io/kubernetes whose tools are
    KUBERNETES_WRAPPERS[module], from Kubernetes' go.mod (after a version bump)."""
    module_dir, commands = GO_DIR / module, KUBERNETES_WRAPPERS[module]
    kubernetes_mod = kubernetes_go_mod()
    go_line = re.search(r"^go\s+\S+$", kubernetes_mod, re.M)
    godebug_line = re.search(r"^godebug\s+default=\S+$", kubernetes_mod, re.M)
    if go_line is None:
        raise BuildError("no `go` line in Kubernetes' go.mod")
    lines = [
        "// Generated by `python3 tests/cluster/build.py --regenerate` from",
        f"// k8s.io/kubernetes@{KUBERNETES_VERSION}'s go.mod; do not edit by hand.",
        f"module {K8S_WRAPPER_MODULE.rsplit('/', 1)[0]}/{module_dir.name}", "",
        go_line.group(0), "",
    ]
    if godebug_line is not None:
        lines += [godebug_line.group(0), ""]
    lines += ["tool (", *(f"\tk8s.io/kubernetes/cmd/{c}" for c in commands), ")", ""]
    lines += [f"require k8s.io/kubernetes {KUBERNETES_VERSION}", "", "replace ("]
    lines += [f"\t{m} => {m} {STAGING_VERSION}" for m in staging_modules(kubernetes_mod)]
    lines += [")", ""]
    (module_dir / "go.mod").write_text("\n".join(lines), encoding="utf-8")
    (module_dir / "go.sum").write_text("", encoding="utf-8")
    _go(["mod", "tidy"], cwd=module_dir)
    check_k8s_replaces(module_dir)


# --- building -------------------------------------------------------------------------------


def _build_all(binaries: BinarySet, target: Path) -> None:
    for module in sorted(binaries.modules & set(KUBERNETES_WRAPPERS)):
        check_k8s_replaces(GO_DIR / module)
    prefix = f".tmp-{target.parent.name}-"
    for leftover in target.parent.parent.glob(prefix + "*"):  # from a build that was killed
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent.parent))
    try:
        started = time.monotonic()
        for binary in binaries.binaries:
            began = time.monotonic()
            log(f"building {binary.name} ...")
            _go(binary.build_command(staging / binary.name), cwd=GO_DIR / binary.module,
                env=dict(binaries.env))
            size = (staging / binary.name).stat().st_size / 1e6
            log(f"built {binary.name} in {time.monotonic() - began:.1f}s ({size:.0f} MB)")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.chmod(0o755)  # mkdtemp made it private
        staging.rename(target)  # complete or absent: a reader never sees a half-built set
        log(f"{binaries.name} built in {time.monotonic() - started:.1f}s: {target}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached(binaries: BinarySet) -> Path | None:
    """The set's bin dir if the cache already holds all of it (no `go` needed)."""
    target = binaries.bin_dir()
    return target if binaries.complete(target) else None


def ensure(binaries: BinarySet,
           build_all: Callable[[BinarySet, Path], None] = _build_all) -> Path:
    """The set's bin dir, built first (by `build_all` into a staging folder) if the cache
    lacks it; concurrent callers wait on a file lock."""
    target = binaries.bin_dir()
    if binaries.complete(target):
        return target
    with _exclusive(target.parent.parent / f"{target.parent.name}.lock"):
        if not binaries.complete(target):  # the caller before us may have built them meanwhile
            shutil.rmtree(target, ignore_errors=True)
            build_all(binaries, target)
    return target


def cached_bin_dir() -> Path | None:
    """The control plane's bin dir if the cache already holds the complete set."""
    return cached(CONTROL_PLANE)


def ensure_binaries() -> Path:
    """The bin dir holding all six binaries, building them first if the cache lacks them."""
    return ensure(CONTROL_PLANE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regenerate", action="store_true",
                        help="rewrite go/{k8s,node}/go.mod and go.sum from Kubernetes' go.mod")
    args = parser.parse_args(argv)
    try:
        if args.regenerate:
            for module in KUBERNETES_WRAPPERS:
                regenerate_k8s_module(module)
                log(f"regenerated {GO_DIR / module / 'go.mod'} and go.sum")
            return 0
        print(ensure_binaries())
    except BuildError as error:
        log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
