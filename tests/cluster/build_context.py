"""The images' build context: which files of the repository a `docker build` sends, by
Docker's .dockerignore rules. The images' cache key hashes exactly these files, and the
Dockerfile tests check every COPY against them.

Standard library only (CI builds the images before any virtualenv exists).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_WILDCARDS = re.compile(r"[*?\[]")


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


class DockerIgnore:
    """A .dockerignore: a pattern matches a path or any of its parents; the last match wins."""

    def __init__(self, text: str) -> None:
        lines = [ln.strip() for ln in text.splitlines()]
        self.patterns = [(p.startswith("!"), _pattern_regex(p.lstrip("!").strip("/")),
                          p.lstrip("!").strip("/"))
                         for p in lines if p and not p.startswith("#")]

    @classmethod
    def of(cls, repo: Path = REPO) -> DockerIgnore:
        return cls((repo / ".dockerignore").read_text())

    def excludes(self, relpath: str) -> bool:
        parts = relpath.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negate, regex, _ in self.patterns:
            if any(regex.fullmatch(p) for p in prefixes):
                excluded = not negate
        return excluded

    def may_include_below(self, reldir: str) -> bool:
        """Whether an exception (`!pattern`) could bring back something under `reldir`."""
        for negate, _, raw in self.patterns:
            if negate:
                literal = _WILDCARDS.split(raw, 1)[0]
                if literal.startswith(reldir + "/") or (reldir + "/").startswith(literal):
                    return True
        return False


def context_files(repo: Path = REPO) -> list[str]:
    """Every file a build sends, as sorted paths relative to `repo` (symlinks not followed)."""
    ignore = DockerIgnore.of(repo)
    found: list[str] = []
    for folder, dirs, files in os.walk(repo):
        rel = Path(folder).relative_to(repo).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirs[:] = sorted(d for d in dirs if not ignore.excludes(rel + d)
                         or ignore.may_include_below(rel + d))
        found += [rel + f for f in files if not ignore.excludes(rel + f)]
    return sorted(found)
