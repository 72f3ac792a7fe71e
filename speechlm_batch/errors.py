"""Run-level failures and the CLI's exit codes.

Row failures are values (`types.RowError`); the exceptions here stop a run. They are raised anywhere and
caught once, in `cli.main`, which prints the message and the hint and exits with `exit_code`.
"""

from __future__ import annotations

# Exit codes, chosen so that a scheduler can chain on them (Slurm `afterok` runs the merge only after 0):
EXIT_OK = 0  # complete: every row written; rows that failed carry an `error` and are counted in the report
EXIT_USAGE = 2  # bad arguments, or input / settings that do not match the output folder (Typer also uses 2)
EXIT_FATAL = 3  # the run could not start or finish: model, engine crash, disk full, missing asset
EXIT_MERGE_INCOMPLETE = 4  # merge: chunks missing or unfinished; rerun those (the command is printed)
EXIT_MERGE_CONFLICT = 5  # merge: the chunks disagree (settings, input, rows twice or missing)
EXIT_BUG = 70  # an unexpected exception (a bug): the traceback is printed (BSD EX_SOFTWARE)
EXIT_BUSY = 75  # another process is writing this output file: try later (BSD EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM: the rows in flight were written; rerun to resume

EXIT_CODES_HELP = (
    "Exit codes: 0 complete (rows that failed carry an `error`), 2 usage error or input / settings other "
    "than the output folder's, 3 the run could not start or finish, 70 unexpected error (a bug), 75 another "
    "process writes this output, 130 interrupted (rerun to resume)."
)


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
    """The output folder holds rows made with other settings (model, prompt) or from another input."""

    exit_code = EXIT_USAGE


class OutputBusyError(SpeechlmBatchError):
    """Another process holds the lock of this output file (a double submit, or a rerun while it runs)."""

    exit_code = EXIT_BUSY


class OfflineAssetError(SpeechlmBatchError):
    """A pinned package is gone, its hash differs, or a model / dataset is not available offline."""


class EngineError(SpeechlmBatchError):
    """vLLM could not be imported or started."""
