"""`speechlm-batch transcribe MANIFEST.jsonl`: predictions plus a WER / RTFx report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speechlm_batch import preflight
from speechlm_batch.cli import common
from speechlm_batch.cli.options import INPUT, OutputDirOpt, RunArgs, run_options
from speechlm_batch.errors import UsageError
from speechlm_batch.models.store import resolve_model
from speechlm_batch.sources import open_manifest
from speechlm_batch.sources.manifest import validate_manifest

EXAMPLES = """\
[bold]Examples[/bold]

Whisper base, writes outputs/predictions.jsonl and outputs/report.json:
  [cyan]speechlm-batch transcribe data.jsonl[/cyan]
Another model and output folder:
  [cyan]speechlm-batch transcribe data.jsonl -m whisper-tiny.en -o out/[/cyan]
A local Hugging Face folder, German speech:
  [cyan]speechlm-batch transcribe data.jsonl -m ~/models/whisper-small -l de[/cyan]
Shard 3 of 16 (Slurm arrays set it for you), then merge the shards:
  [cyan]speechlm-batch transcribe data.jsonl --chunk 3/16 -o out/[/cyan]
  [cyan]speechlm-batch merge out/[/cyan]

Rerunning a command resumes it. Exit codes: 0 every row ok, 1 some rows
failed (see their `error`), 2 usage error, 3 the run could not start or
finish, 130 interrupted (rerun to resume).
"""


@run_options("transcribe")
def transcribe(
    manifest: Annotated[
        Path,
        typer.Argument(
            help="NeMo-style JSONL manifest: one JSON object per line with audio_filepath (relative to the "
            "manifest's folder), optional text (the reference), offset and duration (seconds), id.",
            exists=True, dir_okay=False, show_default=False, metavar="MANIFEST",
        ),
    ],
    output_dir: OutputDirOpt = Path("outputs"),
    *,
    run: RunArgs,
) -> None:
    """Transcribe every row of a manifest (or one --chunk of it), resuming an earlier run.

    Writes OUTPUT_DIR/predictions.jsonl (every input row plus pred_text, or error) and report.json (rows, audio hours, WER when the manifest has text, RTFx, settings, versions).
    """
    if run.settings.strict:
        bad = validate_manifest(manifest)
        if bad:
            more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
            raise UsageError(f"{bad[0].error.message}{more}", hint="fix the manifest, or drop --strict to keep going")
    chunk_spec = common.resolve_chunk(run.chunk)
    model_path = resolve_model(run.settings.engine.model)
    preflight.check_run(run.settings, model_path, output_dir)  # seconds, before an engine start of minutes
    with common.run_logging(output_dir, chunk_spec, run.log_level, "transcribe") as log:
        outcome = common.run_with_progress(
            open_manifest(manifest), run.settings, output_dir, model_path=model_path, chunk=chunk_spec,
            overwrite=run.overwrite, label=manifest.name,
        )
    raise typer.Exit(common.finish(outcome, f"{manifest.name} · {run.settings.engine.model}", log))
