"""Input gathering and storage errors as a new user meets them (found by trying the CLI).

Each test pins a problem seen when running `whisperfleet transcribe` on unseen folders:
transcripts written next to the audio (`-o` the input folder), inputs named inside the
output folder, `file://` inputs with a plain output path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperfleet_runner.contract import DEFAULT_INCLUDE
from whisperfleet_runner.local.inputs import gather


def _tree(root: Path, names: list[str]) -> Path:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 8)
    return root


def _keys(root: str, out: str, *more: str) -> set[str]:
    return {f.key for f in gather([root, *more], DEFAULT_INCLUDE, out).files}


def test_output_folder_equal_to_the_input_folder_keeps_every_input(tmp_path: Path) -> None:
    # Transcripts next to the audio: this used to end in "no files match" (exit 2).
    root = _tree(tmp_path / "talks", ["a.wav", "sub/b.mp3", "a.json"])
    assert _keys(str(root), str(root)) == {"a.wav", "sub/b.mp3"}
    assert _keys(str(root) + "/", str(root)) == {"a.wav", "sub/b.mp3"}
    assert _keys(f"file://{root}/", str(root)) == {"a.wav", "sub/b.mp3"}


def test_inputs_named_inside_the_output_folder_are_kept(tmp_path: Path) -> None:
    out = _tree(tmp_path / "out", ["x.wav", "sub/y.wav", "sub/z.wav"])
    assert _keys(str(out / "x.wav"), str(out)) == {"x.wav"}
    assert _keys(str(out / "sub"), str(out)) == {"y.wav", "z.wav"}
    assert _keys(f"{out}/sub/*.wav", str(out)) == {"y.wav", "z.wav"}


def test_output_inside_the_input_is_still_left_out_whatever_the_spelling(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path / "in", ["a.wav", "out/a.wav"])
    assert _keys(str(root), str(root / "out")) == {"a.wav"}
    # file:// input, plain output path: the same folder, so still left out.
    assert _keys(f"file://{root}", str(root / "out")) == {"a.wav"}
    assert _keys(str(root), f"file://{root}/out/") == {"a.wav"}


def test_a_sibling_folder_sharing_the_output_name_prefix_is_an_input(tmp_path: Path) -> None:
    # `out2/` starts with the text `out` but is not inside `out/`.
    root = _tree(tmp_path / "in", ["out2/a.wav", "out/b.wav"])
    assert _keys(str(root), str(root / "out")) == {"out2/a.wav"}


@pytest.mark.parametrize("code", ["403", "Forbidden"])
def test_a_bodyless_403_is_access_denied_with_both_hints(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # S3 answers HEAD with a bare 403 (no error code in a body): a wrong secret and a missing
    # permission look alike. It used to come out as reason StorageError, "403: Forbidden".
    from botocore.exceptions import ClientError

    from whisperfleet_runner.storage.errors import wrap_error

    secret = "Wr0ngSecret/NeverPrinted+123"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    cause = ClientError({"Error": {"Code": code, "Message": f"Forbidden {secret}"}},
                        "HeadObject")
    try:
        raise PermissionError("Forbidden") from cause
    except PermissionError as exc:
        err = wrap_error("s3://b/out/x.json", exc)
    assert err.reason == "AccessDenied"
    text = str(err)
    assert "s3://b/out/x.json" in text and "AWS_SECRET_ACCESS_KEY" in text
    assert secret not in text
