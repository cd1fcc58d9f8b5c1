"""Output keys mirror input keys and can never land outside the output prefix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from whisperfleet_runner.contract import DEFAULT_INCLUDE
from whisperfleet_runner.storage.keys import (
    UnsafeKeyError,
    in_state_dir,
    is_temporary,
    matches,
    normalize_key,
    output_uris,
)

FMTS = ("json", "txt", "srt")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("talk.mp3", "s3://b/out/talk"),
        ("a//b.wav", "s3://b/out/a/b"),
        ("x/./y.wav", "s3://b/out/x/y"),
        ("./x.wav", "s3://b/out/x"),
        ("a/../b.wav", "s3://b/out/b"),  # resolves inside the root: allowed
        ("a/b/../../c.wav", "s3://b/out/c"),
        ("with space é.wav", "s3://b/out/with space é"),
        ("東京/会議 1.flac", "s3://b/out/東京/会議 1"),
        ("archive.tar.wav", "s3://b/out/archive.tar"),
        ("README", "s3://b/out/README"),
        (".wav", "s3://b/out/.wav"),
        ("dir.v2/noext", "s3://b/out/dir.v2/noext"),
    ],
)
def test_output_keys_mirror_input_keys(key: str, expected: str) -> None:
    assert output_uris(key, "s3://b/out/", FMTS) == {f: f"{expected}.{f}" for f in FMTS}


def test_output_prefix_with_or_without_slash_is_the_same() -> None:
    assert output_uris("a.wav", "s3://b/out", ["txt"]) == output_uris("a.wav", "s3://b/out/",
                                                                      ["txt"])


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("evil/../../x.wav", "climb above"),
        ("../x.wav", "climb above"),
        ("a/../../../etc/passwd.wav", "climb above"),
        ("..", "climb above"),
        ("/etc/passwd.wav", "absolute"),
        ("//host/x.wav", "absolute"),
        ("C:\\Windows\\x.wav", "absolute Windows"),
        ("", "empty"),
        ("./", "root itself"),
        ("a/..", "root itself"),
        ("nul\x00.wav", "NUL"),
        (".whisperfleet/uid/ledger/0.wav", "state folder"),
    ],
)
def test_unsafe_keys_fail_with_a_reason(key: str, why: str) -> None:
    with pytest.raises(UnsafeKeyError, match=why) as info:
        output_uris(key, "s3://b/out/", FMTS)
    assert info.value.key == key
    assert repr(key) in str(info.value)


def test_normalize_keeps_odd_but_safe_names() -> None:
    assert normalize_key("a//b/./c d é.wav") == "a/b/c d é.wav"
    assert normalize_key("..hidden/..x.wav") == "..hidden/..x.wav"  # not a '..' segment


def test_local_output_folder_never_escapes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert output_uris("x/./y.wav", str(out), ["txt"]) == {"txt": f"{out}/x/y.txt"}
    assert output_uris("x.wav", f"file://{out}/", ["txt"]) == {"txt": f"file://{out}/x.txt"}
    with pytest.raises(UnsafeKeyError):
        output_uris("evil/../../x.wav", str(out), ["txt"])
    assert not (tmp_path / "x.txt").exists()


def test_symlink_inside_output_folder_cannot_lead_outside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    os.symlink(outside, out / "link")
    with pytest.raises(UnsafeKeyError, match="resolves outside"):
        output_uris("link/x.wav", str(out), ["txt"])
    assert output_uris("real/x.wav", str(out), ["txt"]) == {"txt": f"{out}/real/x.txt"}


def test_no_formats_is_a_usage_error() -> None:
    with pytest.raises(ValueError, match="no output formats"):
        output_uris("a.wav", "s3://b/out/", [])


@pytest.mark.parametrize(
    ("key", "selected"),
    [
        ("a.wav", True),
        ("deep/er/a.MP3", True),  # case-insensitive
        ("Talk.M4A", True),
        ("notes.txt", False),
        ("a.wav.json", False),
        ("video.mkv", True),
    ],
)
def test_default_include_globs(key: str, selected: bool) -> None:
    assert matches(key, DEFAULT_INCLUDE) is selected


def test_custom_globs_match_the_relative_key() -> None:
    assert matches("2024/ep1.mp3", ["2024/*.mp3"])
    assert not matches("2023/ep1.mp3", ["2024/*.mp3"])


def test_state_folders_and_temporary_names_are_recognised() -> None:
    assert in_state_dir(".whisperfleet/uid/manifest.jsonl")
    assert in_state_dir("out/.whisperfleet/uid/ledger/0.jsonl")
    assert not in_state_dir("whisperfleet/a.wav")
    assert is_temporary("dir/.talk.json.tmp-0123456789ab")
    assert not is_temporary("dir/talk.json")
    assert not is_temporary(".tmp-talk.wav")
