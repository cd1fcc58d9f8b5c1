"""Build benchmark corpora with espeak-ng: short clips (1-4 s) and long talks (30-90 s).

Sentences are drawn from small word lists with a fixed seed, so every run (and every
machine) gets the same audio and reference texts. Each corpus folder holds the WAVs and
`references.json` ({file name: text}) for WER. `--seed` draws another corpus of the same
kind (held out: not the one the defaults were tuned on).

    python benchmarks/corpus.py short /tmp/bench/short --count 60
    python benchmarks/corpus.py short /tmp/bench/held-out --count 30 --seed 2026
    python benchmarks/corpus.py long /tmp/bench/long --count 4
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import wave
from pathlib import Path

SEEDS = {"short": 6, "long": 7}  # the corpora the defaults were measured on
SUBJECTS = ["the driver", "my sister", "our teacher", "the old farmer", "a young doctor",
            "the manager", "his neighbour", "the pilot", "every student", "the baker",
            "a tired nurse", "the captain", "her brother", "the small dog", "the engineer"]
VERBS = ["opened", "painted", "carried", "found", "cleaned", "sold", "repaired", "watched",
         "borrowed", "described", "counted", "moved", "ordered", "visited", "lost"]
OBJECTS = ["the red door", "a heavy box", "the kitchen window", "three green apples",
           "the broken chair", "a long letter", "the blue car", "an empty bottle",
           "the garden gate", "a paper map", "the wooden table", "two new books",
           "the morning train", "a warm coat", "the village church"]
TAILS = ["before lunch", "after the storm", "on Monday", "in the evening", "near the river",
         "during the meeting", "last summer", "without a word", "at the station",
         "with great care", "under the bridge", "before sunrise"]
VOICES = ["en-us", "en", "en-us+m3", "en+f2"]


def sentence(rng: random.Random, tail: bool) -> str:
    text = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    if tail:
        text += f" {rng.choice(TAILS)}"
    return text[0].upper() + text[1:] + "."


def speak(text: str, path: Path, voice: str, speed: int) -> float:
    """Write `text` as a WAV with espeak-ng; returns its duration in seconds."""
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                   check=True, capture_output=True)
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def build_short(folder: Path, count: int, seed: int = SEEDS["short"]) -> dict[str, str]:
    """`count` clips of 1-4 s: a phrase or one short sentence each."""
    rng = random.Random(seed)
    refs: dict[str, str] = {}
    while len(refs) < count:
        text = sentence(rng, tail=rng.random() < 0.3)
        if rng.random() < 0.3:  # some very short ones: just the subject and verb
            text = " ".join(text.split()[:3]).rstrip(".") + "."
        name = f"clip{len(refs):03d}.wav"
        seconds = speak(text, folder / name, rng.choice(VOICES), rng.randint(150, 190))
        if 1.0 <= seconds <= 4.0:
            refs[name] = text
    return refs


def build_long(folder: Path, count: int, seed: int = SEEDS["long"]) -> dict[str, str]:
    """`count` talks of 30-90 s: many sentences read in one voice."""
    rng = random.Random(seed)
    refs: dict[str, str] = {}
    for index in range(count):
        target = rng.uniform(35, 85)
        words = int(target * 2.6)  # espeak-ng at ~160 wpm
        sentences: list[str] = []
        while sum(len(s.split()) for s in sentences) < words:
            sentences.append(sentence(rng, tail=True))
        text = " ".join(sentences)
        name = f"talk{index:02d}.wav"
        speak(text, folder / name, rng.choice(VOICES), 160)
        refs[name] = text
    return refs


def build(kind: str, folder: Path, count: int, seed: int | None = None) -> dict[str, str]:
    """(Re)build a corpus folder unless it already holds this kind, count and seed."""
    seed = SEEDS[kind] if seed is None else seed
    stamp, seed_stamp = folder / "references.json", folder / "seed"
    if stamp.exists():
        refs = json.loads(stamp.read_text())
        built_with = int(seed_stamp.read_text()) if seed_stamp.exists() else SEEDS[kind]
        if (len(refs) == count and built_with == seed
                and all(name.startswith(kind[:4]) for name in refs)):
            return refs
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    refs = (build_short(folder, count, seed) if kind == "short"
            else build_long(folder, count, seed))
    stamp.write_text(json.dumps(refs, indent=1))
    seed_stamp.write_text(str(seed))
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["short", "long"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=60)
    parser.add_argument("--seed", type=int, default=None,
                        help=f"default: the tuned corpora's ({SEEDS})")
    args = parser.parse_args()
    refs = build(args.kind, args.folder, args.count, args.seed)
    print(f"{len(refs)} {args.kind} files in {args.folder}")


if __name__ == "__main__":
    main()
