"""`speechlm-batch export srt|vtt DIR`: subtitle files, one per audio file, from a run's predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speechlm_batch import subtitles
from speechlm_batch.cli import console as ui
from speechlm_batch.errors import EXIT_OK, UsageError
from speechlm_batch.subtitles import SubtitleFormat

EXAMPLES = """\
[bold]Examples[/bold]

Transcribe with timestamps, then write out/subtitles/<audio name>.srt:
  [cyan]speechlm-batch transcribe recordings/ --timestamps -o out/[/cyan]
  [cyan]speechlm-batch export srt out/[/cyan]
WebVTT into another folder, from an unmerged array run's chunks too:
  [cyan]speechlm-batch export vtt out/ -o web/captions/[/cyan]
"""


def export(
    fmt: Annotated[SubtitleFormat, typer.Argument(metavar="srt|vtt", help="Subtitle format: SubRip or WebVTT.")],
    source: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", exists=True, help="A transcribe run's --output-dir (or its predictions .jsonl file)."
        ),
    ],
    output_dir: Annotated[
        Optional[Path],
        typer.Option("--output-dir", "-o", metavar="DIR", help="Where the subtitle files go. Default: DIR/subtitles."),
    ] = None,
    audio_key: Annotated[
        str,
        typer.Option("--audio-key", metavar="KEY", help="Row field naming the audio file (as given to transcribe)."),
    ] = "audio_filepath",
) -> None:
    """Write one subtitle file per audio file. Rows of the same file (manifest `offset`s) share it; cues are the
    rows' `segments` (run transcribe with --timestamps), else one cue per row. File names come from the audio
    paths, with parent folders added where two files share a name."""
    folder = source if source.is_dir() else source.parent
    target = output_dir if output_dir is not None else folder / "subtitles"
    result = subtitles.export(source, target, fmt, audio_key)
    grouped = result.grouped
    if not result.files:
        raise UsageError(f"no transcribed rows in {source} ({grouped.rows_failed} failed)", hint="nothing to export")
    ui.console.print(
        f"wrote {len(result.files)} {fmt.value} file(s) to {target} · rows: {grouped.rows_timed} with segments, "
        f"{grouped.rows_untimed} without, {grouped.rows_failed} failed (skipped)"
    )
    if grouped.rows_untimed:
        ui.console.print("[dim]rows without segments are one cue each: transcribe with --timestamps for finer cues[/dim]")
    raise typer.Exit(EXIT_OK)
