"""A model file loaded lazily, once per process, that pickles as its path.

The data stage sends its filters to worker processes; a loaded fastText or KenLM model cannot be
pickled (and should not be copied), so each filter travels as the path and loads on first use.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class LazyModelFile(ABC):
    """Base of the filters that score with a model file: subclasses implement `_load`."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._model = None

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path, self._model = state["path"], None

    def _loaded(self):
        if self._model is None:
            self._model = self._load()
        return self._model

    @abstractmethod
    def _load(self):
        """The loaded model (raise DataError naming the path when it cannot be loaded)."""
