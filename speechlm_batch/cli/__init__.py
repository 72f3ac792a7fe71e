"""The `speechlm-batch` command: wiring only. Each command lives in its own module."""

from __future__ import annotations

import sys
import traceback

import typer
from rich.markup import escape

from speechlm_batch.cli import console as ui
from speechlm_batch.cli import eval as eval_cli
from speechlm_batch.cli import export as export_cli
from speechlm_batch.cli import transcribe as transcribe_cli
from speechlm_batch.cli.version import version_callback
from speechlm_batch.cli.merge import EXIT_CODES as MERGE_EXIT_CODES
from speechlm_batch.cli.merge import merge
from speechlm_batch.cli.models import models_app
from speechlm_batch.cli.report import report
from speechlm_batch.cli.slurm import slurm
from speechlm_batch.errors import EXIT_BUG, EXIT_FATAL, SpeechlmBatchError

app = typer.Typer(
    name="speechlm-batch",
    help="Offline batch transcription with speech LLMs and ASR models on vLLM.\n\n"
    "Start with `speechlm-batch transcribe data.jsonl`; `speechlm-batch COMMAND --help` explains a command.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)
app.callback()(version_callback)
app.command("transcribe", epilog=transcribe_cli.EXAMPLES)(transcribe_cli.transcribe)
app.command("eval", epilog=eval_cli.EXAMPLES)(eval_cli.eval_command)
app.command()(report)
app.command(epilog=MERGE_EXIT_CODES)(merge)
app.command()(slurm)
app.command("export", epilog=export_cli.EXAMPLES)(export_cli.export)
app.add_typer(models_app, name="models")


def main() -> None:
    """Entry point: run failures are caught here once and mapped to documented exit codes (errors.py).

    Typer itself maps usage errors to 2 and a KeyboardInterrupt (a second Ctrl-C) to 130.
    """
    try:
        app()
    except SpeechlmBatchError as e:
        ui.console.print(f"[bold red]error:[/bold red] {e}")
        if e.hint:
            ui.console.print(f"[dim]hint:[/dim] {e.hint}")
        sys.exit(e.exit_code)
    except OSError as e:  # disk full, a file system gone: the environment, not a bug
        ui.console.print(f"[bold red]error:[/bold red] {escape(f'{type(e).__name__}: {e}')}")
        ui.console.print("[dim]hint:[/dim] rerun the same command when fixed: it resumes")
        sys.exit(EXIT_FATAL)
    except Exception:  # a bug: its own code, so that it is never mistaken for a failed run or bad input
        traceback.print_exc()
        ui.console.print("[bold red]unexpected error (a bug)[/bold red]: the traceback is above; rerun resumes")
        sys.exit(EXIT_BUG)
