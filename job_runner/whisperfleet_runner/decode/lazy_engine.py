"""The model of a run, loaded on first need: an all-skipped run never loads it."""

from __future__ import annotations

from collections.abc import Callable

from whisperfleet_runner.contract import Reason, TranscriptionOptions
from whisperfleet_runner.decode.protocols import Engine

EngineGetter = Callable[[], Engine]


class EngineLoadError(RuntimeError):
    """The model could not be loaded: no file of the shard can run (reported, not per file)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class LazyEngine:
    """Calls the getter at most once, on first use, so an all-skipped shard loads no model;
    then checks once that the model can honour the options (a language it does not know
    would otherwise fail every file, one by one)."""

    def __init__(self, getter: EngineGetter, options: TranscriptionOptions) -> None:
        self._getter = getter
        self._options = options
        self._engine: Engine | None = None

    def get(self) -> Engine:
        if self._engine is None:
            try:
                engine = self._getter()
            except Exception as exc:
                from whisperfleet_runner.decode.models import ModelNotFoundError
                from whisperfleet_runner.storage import StorageError

                # A store that fails while the model is copied keeps its own reason, so the
                # pod is retried (storage) instead of failing the job (model not found).
                reason = (Reason.MODEL_NOT_FOUND if isinstance(exc, ModelNotFoundError)
                          else exc.reason if isinstance(exc, StorageError)
                          else Reason.MODEL_LOAD)
                raise EngineLoadError(reason, f"cannot load the model: {exc}") from exc
            problem = engine.unsupported(self._options)
            if problem:
                raise EngineLoadError(Reason.UNSUPPORTED_OPTIONS, problem)
            self._engine = engine
        return self._engine
