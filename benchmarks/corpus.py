"""The benchmark and test corpora as WAVs: short clips (1-4 s), long talks (30-90 s), and
mixed: 5-10 s files in English, German and Spanish (for a multilingual model).

The speech is committed (`benchmarks/speech/`, Ogg Opus, with what was read): espeak-ng
made it once (`speech/make_speech.py`), so every machine gets the same audio and nothing
here needs espeak-ng. `build` decodes the first `count` files of a corpus into a folder as
16 kHz mono 16-bit WAVs, with `references.json` ({file name: text}) for WER. `--seed` picks
another draw of the same kind (held out: not the one the defaults were tuned on).

    python benchmarks/corpus.py short /tmp/bench/short --count 60
    python benchmarks/corpus.py short /tmp/bench/held-out --count 30 --seed 2026
    python benchmarks/corpus.py long /tmp/bench/long --count 4
    python benchmarks/corpus.py mixed /tmp/bench/mixed --count 12

The mixed corpus (`speech/make_mixed.py`) names each file by its language (`01-de.wav`:
`language`) and says what each means in English (`english`: for `task: translate`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import wave
from pathlib import Path

import numpy as np

SPEECH = Path(__file__).resolve().parent / "speech"
SEEDS = {"short": 6, "long": 7, "mixed": 11}  # the corpora the defaults were measured on
RATE = 16000  # Whisper's rate: what every reader of these WAVs gets


def source(kind: str, seed: int) -> Path:
    """The committed folder of one corpus (`make_speech.folder_name`)."""
    return SPEECH / f"{kind}-seed{seed}"


def committed(kind: str, seed: int) -> dict[str, str]:
    """{committed file name: text} of one corpus, in file order; a clear error when absent."""
    folder = source(kind, seed)
    texts = folder / "texts.json"
    if not texts.is_file():
        known = sorted(p.name for p in SPEECH.glob("*-seed*") if (p / "texts.json").is_file())
        raise SystemExit(f"no committed {kind} corpus with seed {seed} ({folder} has no "
                         f"texts.json); committed: {', '.join(known)}. Make one with "
                         f"benchmarks/speech/make_speech.py (needs espeak-ng).")
    return dict(sorted(json.loads(texts.read_text()).items()))


def language(name: str) -> str:
    """The language a mixed-corpus file speaks, from its name (`01-de.wav` -> de)."""
    return Path(name).stem.split("-")[1]


def english(seed: int | None = None) -> dict[str, str]:
    """{WAV name: what it says, in English} of the mixed corpus."""
    folder = source("mixed", SEEDS["mixed"] if seed is None else seed)
    meanings = json.loads((folder / "english.json").read_text())
    return {str(Path(name).with_suffix(".wav")): text for name, text in meanings.items()}


def decode(path: Path) -> np.ndarray:
    """16 kHz mono int16 samples of a committed file (PyAV, as faster-whisper decodes)."""
    from faster_whisper import decode_audio

    samples = decode_audio(str(path), sampling_rate=RATE)
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(samples.tobytes())


def build(kind: str, folder: Path, count: int, seed: int | None = None) -> dict[str, str]:
    """Fill `folder` with the first `count` files of a committed corpus as WAVs (unless it
    already holds exactly those); returns {WAV name: text}."""
    seed = SEEDS[kind] if seed is None else seed
    texts = committed(kind, seed)
    if not 1 <= count <= len(texts):
        raise SystemExit(f"the committed {kind} corpus with seed {seed} holds {len(texts)} "
                         f"files; asked for {count}. Make more with "
                         f"benchmarks/speech/make_speech.py (needs espeak-ng).")
    chosen = list(texts)[:count]
    digest = hashlib.sha256()
    for name in chosen:
        digest.update((source(kind, seed) / name).read_bytes())
    stamp = f"{kind} {seed} {count} {digest.hexdigest()}"
    refs = {str(Path(name).with_suffix(".wav")): texts[name] for name in chosen}
    stamp_file, refs_file = folder / "source", folder / "references.json"
    if stamp_file.is_file() and stamp_file.read_text() == stamp and refs_file.is_file():
        return refs
    clear(folder)
    for name in chosen:
        write_wav(folder / Path(name).with_suffix(".wav").name,
                  decode(source(kind, seed) / name))
    refs_file.write_text(json.dumps(refs, indent=1))
    stamp_file.write_text(stamp)
    return refs


def clear(folder: Path) -> None:
    """Make `folder` an empty corpus folder, removing only what an earlier build wrote: a
    folder holding anything else is refused, never emptied."""
    folder.mkdir(parents=True, exist_ok=True)
    ours = {"references.json", "source", "seed"}  # `seed`: the espeak-ng builds' stamp
    refs_file = folder / "references.json"
    if refs_file.is_file():
        ours |= set(json.loads(refs_file.read_text()))
    others = sorted(p.name for p in folder.iterdir() if p.name not in ours)
    if others:
        shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
        raise SystemExit(f"{folder} holds files a corpus build did not write ({shown}): "
                         "give an empty or new folder")
    for name in ours:
        (folder / name).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=sorted(SEEDS))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=None,
                        help=f"default: the tuned corpora's ({SEEDS})")
    args = parser.parse_args()
    refs = build(args.kind, args.folder, args.count, args.seed)
    print(f"{len(refs)} {args.kind} files in {args.folder}")


if __name__ == "__main__":
    main()
