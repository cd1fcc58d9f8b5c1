"""Which GPUs of this machine the local CLI uses (`--gpus`, `--min-free-memory`).

Indices mean what `nvidia-smi` shows (NVML enumerates in PCI bus order; workers run with
CUDA_DEVICE_ORDER=PCI_BUS_ID so CUDA agrees). With `--gpus all`, a CUDA_VISIBLE_DEVICES the
user already exported still narrows the choice, as it would for any CUDA program.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from whisperfleet_runner.gpu import nvml
from whisperfleet_runner.gpu.devices import INDEX_PATTERN, NoGpuError, cuda_enumeration, lookup
from whisperfleet_runner.gpu.nvml import GpuInfo


@dataclass
class Refusal:
    """Why a GPU (or a requested GPU that does not exist) is not used."""

    target: str  # "GPU 1 GPU-…" or the --gpus entry that matched nothing
    reason: str
    gpu: GpuInfo | None = None


@dataclass
class LocalChoice:
    device: str  # "cuda" or "cpu"
    gpus: list[GpuInfo]  # chosen, in NVML order; one worker per GPU
    seen: list[GpuInfo] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def report(self) -> list[str]:
        """Which GPUs were seen and why each was refused, one line each, for the user."""
        chosen = {g.uuid for g in self.gpus}
        lines = [f"{g.describe()}: used" for g in self.seen if g.uuid in chosen]
        lines += [f"{r.target}: refused, {r.reason}" for r in self.refused]
        return lines or ["no GPU seen"]


def choose_local(
    gpus: str = "all",
    min_free_mib: int = 0,
    device: str = "auto",
    environ: Mapping[str, str] | None = None,
) -> LocalChoice:
    """Pick GPUs on this machine for the local CLI.

    `gpus` is "all" or a comma list of nvidia-smi indices ("0,2"; "0:1" for a MIG instance)
    and/or UUIDs or unique UUID prefixes. GPUs with less than `min_free_mib` free are refused
    as busy. Nothing usable: device="cuda" raises NoGpuError, "auto" falls back to CPU.
    """
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, not {device!r}")
    if device == "cpu":
        return LocalChoice("cpu", [])
    entries = _parse_gpu_list(gpus)
    warnings: list[str] = []
    try:
        seen = nvml.list_gpus()
    except nvml.NvmlUnavailable as exc:
        seen = []
        warnings.append(f"NVML is unavailable: {exc}")
    refused: list[Refusal] = []
    wanted: list[GpuInfo] = list(seen) if entries is None else []
    narrowed_by = ""
    env = os.environ if environ is None else environ
    if entries is None and env.get("CUDA_VISIBLE_DEVICES") is not None:
        narrowed_by = f"hidden by CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r}"
        wanted = cuda_enumeration(seen, env["CUDA_VISIBLE_DEVICES"], warnings)
    for entry in entries or []:
        matches = lookup(seen, entry, prefix=not INDEX_PATTERN.match(entry))
        if not matches or (len(matches) > 1 and not INDEX_PATTERN.match(entry)):
            known = ", ".join(g.label for g in seen) or "none"
            what = "ambiguous" if matches else "not found"
            refused.append(Refusal(entry, f"{what} (--gpus {entry}; GPUs seen: {known})"))
            continue
        wanted.extend(g for g in matches if g not in wanted)
    chosen: list[GpuInfo] = []
    for gpu in seen:
        target = f"GPU {gpu.label} {gpu.uuid} ({gpu.name})"
        if gpu not in wanted:
            why = narrowed_by or f"not selected by --gpus {gpus}"
            refused.append(Refusal(target, why, gpu))
        elif gpu.memory_free_mib < min_free_mib:
            refused.append(Refusal(
                target, f"busy: {gpu.memory_free_mib} MiB free < {min_free_mib} MiB required", gpu
            ))
        else:
            chosen.append(gpu)
    choice = LocalChoice("cuda" if chosen else "cpu", chosen, seen, refused, warnings)
    if not chosen:
        why = "; ".join(warnings + [f"{r.target}: {r.reason}" for r in refused]) or "no GPU seen"
        if device == "cuda":
            raise NoGpuError(f"device cuda was requested but no GPU is usable: {why}", choice)
        choice.warnings = [f"no usable GPU ({why}); running on CPU"]
    return choice


def _parse_gpu_list(spec: str) -> list[str] | None:
    text = spec.strip()
    if text.lower() == "all":
        return None
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if not entries:
        raise ValueError("--gpus is empty; use all, indices like 0,2, or GPU UUIDs")
    for entry in entries:
        if not (INDEX_PATTERN.match(entry) or entry[:4].upper() in ("GPU-", "MIG-")):
            raise ValueError(
                f"--gpus entry {entry!r} is neither an nvidia-smi index (0,2), a MIG address "
                f"(0:1) nor a UUID (GPU-…, MIG-…)"
            )
    return entries


_UNITS = {"": 2**20, "b": 1, "k": 10**3, "kb": 10**3, "ki": 2**10, "kib": 2**10,
          "m": 10**6, "mb": 10**6, "mi": 2**20, "mib": 2**20, "g": 10**9, "gb": 10**9,
          "gi": 2**30, "gib": 2**30, "t": 10**12, "tb": 10**12, "ti": 2**40, "tib": 2**40}


def parse_size(text: str) -> int:
    """A memory size in MiB (rounded down): "4GiB" → 4096, "4Gi", "512MiB", "4GB" (decimal);
    a bare number is MiB."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ValueError(f"cannot read memory size {text!r}; use e.g. 4GiB, 512MiB or 4096")
    return int(float(match.group(1)) * _UNITS[unit]) // 2**20
