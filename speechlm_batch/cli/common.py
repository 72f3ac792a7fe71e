"""Turning command-line options into settings, and running a source with progress: shared by commands."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from speechlm_batch import logs, runner, sharding
from speechlm_batch.cli import console as ui
from speechlm_batch.cli.options import parse_retry_kinds
from speechlm_batch.errors import EXIT_INTERRUPTED, EXIT_OK, UsageError
from speechlm_batch.models.store import resolve_model
from speechlm_batch.server_client import normalize_url
from speechlm_batch.settings import RunSettings

def run_model(settings: RunSettings) -> str:
    """What the run names its model by: the local folder it loads, or in server mode the served model name.

    Server URLs are checked here, before anything is read or written; --launch-server prepares the model now
    so a missing one fails before a server start.
    """
    if not settings.server.enabled:
        return resolve_model(settings.engine.model)
    for url in settings.server.urls:
        normalize_url(url)
    if settings.server.launch:
        resolve_model(settings.engine.model)
    return settings.engine.model


def resolve_chunk(option: str | None) -> sharding.ChunkSpec | None:
    """--chunk wins; else a Slurm array task's index and count, said so in the log."""
    if option is not None:
        return sharding.ChunkSpec.parse(option)
    spec = sharding.chunk_from_env(dict(os.environ))
    if spec is not None:
        ui.console.print(f"[dim]chunk {spec.index}/{spec.count} taken from SLURM_ARRAY_TASK_* variables[/dim]")
    return spec


@contextmanager
def run_logging(output_dir: Path, chunk: sharding.ChunkSpec | None, level: str, stem: str) -> Iterator[logs.LogPlan]:
    """Engine logs to OUTPUT_DIR/logs/<stem>[.chunk-i-of-N].log, the terminal showing `level` and up."""
    log = logs.plan(output_dir, f"{stem}.{chunk.label}" if chunk else stem, level)
    with logs.routed(log):
        yield log


def log_note(log: logs.LogPlan | None) -> str:
    """One line naming the log file and how many warnings / errors the run's processes wrote to it."""
    if log is None:
        return ""
    counts = logs.count_levels(log.path)
    found = ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in counts.items() if n)
    return f"log: {log.path}" + (f" ({found}; -v shows them)" if found else "")


def install_stop_handlers() -> threading.Event:
    """SIGINT / SIGTERM (Slurm pre-emption) stop feeding new rows; what is in flight is finished and written."""
    stop = threading.Event()

    def handler(signum, _frame):
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        ui.console.print(f"[yellow]{signal.Signals(signum).name}: finishing the rows in flight, then stopping[/yellow]")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def retry_kinds(run) -> frozenset[str] | None:
    """--retry-failed parsed (None when not given); with --overwrite there is nothing to retry."""
    kinds = parse_retry_kinds(run.values.get("retry_failed"))
    if kinds is not None and run.overwrite:
        raise UsageError("--retry-failed keeps the rows that succeeded, --overwrite deletes them: give one")
    return kinds


def run_with_progress(
    source, settings: RunSettings, output_dir: Path, *, model_path: str, chunk, overwrite: bool, label: str,
    retry: frozenset[str] | None = None,
):
    """runner.run_source with a rich progress bar; returns the outcome."""
    stop = install_stop_handlers()
    with ui.progress() as bar:
        task = bar.add_task(label, total=None, audio_s=0.0)

        def on_start(total: int, resumed: int) -> None:
            bar.update(task, total=total, completed=resumed)

        def on_rows(rows) -> None:
            ui.add_rows(bar, task, rows)

        return runner.run_source(
            source, settings, output_dir, model_path=model_path, chunk=chunk, overwrite=overwrite,
            stop=stop, on_start=on_start, on_rows=on_rows, retry_kinds=retry,
        )


def finish(outcome: runner.RunOutcome, title: str, log: logs.LogPlan | None = None) -> int:
    """Print the summary and return the exit code scripts can rely on."""
    if outcome.already_done:
        ui.console.print(f"[green]{outcome.predictions_path} is complete already: nothing to do[/green] (use --overwrite to redo)")
        return EXIT_OK
    report = outcome.report.to_dict()
    ui.out.print(ui.run_summary(report, title))
    failed = report["rows"]["failed_by_kind"]
    if failed:
        ui.out.print(ui.failures_table(failed))
    ui.console.print(f"predictions: {outcome.predictions_path}\nreport: {outcome.report_path}", highlight=False)
    if log is not None:
        ui.console.print(log_note(log), highlight=False)
    if outcome.interrupted:
        ui.console.print("[yellow]interrupted: rerun the same command to resume where it stopped[/yellow]")
        return EXIT_INTERRUPTED
    return EXIT_OK  # complete: failed rows are in the file and the report, and a rerun will not change them
