"""`speechlm-batch transcribe MANIFEST.jsonl`: predictions plus a WER / RTFx report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speechlm_batch import preflight
from speechlm_batch.cli import common
from speechlm_batch.cli.options import INPUT, OutputDirOpt, RunArgs, run_options
from speechlm_batch.errors import EXIT_CODES_HELP, UsageError
from speechlm_batch.errors import UsageError
from speechlm_batch.sources import ManifestSource, open_input
from speechlm_batch.sources.manifest import validate_manifest

EXAMPLES = """\
[bold]Examples[/bold]

Whisper base, writes outputs/predictions.jsonl and outputs/report.json:
  [cyan]speechlm-batch transcribe data.jsonl[/cyan]
Another model and output folder:
  [cyan]speechlm-batch transcribe data.jsonl -m whisper-tiny.en -o out/[/cyan]
A folder of audio files (recursive), or a list of paths, no WER:
  [cyan]speechlm-batch transcribe recordings/ -o out/[/cyan]
A manifest with other field names, read from standard input:
  [cyan]cat m.jsonl | speechlm-batch transcribe - --audio-key path --text-key sentence[/cyan]
Timed segments per row, then one subtitle file per audio file:
  [cyan]speechlm-batch transcribe recordings/ --timestamps -o out/[/cyan]
  [cyan]speechlm-batch export srt out/[/cyan]
A local Hugging Face folder, German speech:
  [cyan]speechlm-batch transcribe data.jsonl -m ~/models/whisper-small -l de[/cyan]
Shard 3 of 16 (Slurm arrays set it for you), then merge the shards:
  [cyan]speechlm-batch transcribe data.jsonl --chunk 3/16 -o out/[/cyan]
  [cyan]speechlm-batch merge out/[/cyan]

Rerunning a command resumes it; --retry-failed redoes the rows that failed.

""" + EXIT_CODES_HELP + "\n"


@run_options("transcribe")
def transcribe(
    input_spec: Annotated[
        str,
        typer.Argument(
            help="What to transcribe: a NeMo-style JSONL manifest (audio_filepath relative to its folder, optional "
            "text, offset and duration in seconds, id), a folder (audio files found recursively by extension), a "
            "text file with one audio path per line, or - for a manifest on standard input. No text: no WER.",
            show_default=False, metavar="INPUT",
        ),
    ],
    output_dir: OutputDirOpt = Path("outputs"),
    *,
    run: RunArgs,
) -> None:
    """Transcribe every row of a manifest, folder or list of files (or one --chunk of it), resuming an earlier run.

    Writes OUTPUT_DIR/predictions.jsonl (every input row plus pred_text, or error) and report.json (rows, audio hours, WER when the input has text, RTFx, settings, versions).
    """
    keys = (run.values["audio_key"], run.values["text_key"])
    chunk_spec = common.resolve_chunk(run.chunk)
    retry = common.retry_kinds(run)
    model_path = common.run_model(run.settings)
    preflight.check_run(run.settings, model_path, output_dir)  # seconds, before an engine start of minutes
    source = open_input(input_spec, keys, stdin_copy=output_dir / "stdin.jsonl")
    if run.settings.strict and isinstance(source, ManifestSource):
        bad = validate_manifest(source.path, keys)
        if bad:
            more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
            raise UsageError(f"{bad[0].error.message}{more}", hint="fix the manifest, or drop --strict to keep going")
    label = "stdin" if input_spec == "-" else Path(input_spec).name
    with common.run_logging(output_dir, chunk_spec, run.log_level, "transcribe") as log:
        outcome = common.run_with_progress(
            source, run.settings, output_dir, model_path=model_path, chunk=chunk_spec,
            overwrite=run.overwrite, label=label, retry=retry,
        )
    raise typer.Exit(common.finish(outcome, f"{label} · {run.settings.engine.model}", log))
