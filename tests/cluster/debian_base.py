"""The Debian base the images are built on here: a `debian:<suite>-slim` made from Debian's
packages with mmdebstrap, since no image registry is reachable.

The recipe follows the official slim image (debuerreotype): variant minbase, the same paths
left out of every package (documentation but copyrights, man and info pages, locales), and
the same apt settings (no package caches or downloaded .debs kept, gzipped indexes, no
translations). Debian's archive moves on within a release, so two bases made on different
days differ in point-release updates; the cache key is the recipe, not the day.

Standard library only (CI builds the images before any virtualenv exists).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
# The name the Dockerfiles' `ARG BASE` defaults to: the base is stored under it, so the
# unchanged Dockerfiles build here as they would anywhere.
IMAGE_NAME = f"docker.io/library/debian:{SUITE}-slim"
SOURCES = (
    f"deb {MIRROR} {SUITE} main",
    f"deb {MIRROR} {SUITE}-updates main",
    f"deb {SECURITY_MIRROR} {SUITE}-security main",
)
# debuerreotype's "slimify" list, as dpkg path filters (they stay in the image, so packages
# installed later are slimmed too, as in the official image).
DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
)
_CLEAN = ('"rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb '
          '/var/cache/apt/*.bin || true";')
# The official image's apt.conf.d files. Written by a hook rather than mmdebstrap's
# --aptopt: in root mode apt runs outside the chroot, and the Post-Invoke rm would clean
# this machine's own apt cache.
APT_CONF = {
    "docker-clean": (f"DPkg::Post-Invoke {{ {_CLEAN} }};\n"
                     f"APT::Update::Post-Invoke {{ {_CLEAN} }};\n"
                     'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'),
    "docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "docker-no-languages": 'Acquire::Languages "none";\n',
    "docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
}
# The official image's config: a shell, and the standard PATH.
CONFIG = {
    "cmd": "bash",
    "env": "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
}


class BaseError(RuntimeError):
    """The base could not be made; the message says why."""


def mmdebstrap_command(output: Path) -> list[str]:
    hooks = [f'printf %s {shlex.quote(text)} > "$1/etc/apt/apt.conf.d/{name}"'
             for name, text in APT_CONF.items()]
    hooks.append('rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin '
                 '"$1"/var/log/apt/* "$1"/var/log/*.log')
    return [
        "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar", "--quiet",
        *(f"--dpkgopt={option}" for option in DPKG_OPTIONS),
        *(f"--customize-hook={hook}" for hook in hooks),
        SUITE, str(output), *SOURCES,
    ]


def recipe_key() -> str:
    """A short hash of everything that decides the base: the command and the image config."""
    recipe = [mmdebstrap_command(Path("OUT")), IMAGE_NAME, CONFIG]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]


def make_rootfs(target: Path) -> Path:
    """Make the base's root filesystem as a tar at `target` (complete or absent)."""
    if shutil.which("mmdebstrap") is None:
        raise BaseError("`mmdebstrap` not found: apt-get install -y mmdebstrap")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".base-") as tmp:
        partial = Path(tmp) / target.name
        result = subprocess.run(mmdebstrap_command(partial), capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-30:])
            raise BaseError(f"mmdebstrap {SUITE} failed:\n{tail}")
        partial.rename(target)
    return target
