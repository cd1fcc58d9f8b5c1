"""Model resolution: local dirs, pre-staged caches, the bundled tiny.en, offline errors.

Pre-staged layouts are built in tmp_path from symlinks to the real bundled tiny.en files, so
every path resolved here is a real, loadable CTranslate2 model. Nothing touches a hub
(conftest sets HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from whisperfleet_runner import contract
from whisperfleet_runner.decode.models import ModelNotFoundError, resolve_model


def stage(model_dir: Path, tiny_model_path: Path) -> Path:
    """Make `model_dir` a CTranslate2 model directory by linking the bundled model's files."""
    model_dir.mkdir(parents=True)
    for f in tiny_model_path.iterdir():
        (model_dir / f.name).symlink_to(f)
    return model_dir


@pytest.fixture(autouse=True)
def _no_env_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(contract.ENV_MODEL_CACHE, raising=False)


def test_local_ct2_directory_is_used_as_is(tiny_model_path: Path, tmp_path: Path) -> None:
    local = stage(tmp_path / "my-model", tiny_model_path)
    assert resolve_model(str(local)) == str(local.resolve())


def test_directory_without_model_bin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "contract.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match=r"holds no model\.bin"):
        resolve_model(str(tmp_path))


def test_prestaged_cache_layout(tiny_model_path: Path, tmp_path: Path) -> None:
    staged = stage(tmp_path / "cache" / "large-v3", tiny_model_path)
    assert resolve_model("large-v3", str(tmp_path / "cache")) == str(staged.resolve())


def test_prestaged_hf_repo_id_with_slash_or_dashes(tiny_model_path: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    nested = stage(cache / "Systran" / "faster-whisper-small", tiny_model_path)
    flat = stage(cache / "Systran--faster-whisper-medium", tiny_model_path)
    assert resolve_model("Systran/faster-whisper-small", str(cache)) == str(nested.resolve())
    assert resolve_model("Systran/faster-whisper-medium", str(cache)) == str(flat.resolve())


def test_env_cache_is_searched_after_the_given_cache(
    tiny_model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_cache = tmp_path / "pvc"
    in_env = stage(env_cache / "large-v3", tiny_model_path)
    monkeypatch.setenv(contract.ENV_MODEL_CACHE, str(env_cache))
    assert resolve_model("large-v3") == str(in_env.resolve())
    given = stage(tmp_path / "given" / "large-v3", tiny_model_path)
    assert resolve_model("large-v3", str(tmp_path / "given")) == str(given.resolve())


def test_bundled_tiny_en_by_name_offline(tiny_model_path: Path) -> None:
    assert Path(resolve_model("tiny.en", offline=True)) == tiny_model_path


def test_prestaged_tiny_en_wins_over_bundled(tiny_model_path: Path, tmp_path: Path) -> None:
    staged = stage(tmp_path / "tiny.en", tiny_model_path)
    assert resolve_model("tiny.en", str(tmp_path)) == str(staged.resolve())


def test_hugging_face_cache_layout_is_found_offline(tiny_model_path: Path, tmp_path: Path) -> None:
    # The layout faster-whisper's download code writes: models--<owner>--<repo>/snapshots/<rev>.
    repo = tmp_path / "models--Systran--faster-whisper-large-v3"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    snapshot = stage(repo / "snapshots" / "0123abcd", tiny_model_path)
    assert resolve_model("large-v3", str(tmp_path), offline=True) == str(snapshot)


def test_offline_and_missing_names_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("large-v3", str(tmp_path))  # offline from HF_HUB_OFFLINE=1
    message = str(err.value)
    assert f"{tmp_path}/large-v3/model.bin" in message
    assert "copy a CTranslate2 model directory to <cache>/large-v3/" in message
    assert contract.ENV_MODEL_CACHE in message
    assert "unset HF_HUB_OFFLINE" in message


def test_offline_without_any_cache_says_how_to_give_one() -> None:
    expected = rf"no cache dir given; set {contract.ENV_MODEL_CACHE}"
    with pytest.raises(ModelNotFoundError, match=expected):
        resolve_model("medium.en", offline=True)


def test_unknown_size_name_lists_the_valid_ones() -> None:
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'huge-v9'.*large-v3.*owner/name"):
        resolve_model("huge-v9", offline=True)


def test_empty_name_is_refused() -> None:
    with pytest.raises(ModelNotFoundError, match="no model given"):
        resolve_model("  ")
