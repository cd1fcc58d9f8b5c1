#!/usr/bin/env python3
"""Builds Kueue's manager from its Go module and keeps the manifests it ships beside it, cached.

Owns which Kueue the local cluster runs (KUEUE_VERSION, the wrapper module go/kueue) and the
cached set `<cache>/kueue-<version>-<hash>/`: `bin/kueue` (cmd/kueue, built like the control
plane's binaries by build.BinarySet) and `config/`, a copy of the module's
`config/components/{crd,webhook,rbac}` — the CRDs, webhook configurations and the manager's
ClusterRole exactly as Kueue releases them — so tests render them without `go` once the set is
cached. kueue_manifests.py turns those files into objects for a cluster.

Standard library only, like build.py: CI starts it in the background before the virtualenv.

    python3 tests/cluster/kueue_build.py    # build what is missing, print the bin dir
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

if __package__:
    from tests.cluster import build
else:  # run as a script: this folder is sys.path[0]
    import build  # type: ignore[no-redef]

KUEUE_VERSION = "v0.17.0"
KUEUE_MODULE = "sigs.k8s.io/kueue"
# The parts of config/components/ the local cluster uses (kustomize bases; no kustomize run).
CONFIG_PARTS = ("crd", "webhook", "rbac")

KUEUE = build.BinarySet("kueue", KUEUE_VERSION, (
    build.Binary("kueue", "kueue", f"{KUEUE_MODULE}/cmd/kueue", ldflags=(
        f"-X {KUEUE_MODULE}/pkg/version.GitVersion={KUEUE_VERSION}",)),
), tuple(build.BUILD_ENV.items()))


def config_dir(bin_dir: Path) -> Path:
    """Where a built set keeps Kueue's config/components copy."""
    return bin_dir.parent / "config"


def _module_dir() -> Path:
    listing = build._go(["mod", "download", "-json", f"{KUEUE_MODULE}@{KUEUE_VERSION}"],
                        cwd=build.GO_DIR / "kueue")
    info = json.loads(listing)
    if info.get("Error"):
        raise build.BuildError(f"cannot download {KUEUE_MODULE}@{KUEUE_VERSION}: "
                               f"{info['Error']}")
    return Path(info["Dir"])


def _build_with_config(binaries: build.BinarySet, target: Path) -> None:
    # The binary first (into `target`, atomically), then the manifests beside it: `complete`
    # looks at the binary only, so the config must be in place before the binary is.
    components = _module_dir() / "config" / "components"
    config = config_dir(target)
    shutil.rmtree(config, ignore_errors=True)
    for part in CONFIG_PARTS:
        shutil.copytree(components / part, config / part)
    for path in config.rglob("*"):  # the module cache's files are read-only
        path.chmod(0o755 if path.is_dir() else 0o644)
    build._build_all(binaries, target)


def ensure_kueue() -> Path:
    """The bin dir holding `kueue` (config/ beside it), building both if the cache lacks them."""
    return build.ensure(KUEUE, _build_with_config)


def cached_kueue() -> Path | None:
    """The bin dir if the cache already holds Kueue (no `go` needed), else None."""
    return build.cached(KUEUE)


def main() -> int:
    try:
        print(ensure_kueue())
    except build.BuildError as error:
        build.log(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
