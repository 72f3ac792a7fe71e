"""The `speechlm-batch` command: wiring only. Each command lives in its own module."""

from __future__ import annotations

import sys

import typer

from speechlm_batch.cli import console as ui
from speechlm_batch.cli import eval as eval_cli
from speechlm_batch.cli import export as export_cli
from speechlm_batch.cli import transcribe as transcribe_cli
from speechlm_batch.cli.version import version_callback
from speechlm_batch.cli.merge import merge
from speechlm_batch.cli.models import models_app
from speechlm_batch.cli.report import report
from speechlm_batch.cli.slurm import slurm
from speechlm_batch.errors import SpeechlmBatchError

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
app.command()(merge)
app.command()(slurm)
app.command("export", epilog=export_cli.EXAMPLES)(export_cli.export)
app.add_typer(models_app, name="models")


def main() -> None:
    """Entry point: run failures are caught here once and mapped to documented exit codes."""
    try:
        app()
    except SpeechlmBatchError as e:
        ui.console.print(f"[bold red]error:[/bold red] {e}")
        if e.hint:
            ui.console.print(f"[dim]hint:[/dim] {e.hint}")
        sys.exit(e.exit_code)
