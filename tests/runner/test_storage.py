"""Storage on local folders: listing, confinement, complete-or-absent publishing."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest

from whisperfleet_runner import storage
from whisperfleet_runner.contract import Reason
from whisperfleet_runner.storage import (
    InputFile,
    StorageError,
    UnsafeKeyError,
    list_inputs,
    list_uris,
    output_uris,
    outputs_exist,
    publish,
    publish_set,
    read_bytes,
    read_text,
)

FIXTURE_KEYS = [
    "bad/empty.wav", "bad/notes.mp3", "bad/truncated.mp3", "hello.mp3", "hello.wav",
    "nested/deeper/hello.wav", "nested/numbers.wav", "silence.wav", "with space é.wav",
]


def test_lists_fixture_folder_sorted_with_sizes(audio_dir: Path) -> None:
    files = list_inputs(str(audio_dir))
    assert [f.key for f in files] == FIXTURE_KEYS
    for f in files:
        assert f.size == os.path.getsize(f.uri)
        assert read_bytes(f.uri) == (audio_dir / f.key).read_bytes()


def test_file_url_and_plain_path_list_the_same_keys(audio_dir: Path) -> None:
    by_url = list_inputs(f"file://{audio_dir}/")
    assert [f.key for f in by_url] == FIXTURE_KEYS
    assert by_url[-1].uri == f"file://{audio_dir}/with space é.wav"
    assert read_bytes(by_url[-1].uri) == (audio_dir / "with space é.wav").read_bytes()


def test_include_globs_select_files(audio_dir: Path) -> None:
    keys = [f.key for f in list_inputs(str(audio_dir), include=["*.MP3"])]
    assert keys == ["bad/notes.mp3", "bad/truncated.mp3", "hello.mp3"]
    assert [f.key for f in list_inputs(str(audio_dir), include=["nested/*"])] == [
        "nested/deeper/hello.wav", "nested/numbers.wav"]


def test_single_file_is_listed_as_itself(audio_dir: Path) -> None:
    files = list_inputs(str(audio_dir / "nested" / "numbers.wav"))
    path = audio_dir / "nested" / "numbers.wav"
    assert files == [InputFile(uri=str(path), key="numbers.wav", size=path.stat().st_size)]


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist") as info:
        list_inputs(str(tmp_path / "nope"))
    assert info.value.reason == "NotFound"


def test_state_dirs_and_temporary_files_are_not_inputs(tmp_path: Path) -> None:
    (tmp_path / ".whisperfleet" / "uid").mkdir(parents=True)
    (tmp_path / ".whisperfleet" / "uid" / "x.wav").write_bytes(b"state")
    (tmp_path / "sub" / ".whisperfleet").mkdir(parents=True)
    (tmp_path / "sub" / ".whisperfleet" / "y.wav").write_bytes(b"state")
    (tmp_path / ".a.wav.tmp-0123456789ab").write_bytes(b"half")
    (tmp_path / "a.wav").write_bytes(b"audio")
    assert [f.key for f in list_inputs(str(tmp_path), include=["*"])] == ["a.wav"]


def test_undecodable_file_name_is_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "good.wav").write_bytes(b"x")
    bad = os.path.join(os.fsencode(tmp_path), b"bad-\xff.wav")
    with open(bad, "wb") as fh:
        fh.write(b"x")
    assert [f.key for f in list_inputs(str(tmp_path))] == ["good.wav"]


def test_outputs_mirror_and_stay_inside_local_folder(tmp_path: Path, audio_dir: Path) -> None:
    out = tmp_path / "out"
    for f in list_inputs(str(audio_dir)):
        for uri in output_uris(f.key, str(out), ["txt"]).values():
            publish(uri, f.key)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.txt"))
    # hello.mp3 and hello.wav share one output name: the layout is <key minus ext>.<fmt>.
    assert written == sorted({k.rsplit(".", 1)[0] + ".txt" for k in FIXTURE_KEYS})
    assert (out / "with space é.txt").read_text() == "with space é.wav"


def test_key_climbing_out_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    with pytest.raises(UnsafeKeyError):
        output_uris("evil/../../x.wav", str(out), ["txt"])
    assert list(tmp_path.rglob("*")) == []


def test_publish_writes_and_overwrites_without_debris(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "t.txt"
    publish(str(target), "first")
    publish(f"file://{target}", b"second")
    assert target.read_text() == "second"
    assert read_text(str(target)) == "second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["t.txt"]


def test_exception_mid_publish_leaves_old_content_and_no_debris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "t.json"
    publish(str(target), "old complete")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", broken_fsync)
    with pytest.raises(StorageError, match="No space left"):
        publish(str(target), "new " * 10_000)
    assert target.read_text() == "old complete"
    assert os.listdir(tmp_path) == ["t.json"]

    fresh = tmp_path / "fresh.json"
    with pytest.raises(StorageError):
        publish(str(fresh), "never complete")
    assert not fresh.exists()
    assert not outputs_exist([str(fresh)])


def test_killed_process_mid_publish_leaves_no_accepted_output(tmp_path: Path) -> None:
    # A real crash: the process dies after writing the temporary file, before the rename.
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import os
        from whisperfleet_runner import storage
        def die(src, dst):
            os._exit(9)
        storage.os.replace = die
        storage.publish({str(out / "talk.json")!r}, "x" * 100000)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    leftovers = os.listdir(out)
    assert len(leftovers) == 1 and leftovers[0].startswith(".talk.json.tmp-")
    assert not outputs_exist([str(out / "talk.json")])
    assert list_inputs(str(out), include=["*"]) == []
    assert list_uris(str(out)) == []


def test_outputs_exist_needs_every_output(tmp_path: Path) -> None:
    uris = output_uris("talk.wav", str(tmp_path), ["json", "txt"])
    assert not outputs_exist(uris.values())
    publish(uris["txt"], "hello")
    assert not outputs_exist(uris.values())
    publish(uris["json"], "{}")
    assert outputs_exist(uris.values())
    assert not outputs_exist([])


def test_publish_set_writes_json_last(tmp_path: Path) -> None:
    # The txt cannot be written (its folder is a file), so the json must not appear either.
    (tmp_path / "sub").write_text("i am a file")
    outputs: dict[str, bytes | str] = {
        str(tmp_path / "a.json"): "{}", str(tmp_path / "sub" / "a.txt"): "hi"}
    with pytest.raises(StorageError):
        publish_set(outputs)
    assert not (tmp_path / "a.json").exists()
    (tmp_path / "sub").unlink()
    publish_set(outputs)
    assert outputs_exist(outputs)


def test_reading_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"nope\.wav does not exist") as info:
        read_bytes(str(tmp_path / "nope.wav"))
    assert info.value.reason == "NotFound"


def test_fixture_copy_with_odd_local_names(tmp_path: Path, audio_dir: Path) -> None:
    # Names a local folder can hold: spaces, non-ASCII letters, leading dots, '#', '%'.
    names = ["a b/c d.wav", "ünï/cödé.wav", "..x.wav", "100% #1.wav", "東京.wav"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(audio_dir / "hello.wav", tmp_path / name)
    files = list_inputs(str(tmp_path))
    assert [f.key for f in files] == sorted(names)
    for f in files:
        assert read_bytes(f.uri) == (audio_dir / "hello.wav").read_bytes()
        assert output_uris(f.key, str(tmp_path / "out"), ["txt"])


def test_unknown_protocol_is_an_invalid_uri() -> None:
    with pytest.raises(StorageError, match="foo://x/ is not a usable storage URI") as info:
        list_inputs("foo://x/")
    assert info.value.reason == "InvalidUri"


def test_missing_optional_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # The gs:// driver absent, whether or not this machine has it: `import gcsfs` fails,
    # and fsspec has no class of it registered from an earlier import.
    # The module (`fsspec.registry` is also the name of its read-only view), imported here:
    # run alone, this test is the first to use it.
    registered = vars(importlib.import_module("fsspec.registry"))["_registry"]
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    for protocol in ("gs", "gcs"):
        monkeypatch.delitem(registered, protocol, raising=False)
    with pytest.raises(StorageError, match=r"whisperfleet\[gcs\]") as info:
        list_inputs("gs://bucket/in/")
    assert info.value.reason == "MissingDriver"


def test_credentials_inside_a_uri_are_refused_and_never_echoed() -> None:
    uri = "s3://AKIAEXAMPLE:" + "t0p-secret-value" + "@bucket/in/"  # not echoed by tracebacks
    with pytest.raises(StorageError) as info:
        list_inputs(uri)
    assert info.value.reason == "InvalidUri"
    assert "t0p-secret-value" not in "".join(traceback.format_exception(info.value))
    assert "s3://***@bucket/in/" in str(info.value)


def test_the_key_inside_an_azure_connection_string_is_never_shown_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Libraries name the key without the rest of the string (a signing error, a parsed
    # credential): hiding the whole string is not enough.
    key, token = "a2V5LW9mLXRoaXMtYWNjb3VudA==", "sv=2024&sig=c2lnbmF0dXJl"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"AccountName=acct;AccountKey={key};SharedAccessSignature={token};")
    error = StorageError(Reason.STORAGE_ERROR, f"az://c/x: cannot sign with {key} or {token}")
    assert key not in str(error) and token not in str(error)
    assert "cannot sign with *** or ***" in str(error)


def test_memory_filesystem_works_like_a_bucket() -> None:
    publish("memory://wf-test/in/a.wav", b"x")
    publish("memory://wf-test/in/b c/é.MP3", b"yy")
    publish("memory://wf-test/in/.whisperfleet/u/x.wav", b"state")
    assert list_inputs("memory://wf-test/in/") == [
        InputFile("memory://wf-test/in/a.wav", "a.wav", 1),
        InputFile("memory://wf-test/in/b c/é.MP3", "b c/é.MP3", 2),
    ]
    assert outputs_exist(["memory://wf-test/in/a.wav"])
    assert not outputs_exist(["memory://wf-test/in/a.wav", "memory://wf-test/in/z.wav"])
