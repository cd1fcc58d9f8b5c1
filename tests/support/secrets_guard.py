"""Credential values, and finding them where people would read them.

`Secrets` holds the values to look for, each under a label: reports name the label and
show the context with every value masked, so a report of a leak never repeats it. `Watch` is
one test's state: its secrets (the tests' own S3 and Azurite keys, plus what the test
registers), and text its subprocesses printed and its capture fixtures read. `register`
adds a value for the test running now; the plugin (`secret_guard_plugin`) decides where to look.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote

from tests.support.credentials import AZURE_ACCOUNT_KEY, S3_ACCESS_KEY, S3_SECRET_KEY

# Shorter values would match by chance ("eu-1", "late"): no credential is that short.
MIN_LENGTH = 8
KNOWN = {"S3_ACCESS_KEY": S3_ACCESS_KEY, "S3_SECRET_KEY": S3_SECRET_KEY,
         "AZURE_ACCOUNT_KEY": AZURE_ACCOUNT_KEY}
_CONTEXT = 40  # characters shown either side of a hit


@dataclass(frozen=True)
class Leak:
    channel: str  # where it was seen: "captured stdout call", "file out/a.json", …
    label: str  # which credential, by name
    excerpt: str  # the surroundings, every credential masked


class Secrets:
    """Credential values under labels; finds them in text or bytes, raw or URL-encoded."""

    def __init__(self, named: dict[str, str] | None = None) -> None:
        self._labels: dict[str, str] = {}  # value -> label
        self._forms: list[tuple[str, bytes, str]] | None = None
        for label, value in (named or {}).items():
            self.add(value, label)

    def __len__(self) -> int:
        return len(self._labels)

    def __repr__(self) -> str:  # never the values
        return f"Secrets({sorted(set(self._labels.values()))})"

    def add(self, value: str, label: str) -> None:
        if len(value) < MIN_LENGTH:
            raise ValueError(f"{label}: a credential to watch for must have at least "
                             f"{MIN_LENGTH} characters (shorter ones match by chance)")
        self._labels.setdefault(value, label)
        self._forms = None

    def add_found(self, named: dict[str, str]) -> None:
        """Values read from somewhere (a Secret's data): the short ones are no credentials."""
        for label, value in named.items():
            if len(value) >= MIN_LENGTH:
                self.add(value, label)

    def forms(self) -> list[tuple[str, bytes, str]]:
        """(text form, its UTF-8 bytes, label): each value as is and URL-encoded."""
        if self._forms is None:
            seen: dict[str, str] = {}
            for value, label in self._labels.items():
                seen.setdefault(value, label)
                seen.setdefault(quote(value, safe=""), label)  # in a URL or query string
            self._forms = [(text, text.encode(), label) for text, label in seen.items()]
        return self._forms

    @property
    def longest(self) -> int:
        return max((len(raw) for _, raw, _ in self.forms()), default=0)

    def find(self, channel: str, data: str | bytes | None) -> list[Leak]:
        if not data:
            return []
        leaks = []
        for text, raw, label in self.forms():
            if isinstance(data, bytes):
                at, size = data.find(raw), len(raw)
            else:
                at, size = data.find(text), len(text)
            if at >= 0:
                leaks.append(Leak(channel, label, self._excerpt(data, at, size)))
        return leaks

    def mask(self, text: str) -> str:
        # Longest first: a value inside another's URL-encoded form is masked with it.
        for form, _, label in sorted(self.forms(), key=lambda f: -len(f[0])):
            text = text.replace(form, f"<{label}>")
        return text

    def _excerpt(self, data: str | bytes, at: int, size: int) -> str:
        part = data[max(0, at - _CONTEXT): at + size + _CONTEXT]
        text = part.decode("utf-8", "replace") if isinstance(part, bytes) else part
        return repr(self.mask(text))


@dataclass(eq=False)
class Watch:
    """One test's secrets, and what its subprocesses and capture fixtures handed it."""

    secrets: Secrets = field(default_factory=lambda: Secrets(KNOWN))
    seen: list[tuple[str, str | bytes]] = field(default_factory=list)
    buckets: frozenset[str] = frozenset()  # moto buckets that existed before the test
    phases_checked: set[str] = field(default_factory=set)  # whose captured output was read

    def saw(self, channel: str, data: str | bytes | None) -> None:
        if data:
            self.seen.append((channel, data))

    def take_seen(self) -> list[tuple[str, str | bytes]]:
        taken, self.seen = self.seen, []
        return taken

    def find_all(self, texts: Iterable[tuple[str, str | bytes | None]]) -> list[Leak]:
        return [leak for channel, data in texts for leak in self.secrets.find(channel, data)]


# A stack, not one slot: a test may run an inner pytest (pytester) whose tests push theirs.
_watches: list[Watch] = []


def begin(buckets: frozenset[str]) -> Watch:
    watch = Watch(buckets=buckets)
    _watches.append(watch)
    return watch


def end(watch: Watch) -> None:
    _watches[:] = [w for w in _watches if w is not watch]


def current() -> Watch | None:
    return _watches[-1] if _watches else None


def register(value: str, label: str = "a registered secret") -> None:
    """Guard `value` like the tests' own S3 keys for the rest of the running test: a test
    (or a fixture) that makes its own credential calls this."""
    watch = current()
    if watch is None:
        raise RuntimeError("secrets_guard.register is for use inside a test or its fixtures")
    watch.secrets.add(value, label)


def describe(leaks: list[Leak]) -> str:
    lines = [f"  - {leak.label} in {leak.channel}: {leak.excerpt}" for leak in leaks]
    return ("secret guard: a credential value reached output people read (values masked; "
            "see tests/support/secrets_guard.py):\n" + "\n".join(dict.fromkeys(lines)))
