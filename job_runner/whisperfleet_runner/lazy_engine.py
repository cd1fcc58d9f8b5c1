"""The model of a run, loaded on first need: an all-skipped run never loads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from whisperfleet_runner.config import Reason, TranscriptionOptions

EngineGetter = Callable[[], Any]  # returns an engine.Engine (or a stand-in with its methods)


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
        self._engine: Any = None

    def get(self) -> Any:
        if self._engine is None:
            try:
                engine = self._getter()
            except Exception as exc:
                from whisperfleet_runner.models import ModelNotFoundError

                reason = (Reason.MODEL_NOT_FOUND if isinstance(exc, ModelNotFoundError)
                          else Reason.MODEL_LOAD)
                raise EngineLoadError(reason, f"cannot load the model: {exc}") from exc
            check = getattr(engine, "unsupported", None)
            problem = check(self._options) if check else None
            if problem:
                raise EngineLoadError(Reason.UNSUPPORTED_OPTIONS, problem)
            self._engine = engine
        return self._engine
