"""One exception tree for the model library.

Every error a user can cause with bad input is a ``DptensorError``; the service maps
the subclasses to HTTP 4xx in one place, the command line prints their message.

    DptensorError
    ├── DataError        a system folder, trajectory or array is malformed
    ├── ConfigError      input.json (or another config) is invalid
    └── CheckpointError  a model file cannot be read or is not a supported model
"""

from __future__ import annotations


class DptensorError(Exception):
    """Base class of all errors caused by user input."""


class DataError(DptensorError):
    """Malformed data. The message names the file, what was found and what was expected."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message if path is None else f"{path}: {message}")
        self.path = path
        self.detail = message


class ConfigError(DptensorError):
    """Invalid configuration. ``problems`` lists (JSON path, message) pairs, e.g.
    ``("model.descriptor.sel", "unknown key")``; the path is "" for the whole document."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message if not path else f"{path}: {message}")
        self.path = path
        self.detail = message
        self.problems: list[tuple[str, str]] = [(path or "", message)]

    @classmethod
    def from_problems(cls, problems: list[tuple[str, str]]) -> ConfigError:
        text = "; ".join(f"{p}: {m}" if p else m for p, m in problems)
        err = cls(text)
        err.path = problems[0][0] if problems else None
        err.problems = list(problems)
        return err


class CheckpointError(DptensorError):
    """A model file that cannot be loaded (corrupt, wrong format, unsupported options)."""
