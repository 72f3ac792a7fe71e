"""The sbatch script for a Slurm array run: one task per chunk, then one merge job after all of them.

The rendered file is both things at once, so users keep a single file per run:
    * `bash run.sbatch` (outside Slurm) submits itself as the array job, then the merge job with
      `--dependency=afterok:<array id>`, and prints both job ids;
    * `sbatch --array=1,3 run.sbatch` reruns just those chunks (what `speechlm-batch merge` prints when some
      are missing): each task passes `--chunk ${SLURM_ARRAY_TASK_ID}/N` explicitly, so a partial array still
      knows N (Slurm's SLURM_ARRAY_TASK_COUNT would be 2 there).

Pure text: nothing here touches the file system or Slurm; the CLI resolves paths and writes the file.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from speechlm_batch.errors import UsageError

DEFAULT_COMMAND = "speechlm-batch"


@dataclass(frozen=True)
class SbatchOptions:
    """Resources of each array task (None: the cluster's default)."""

    partition: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    mem: str | None = None  # per task, as sbatch writes it: "16G"
    time: str | None = None  # per task: "04:00:00"
    job_name: str = "speechlm-batch"
    merge_time: str = "00:30:00"
    merge_mem: str | None = None  # None: the cluster's default

    def __post_init__(self) -> None:
        if self.gpus_per_task < 0:
            raise UsageError(f"--gpus-per-task must be 0 or more, got {self.gpus_per_task}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise UsageError(f"--cpus-per-task must be at least 1, got {self.cpus_per_task}")


def render_sbatch(
    manifest: Path,
    chunks: int,
    output_dir: Path,
    *,
    options: SbatchOptions = SbatchOptions(),
    extra_args: Sequence[str] = (),
    command: str = DEFAULT_COMMAND,
) -> str:
    """The sbatch array script that transcribes `manifest` in `chunks` chunks into `output_dir`, then merges.

    Args:
        manifest: the input; written as given, so pass an absolute path (tasks may start in another folder).
        chunks: N; the array is `0-(N-1)`.
        output_dir: where every task writes, and where the Slurm logs go (`slurm-<job>_<task>.out`).
        options: resources of each task.
        extra_args: further `transcribe` options (`--model whisper-base --window 64`), shell-quoted here.
        command: how tasks call the CLI, as shell text inserted as is: "speechlm-batch" on PATH, an absolute
            path into a virtualenv (quote it with shlex.quote), or "/venv/bin/python -m speechlm_batch".

    Returns:
        The script text (bash, with `#SBATCH` lines).
    """
    if chunks < 1:
        raise UsageError(f"--chunks must be at least 1, got {chunks}")
    q = shlex.quote
    # The chunk is the one unquoted word: the task's shell expands SLURM_ARRAY_TASK_ID in it.
    chunk_arg = f'"${{SLURM_ARRAY_TASK_ID}}/{chunks}"'
    task = f"{command} transcribe {q(str(manifest))} --chunk {chunk_arg} --output-dir {q(str(output_dir))}"
    task += "".join(f" {q(arg)}" for arg in extra_args)
    lines = ["#!/bin/bash", *_directives(options, chunks, output_dir), "", _HEADER_COMMENT.format(n=chunks)]
    lines += _submit_block(options, output_dir, command)
    lines += ["", "# An array task: transcribe chunk SLURM_ARRAY_TASK_ID of N (resumes what an earlier run wrote).",
              f"exec {task}", ""]
    return "\n".join(lines)


_HEADER_COMMENT = """\
# speechlm-batch over a Slurm array of {n} chunks.
#   bash THIS_FILE                      submit the array, and a merge job that runs when every chunk is done
#   sbatch --array=1,3 THIS_FILE        rerun some chunks (killed, pre-empted); then
#   speechlm-batch merge OUTPUT_DIR     check that every row is there once and write predictions.jsonl
# A rerun resumes each chunk where it stopped; a chunk that is complete does nothing."""


def _directives(options: SbatchOptions, chunks: int, output_dir: Path) -> list[str]:
    log = Path(output_dir) / "slurm-%A_%a.out"
    pairs: list[tuple[str, str | int | None]] = [
        ("job-name", options.job_name),
        ("array", f"0-{chunks - 1}"),
        ("ntasks", 1),
        ("gpus-per-task", options.gpus_per_task or None),
        ("cpus-per-task", options.cpus_per_task),
        ("mem", options.mem),
        ("time", options.time),
        ("partition", options.partition),
        ("output", str(log)),
        # SIGTERM reaches the CLI at pre-emption / time limit: it writes the window in flight and exits 130.
        ("signal", "B:TERM@120" if options.time else None),
    ]
    # #SBATCH lines are not shell-parsed: no quoting, so values must not contain whitespace.
    for key, value in pairs:
        if value is not None and any(ch.isspace() for ch in str(value)):
            raise UsageError(f"sbatch option --{key} cannot contain whitespace: {value!r}")
    return [f"#SBATCH --{key}={value}" for key, value in pairs if value is not None]


def _submit_block(options: SbatchOptions, output_dir: Path, command: str) -> list[str]:
    q = shlex.quote
    merge_opts = [f"--job-name={q(options.job_name + '-merge')}", "--ntasks=1", f"--time={q(options.merge_time)}"]
    if options.partition:
        merge_opts.append(f"--partition={q(options.partition)}")
    if options.merge_mem:
        merge_opts.append(f"--mem={q(options.merge_mem)}")
    merge_opts.append(f"--output={q(str(Path(output_dir) / 'slurm-merge-%j.out'))}")
    # --wrap takes one string that sh parses again: quote each word for sh, then hold the whole in a variable.
    merge_cmd = f"{command} merge {q(str(output_dir))} --script "
    return [
        "set -euo pipefail",
        "",
        'if [ -z "${SLURM_ARRAY_TASK_ID:-}" ]; then',
        "  # Run with bash: submit this file as the array job, then the merge job that waits for all its tasks.",
        "  # Arguments go to sbatch (bash THIS_FILE --qos=high).",
        '  script="$(readlink -f "$0")"',
        f"  mkdir -p {q(str(output_dir))}",
        '  array_id="$(sbatch --parsable "$@" "$script")"',
        '  array_id="${array_id%%;*}"',
        f"  merge_cmd={q(merge_cmd)}\"$(printf '%q' \"$script\")\"",
        '  merge_id="$(sbatch --parsable --dependency="afterok:$array_id" --kill-on-invalid-dep=yes \\',
        f"    {' '.join(merge_opts)} --wrap=\"$merge_cmd\")\"",
        '  echo "submitted array job $array_id and merge job $merge_id (merges once every chunk succeeded)"',
        "  exit 0",
        "fi",
    ]
