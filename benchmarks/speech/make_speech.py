"""Regenerate the committed speech corpora with espeak-ng (needs Debian's `espeak-ng`).

Tests and benchmarks never run this: they read the committed files through
`benchmarks/corpus.py`. Run it only to change the corpora, then commit what it wrote:

    apt-get install espeak-ng
    python benchmarks/speech/make_speech.py            # every corpus in CORPORA
    python benchmarks/speech/make_speech.py short 6    # one of them

Sentences are drawn from small word lists with a fixed seed; each one is read by espeak-ng
(22.05 kHz WAV) and stored as Ogg Opus, mono, 24 kbit/s: about 3 kB per second of speech,
where FLAC took 18 kB (15 MiB for these corpora against 2.5 MiB). On tiny.en the WER of
bare faster-whisper moved within the model's own spread between the WAVs and the Opus files
(60 clips 0.298 -> 0.310, 12 talks 0.095 -> 0.072). The same seed with another espeak-ng
version gives other audio (and may keep other clips, since clips are kept by duration):
that is why the corpora are committed, with espeak-ng's version in `made-with.txt`.

Each corpus folder `<kind>-seed<seed>/` holds the clips (`clip000.opus` ...) or talks
(`talk00.opus` ...) and `texts.json` ({file name: what espeak-ng read}).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# (kind, seed): count. short 6 and long 7 are the corpora the defaults were measured on;
# short 2026 is held out (another draw, never tuned on).
CORPORA = {("short", 6): 60, ("short", 2026): 30, ("long", 7): 12}
BIT_RATE = 24_000
OPUS_RATE = 48_000  # the rate libopus encodes at

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


def folder_name(kind: str, seed: int) -> str:
    return f"{kind}-seed{seed}"


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


def draw_short(work: Path, count: int, seed: int) -> dict[str, str]:
    """`count` clips of 1-4 s: a phrase or one short sentence each (WAVs in `work`)."""
    rng = random.Random(seed)
    texts: dict[str, str] = {}
    while len(texts) < count:
        text = sentence(rng, tail=rng.random() < 0.3)
        if rng.random() < 0.3:  # some very short ones: just the subject and verb
            text = " ".join(text.split()[:3]).rstrip(".") + "."
        name = f"clip{len(texts):03d}"
        seconds = speak(text, work / f"{name}.wav", rng.choice(VOICES), rng.randint(150, 190))
        if 1.0 <= seconds <= 4.0:
            texts[name] = text
    return texts


def draw_long(work: Path, count: int, seed: int) -> dict[str, str]:
    """`count` talks of 30-90 s: many sentences read in one voice (WAVs in `work`)."""
    rng = random.Random(seed)
    texts: dict[str, str] = {}
    for index in range(count):
        target = rng.uniform(35, 85)
        words = int(target * 2.6)  # espeak-ng at ~160 wpm
        sentences: list[str] = []
        while sum(len(s.split()) for s in sentences) < words:
            sentences.append(sentence(rng, tail=True))
        name = f"talk{index:02d}"
        speak(" ".join(sentences), work / f"{name}.wav", rng.choice(VOICES), 160)
        texts[name] = " ".join(sentences)
    return texts


def to_opus(wav_path: Path, out: Path) -> None:
    """The WAV as mono Ogg Opus at BIT_RATE (PyAV, which bundles libopus)."""
    import av

    with wave.open(str(wav_path)) as w:
        rate = w.getframerate()
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    with av.open(str(out), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        stream.bit_rate = BIT_RATE
        resampler = av.AudioResampler(format="s16", layout="mono", rate=OPUS_RATE)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def make(kind: str, seed: int, count: int) -> Path:
    folder = HERE / folder_name(kind, seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        texts = (draw_short if kind == "short" else draw_long)(work, count, seed)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        for name in texts:
            to_opus(work / f"{name}.wav", folder / f"{name}.opus")
    (folder / "texts.json").write_text(
        json.dumps({f"{name}.opus": text for name, text in texts.items()}, indent=1) + "\n")
    return folder


def espeak_version() -> str:
    said = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True,
                          text=True).stdout
    return said.split("  Data at:")[0].strip()  # not where this machine keeps its data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", nargs="?", choices=["short", "long"])
    parser.add_argument("seed", nargs="?", type=int)
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        sys.exit("make_speech.py needs espeak-ng on PATH (Debian: apt-get install espeak-ng)")
    wanted = {key: n for key, n in CORPORA.items()
              if args.kind in (None, key[0]) and args.seed in (None, key[1])}
    if not wanted:
        sys.exit(f"no corpus {args.kind} {args.seed}; known: {sorted(CORPORA)}")
    for (kind, seed), count in wanted.items():
        print(f"{make(kind, seed, count)}: {count} {kind} files")
    (HERE / "made-with.txt").write_text(
        f"{espeak_version()}\nOgg Opus, mono, {BIT_RATE // 1000} kbit/s (libopus via PyAV)\n")


if __name__ == "__main__":
    main()
