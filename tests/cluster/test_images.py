"""The two images, built here from their Dockerfiles (tests/cluster/images.py), checked from
inside as a user would meet them: who they run as, what their entry points do, and that the
runner finds the CUDA library CTranslate2 loads. Commands run in a fresh container of each
image with buildah (chroot isolation, no network).

Not checked here: a GPU. There is none, so libcublas is loaded but never called, and
CTranslate2 sees no CUDA device (libcuda.so.1 comes with a driver, on a GPU node).
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from tests.cluster import images
from tests.cluster.buildah import CONTAINERD_NAME
from tests.support.paths import REPO

pytestmark = pytest.mark.slow

PINS = {
    name.lower().replace("_", "-"): version
    for name, _, version in (
        line.partition("==") for line in (REPO / ".ci/constraints.txt").read_text().splitlines()
    )
}
DOCKERFILE_PYTHON = re.compile(r"^ARG PYTHON=(\S+)$", re.M)
# Every distribution in the image's virtualenv, as name==version (pip itself is Debian's,
# from python3-venv).
LIST_DISTRIBUTIONS = (
    "import importlib.metadata as m; "
    "print('\\n'.join(sorted(f\"{d.metadata['Name']}=={d.version}\" for d in m.distributions() "
    "if d.metadata['Name'] != 'pip')))"
)


def run(built: images.BuiltImage, *argv: str) -> str:
    result = images.builder(built.archive.parent).run_in_image(built.ref, argv)
    assert result.returncode == 0, (
        f"{argv} in {built.ref}: exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def config(built: images.BuiltImage) -> dict[str, object]:
    return images.builder(built.archive.parent).inspect(built.ref)


def env(built: images.BuiltImage) -> dict[str, str]:
    pairs = (item.partition("=") for item in config(built)["Env"])  # type: ignore[union-attr]
    return {key: value for key, _, value in pairs}


@pytest.mark.parametrize("name", sorted(images.DOCKERFILES))
def test_images_run_as_uid_1000_with_nothing_of_the_build_left(
        name: str, built_images: dict[str, images.BuiltImage]) -> None:
    built = built_images[name]
    assert config(built)["User"] == "1000:1000"
    assert run(built, "id", "-u").strip() == "1000"
    # The pip secrets were mounted for the install step only.
    leftovers = run(built, "sh", "-c", "ls -A /etc/pip.conf /run/secrets 2>/dev/null; true")
    assert leftovers.strip() == "", leftovers


@pytest.mark.parametrize("name", sorted(images.DOCKERFILES))
def test_images_are_as_slim_as_debians_slim_base(
        name: str, built_images: dict[str, images.BuiltImage]) -> None:
    # What debian:*-slim leaves out of every package, and apt's indexes and downloads.
    script = ("find /usr/share/doc -type f ! -name copyright; "
              "find /usr/share/man /usr/share/locale -type f; "
              "find /var/lib/apt/lists /var/cache/apt -type f -size +0 2>/dev/null; true")
    assert run(built_images[name], "sh", "-c", script).split() == []


@pytest.mark.parametrize("name", sorted(images.DOCKERFILES))
def test_images_install_exactly_the_pinned_versions_on_debians_python(
        name: str, built_images: dict[str, images.BuiltImage]) -> None:
    built = built_images[name]
    dockerfile = (REPO / images.DOCKERFILES[name]).read_text()
    declared = DOCKERFILE_PYTHON.search(dockerfile)
    assert declared, "no ARG PYTHON"
    python = run(built, "python", "-c", "import sys; print(sys.version.split()[0], sys.prefix,"
                 " sys.base_prefix)").split()
    assert python[0].startswith(declared.group(1) + "."), python
    assert python[1:] == ["/opt/venv", "/usr"], python  # a virtualenv on Debian's /usr/bin
    installed = dict(line.split("==") for line in run(built, "python", "-c",
                                                      LIST_DISTRIBUTIONS).split())
    unpinned = {n: v for n, v in installed.items()
                if n != "whisperfleet" and PINS.get(n.lower().replace("_", "-")) != v}
    assert not unpinned, f"{name}: not the versions .ci/constraints.txt pins: {unpinned}"


def test_runner_image_runs_whisperfleet_and_finds_the_wheels_cublas(
        built_images: dict[str, images.BuiltImage]) -> None:
    runner = built_images["runner"]
    assert config(runner)["Entrypoint"] == ["whisperfleet"]
    assert "transcribe" in run(runner, "whisperfleet", "--help")
    variables = env(runner)
    assert variables["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert variables["NVIDIA_VISIBLE_DEVICES"] == "all"
    probe = (
        "import ctypes, glob, json, ctranslate2\n"
        "ctypes.CDLL('libcublas.so.12')\n"  # by soname: found only through LD_LIBRARY_PATH
        "maps = open('/proc/self/maps').read().split()\n"
        "print(json.dumps({'loaded': sorted({p for p in maps if '/libcublas' in p}),\n"
        " 'lib_dirs': sorted(glob.glob('/opt/venv/lib/python3*/site-packages/nvidia/*/lib')),\n"
        " 'ctranslate2': ctranslate2.__version__,\n"
        " 'cuda_devices': ctranslate2.get_cuda_device_count()}))\n"
    )
    found = json.loads(run(runner, "python", "-c", probe))
    search_path = variables["LD_LIBRARY_PATH"].split(":")
    # Every library folder of the NVIDIA wheels is searched, and libcublas came from one.
    assert found["lib_dirs"] and set(found["lib_dirs"]) <= set(search_path), (found, search_path)
    names = {Path(p).name for p in found["loaded"]}
    assert {"libcublas.so.12", "libcublasLt.so.12"} <= names, found
    assert all(str(Path(p).parent) in found["lib_dirs"] for p in found["loaded"]), found
    # CTranslate2 imports; it sees no CUDA device (no GPU, no driver here).
    assert (found["ctranslate2"], found["cuda_devices"]) == (PINS["ctranslate2"], 0)


def test_runner_image_carries_the_example_speech(
        built_images: dict[str, images.BuiltImage]) -> None:
    listed = run(built_images["runner"], "ls", "/usr/share/whisperfleet/examples").split()
    assert listed == sorted(p.name for p in (REPO / "examples/audio").glob("*.wav"))


def test_operator_image_runs_kopf_with_the_operator_package(
        built_images: dict[str, images.BuiltImage]) -> None:
    operator = built_images["operator"]
    assert config(operator)["Entrypoint"] == ["kopf"]
    assert run(operator, "kopf", "--version").startswith(f"kopf, version {PINS['kopf']}")
    out = run(operator, "python", "-c", "import whisperfleet_operator.handlers, importlib.util;"
              " print(importlib.util.find_spec('faster_whisper'))")
    assert out.strip() == "None"  # the runner's dependencies are not in the operator image


@pytest.mark.parametrize("name", sorted(images.DOCKERFILES))
def test_archives_name_their_image_for_containerd(
        name: str, built_images: dict[str, images.BuiltImage]) -> None:
    built = built_images[name]
    with tarfile.open(built.archive) as archive:
        members = set(archive.getnames())
        index = json.load(archive.extractfile("index.json"))  # type: ignore[arg-type]
        layout = json.load(archive.extractfile("oci-layout"))  # type: ignore[arg-type]
    assert layout["imageLayoutVersion"] == "1.0.0"
    [manifest] = index["manifests"]
    assert manifest["annotations"][CONTAINERD_NAME] == built.ref
    assert f"blobs/{manifest['digest'].replace(':', '/')}" in members
    assert Path(built.archive).name == f"{name}.oci.tar"
