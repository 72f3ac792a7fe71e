"""Run-level failures and the CLI's exit codes.

Row failures are values (`types.RowError`); the exceptions here stop a run. They are raised anywhere and
caught once, in `cli.main`, which prints the message and the hint and exits with `exit_code`.
"""

from __future__ import annotations

EXIT_OK = 0  # every row transcribed
EXIT_ROWS_FAILED = 1  # the run completed, some rows carry an `error`
EXIT_USAGE = 2  # bad arguments or input that --strict rejects (Typer also uses 2 for usage errors)
EXIT_FATAL = 3  # the run could not start or finish (model, engine, resume mismatch, missing asset)
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM: the window in flight was written, rerun to resume


class SpeechlmBatchError(Exception):
    """Base class: a message for the user and, optionally, what to do next."""

    exit_code = EXIT_FATAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(SpeechlmBatchError):
    exit_code = EXIT_USAGE


class ManifestError(UsageError):
    """A manifest line that --strict refuses, or a manifest that cannot be opened."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line


class ResumeMismatchError(SpeechlmBatchError):
    """The output folder holds rows made with other settings (model, prompt, sampling)."""


class OfflineAssetError(SpeechlmBatchError):
    """A pinned package is gone, its hash differs, or a model / dataset is not available offline."""


class EngineError(SpeechlmBatchError):
    """vLLM could not be imported or started."""
