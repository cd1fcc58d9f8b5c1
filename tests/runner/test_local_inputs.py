"""Gathering mixed CLI inputs (files, folders, globs) into keys that decide the output layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperfleet_runner.contract import DEFAULT_INCLUDE
from whisperfleet_runner.local.inputs import InputError, gather, glob_regex


def _tree(root: Path, files: dict[str, int]) -> Path:
    for name, size in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    return root


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return _tree(tmp_path / "in", {
        "a.wav": 10, "sub/a.wav": 30, "sub/deep/b.mp3": 20, "notes.txt": 5,
        "sub/Upper.WAV": 1, "with space é.wav": 2,
    })


def _keys(gathered) -> dict[str, str]:
    return {f.key: f.uri for f in gathered.files}


def test_folder_keys_are_relative_so_same_names_in_two_folders_do_not_collide(
    media: Path, tmp_path: Path
) -> None:
    got = gather([str(media)], DEFAULT_INCLUDE, str(tmp_path / "out"))
    assert set(_keys(got)) == {"a.wav", "sub/a.wav", "sub/deep/b.mp3", "sub/Upper.WAV",
                               "with space é.wav"}
    assert got.refused == []


def test_single_file_keeps_its_name_and_beats_include(media: Path, tmp_path: Path) -> None:
    got = gather([str(media / "notes.txt")], DEFAULT_INCLUDE, str(tmp_path / "out"))
    assert _keys(got) == {"notes.txt": str(media / "notes.txt")}


def test_longest_files_come_first(media: Path, tmp_path: Path) -> None:
    got = gather([str(media)], DEFAULT_INCLUDE, str(tmp_path / "out"))
    sizes = [f.size for f in got.files]
    assert sizes == sorted(sizes, reverse=True)
    assert got.files[0].key == "sub/a.wav"


def test_second_input_with_same_outputs_is_refused_not_overwritten(
    media: Path, tmp_path: Path
) -> None:
    other = _tree(tmp_path / "other", {"a.mp3": 3})
    got = gather([str(media / "a.wav"), str(other)], DEFAULT_INCLUDE, str(tmp_path / "out"))
    assert _keys(got) == {"a.wav": str(media / "a.wav")}
    [refused] = got.refused
    assert refused.uri == str(other / "a.mp3")
    assert "collision" in refused.reason and str(media / "a.wav") in refused.reason


def test_same_file_named_twice_runs_once(media: Path, tmp_path: Path) -> None:
    got = gather([str(media), str(media / "sub" / "a.wav")], DEFAULT_INCLUDE,
                 str(tmp_path / "out"))
    assert [f.uri for f in got.files].count(str(media / "sub" / "a.wav")) == 1
    assert got.duplicates == 1
    assert got.refused == []


def test_glob_keys_are_relative_to_its_fixed_folders(media: Path, tmp_path: Path) -> None:
    got = gather([f"{media}/sub/*.wav"], DEFAULT_INCLUDE, str(tmp_path / "out"))
    # `*` stays in one folder (deep/b.mp3 is not a *.wav anyway; Upper.WAV is case-distinct)
    assert set(_keys(got)) == {"a.wav"}
    got = gather([f"{media}/**/*.mp3"], DEFAULT_INCLUDE, str(tmp_path / "out"))
    assert set(_keys(got)) == {"sub/deep/b.mp3"}


def test_literal_name_with_glob_characters_is_a_file(tmp_path: Path) -> None:
    root = _tree(tmp_path / "in", {"take [1].wav": 4})
    got = gather([str(root / "take [1].wav")], DEFAULT_INCLUDE, str(tmp_path / "out"))
    assert _keys(got) == {"take [1].wav": str(root / "take [1].wav")}


def test_outputs_inside_the_input_folder_are_not_inputs(tmp_path: Path) -> None:
    root = _tree(tmp_path / "in", {"a.wav": 4, "out/old.wav": 4})
    got = gather([str(root)], DEFAULT_INCLUDE, str(root / "out"))
    assert set(_keys(got)) == {"a.wav"}


def test_missing_input_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope"):
        gather([str(tmp_path / "nope")], DEFAULT_INCLUDE, str(tmp_path / "out"))


def test_input_matching_nothing_says_so(tmp_path: Path) -> None:
    root = _tree(tmp_path / "in", {"readme.md": 3})
    with pytest.raises(InputError, match=r"no files match.*--include"):
        gather([str(root)], DEFAULT_INCLUDE, str(tmp_path / "out"))
    got = gather([str(root)], ["*.md"], str(tmp_path / "out"))
    assert set(_keys(got)) == {"readme.md"}


@pytest.mark.parametrize(("pattern", "key", "hit"), [
    ("*.wav", "a.wav", True),
    ("*.wav", "x/a.wav", False),
    ("**/*.wav", "a.wav", True),
    ("**/*.wav", "x/y/a.wav", True),
    ("x/**", "x/y/z.wav", True),
    ("a?.wav", "ab.wav", True),
    ("a?.wav", "a/.wav", False),
    ("[!b]*.wav", "a.wav", True),
    ("[!b]*.wav", "b.wav", False),
    ("[ab].wav", "c.wav", False),
    ("a+b(1).wav", "a+b(1).wav", True),
    ("*.WAV", "a.wav", False),
])
def test_glob_semantics(pattern: str, key: str, hit: bool) -> None:
    assert bool(glob_regex(pattern).match(key)) is hit
