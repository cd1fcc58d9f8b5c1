"""Regenerate the committed mixed-language corpus with espeak-ng (needs Debian's `espeak-ng`).

Tests and benchmarks never run this: they read the committed files through
`benchmarks/corpus.py` (kind `mixed`). Run it only to change the corpus, then commit what it
wrote:

    apt-get install espeak-ng
    python benchmarks/speech/make_mixed.py

Every file is two or three sentences in one language, English, German or Spanish, drawn
with a fixed seed from word lists that say the same thing in all three, so each file also
has its English meaning (what `task: translate` should give). Files alternate languages
(en, de, es, en, ...) so any run of consecutive files mixes them in one batch. Voices are
espeak-ng's `en-us`, `de+m3` and `es` (speeds in SPEEDS): Whisper base, file by file,
detects every one of these files as the language it speaks. The voice and speed matter:
read by the plain `de` voice at 150 words a minute, base took two German sentences of
eight seconds for Latin and English (German 0.18 and 0.14), where `de+m3` at 175-205 gave
German 0.6-0.9; Spanish at 185 was taken for Italian once in four files, at 150 never.

The folder `mixed-seed<seed>/` holds `00-en.opus`, `01-de.opus` ... (in file order the
languages take turns; the language follows the number), `texts.json` ({file name: what
espeak-ng read}) and `english.json` ({file name: the same in English}), stored as
make_speech.py stores the other corpora.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

from make_speech import HERE, espeak_version, folder_name, speak, to_opus

SEED, COUNT = 11, 12
LANGUAGES = ("en", "de", "es")
VOICES = {"en": "en-us", "de": "de+m3", "es": "es"}
# Words per minute (espeak-ng's default: 175), where base detects each voice best.
SPEEDS = {"en": 160, "de": 190, "es": 150}

# (English, German, Spanish) of each slot; German objects in the accusative.
SUBJECTS = [("the driver", "der Fahrer", "el conductor"),
            ("my sister", "meine Schwester", "mi hermana"),
            ("our teacher", "unser Lehrer", "nuestro profesor"),
            ("the old farmer", "der alte Bauer", "el viejo granjero"),
            ("a young doctor", "ein junger Arzt", "un médico joven"),
            ("the pilot", "der Pilot", "el piloto"),
            ("her brother", "ihr Bruder", "su hermano"),
            ("the baker", "der Bäcker", "el panadero")]
VERBS = [("opened", "öffnete", "abrió"),
         ("carried", "trug", "llevó"),
         ("found", "fand", "encontró"),
         ("cleaned", "putzte", "limpió"),
         ("sold", "verkaufte", "vendió"),
         ("repaired", "reparierte", "reparó"),
         ("bought", "kaufte", "compró")]
OBJECTS = [("the red door", "die rote Tür", "la puerta roja"),
           ("a heavy box", "eine schwere Kiste", "una caja pesada"),
           ("the kitchen window", "das Küchenfenster", "la ventana de la cocina"),
           ("three green apples", "drei grüne Äpfel", "tres manzanas verdes"),
           ("the broken chair", "den kaputten Stuhl", "la silla rota"),
           ("a long letter", "einen langen Brief", "una carta larga"),
           ("the blue car", "das blaue Auto", "el coche azul"),
           ("an empty bottle", "eine leere Flasche", "una botella vacía")]
TAILS = [("before lunch", "vor dem Mittagessen", "antes del almuerzo"),
         ("after the storm", "nach dem Sturm", "después de la tormenta"),
         ("on Monday", "am Montag", "el lunes"),
         ("in the evening", "am Abend", "por la tarde"),
         ("near the river", "in der Nähe des Flusses", "cerca del río"),
         ("last summer", "letzten Sommer", "el verano pasado")]


def sentence(rng: random.Random) -> tuple[str, ...]:
    """One sentence in every language (English, German, Spanish)."""
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS), rng.choice(TAILS)]
    said = tuple(" ".join(p[n] for p in parts) for n in range(len(LANGUAGES)))
    return tuple(s[0].upper() + s[1:] + "." for s in said)


def draw(work: Path, count: int, seed: int) -> tuple[dict[str, str], dict[str, str]]:
    """`count` files, languages in turn, as WAVs in `work`; ({name: text}, {name: English})."""
    rng = random.Random(seed)
    texts: dict[str, str] = {}
    english: dict[str, str] = {}
    for index in range(count):
        language = LANGUAGES[index % len(LANGUAGES)]
        sentences = [sentence(rng) for _ in range(rng.choice((2, 3)))]
        name = f"{index:02d}-{language}"
        texts[name] = " ".join(s[LANGUAGES.index(language)] for s in sentences)
        english[name] = " ".join(s[0] for s in sentences)
        speak(texts[name], work / f"{name}.wav", VOICES[language], SPEEDS[language])
    return texts, english


def main() -> None:
    if shutil.which("espeak-ng") is None:
        sys.exit("make_mixed.py needs espeak-ng on PATH (Debian: apt-get install espeak-ng)")
    folder = HERE / folder_name("mixed", SEED)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        texts, english = draw(work, COUNT, SEED)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir()
        for name in texts:
            to_opus(work / f"{name}.wav", folder / f"{name}.opus")
    for file, table in (("texts.json", texts), ("english.json", english)):
        (folder / file).write_text(json.dumps(
            {f"{name}.opus": text for name, text in table.items()}, indent=1,
            ensure_ascii=False) + "\n")
    made_with = (HERE / "made-with.txt").read_text().splitlines()[0]
    if made_with != espeak_version():
        print(f"warning: made-with.txt names {made_with!r}, this is {espeak_version()!r}")
    print(f"{folder}: {len(texts)} files")


if __name__ == "__main__":
    main()
