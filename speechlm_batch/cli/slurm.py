"""`speechlm-batch slurm MANIFEST --chunks N`: print or write the sbatch array script (see speechlm_batch.slurm)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from speechlm_batch.cli import console as ui
from speechlm_batch.cli.options import OutputDirOpt
from speechlm_batch.errors import UsageError
from speechlm_batch.fsutil import atomic_write_text
from speechlm_batch.slurm import DEFAULT_COMMAND, SbatchOptions, render_sbatch

# The script sets these per task itself.
_RESERVED = ("--chunk", "--output-dir", "-o")


def slurm(
    manifest: Annotated[Path, typer.Argument(help="NeMo-style JSONL manifest.", exists=True, dir_okay=False)],
    chunks: Annotated[int, typer.Option("--chunks", "-n", min=1, help="Number of array tasks (chunks).")],
    transcribe_args: Annotated[
        Optional[list[str]],
        typer.Argument(help="After `--`: further transcribe options, e.g. -- --model whisper-base --window 64."),
    ] = None,
    output_dir: OutputDirOpt = Path("outputs"),
    partition: Annotated[Optional[str], typer.Option("--partition", "-p", help="Slurm partition.")] = None,
    gpus_per_task: Annotated[int, typer.Option("--gpus-per-task", min=0, help="GPUs per chunk (0: CPU).")] = 1,
    cpus_per_task: Annotated[Optional[int], typer.Option("--cpus-per-task", min=1)] = None,
    mem: Annotated[Optional[str], typer.Option("--mem", help="Memory per chunk, e.g. 32G.")] = None,
    time: Annotated[Optional[str], typer.Option("--time", "-t", help="Time limit per chunk, e.g. 04:00:00.")] = None,
    job_name: Annotated[str, typer.Option("--job-name")] = "speechlm-batch",
    command: Annotated[
        Optional[str],
        typer.Option(
            "--command", help="How tasks run the CLI (shell text); default: this installation's speechlm-batch."
        ),
    ] = None,
    write: Annotated[
        Optional[Path], typer.Option("--write", "-w", help="Write the script here instead of printing it.")
    ] = None,
) -> None:
    """An sbatch array script: chunk i of N per task, then a merge job once every chunk succeeded."""
    extra = list(transcribe_args or [])
    _check_extra(extra)
    options = SbatchOptions(
        partition=partition, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, mem=mem, time=time,
        job_name=job_name,
    )
    # Absolute paths: tasks and reruns may start in another folder than this one.
    text = render_sbatch(
        manifest.absolute(), chunks, output_dir.absolute(), options=options, extra_args=extra,
        command=command or default_command(),
    )
    if write is None:
        sys.stdout.write(text)
        return
    atomic_write_text(write, text)
    write.chmod(0o755)
    ui.console.print(f"wrote {write}; submit the array and its merge job with:", highlight=False)
    ui.out.print(f"bash {write}", soft_wrap=True, markup=False, highlight=False)


def default_command() -> str:
    """This installation's `speechlm-batch` (next to the running Python) when there is one, else the bare name.

    An absolute path keeps tasks on the same virtualenv even when the job's PATH lacks it.
    """
    candidate = Path(sys.executable).parent / DEFAULT_COMMAND
    return shlex.quote(str(candidate)) if candidate.is_file() else DEFAULT_COMMAND


def _check_extra(extra: list[str]) -> None:
    for arg in extra:
        name = arg.split("=", 1)[0]
        if name in _RESERVED:
            raise UsageError(
                f"{name} is set by the script for each task; do not pass it after --",
                hint="use `speechlm-batch slurm --output-dir DIR`; the chunk comes from the array index",
            )
