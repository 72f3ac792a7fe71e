"""`speechlm-batch merge OUTPUT_DIR`: join a Slurm array run's chunks into one predictions file and report.

Exit codes: 0 merged (failed rows included, with their `error`, and counted); 4 chunks missing or unfinished
(the rerun command is printed); 5 the chunks disagree (settings, input, duplicate or missing rows), which a
rerun alone will not fix.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from speechlm_batch import merge as merge_mod
from speechlm_batch import reports
from speechlm_batch.cli import console as ui
from speechlm_batch.errors import EXIT_MERGE_CONFLICT, EXIT_MERGE_INCOMPLETE, EXIT_OK
from speechlm_batch.outputs import read_json, read_predictions
from speechlm_batch.scoring import Scoring
from speechlm_batch.sharding import ChunkSpec

SCRIPT_PLACEHOLDER = "<your array script>"
EXIT_CODES = (
    "Exit codes: 0 merged (failed rows are kept with their `error` and counted), 4 chunks missing or "
    "unfinished (the command rerunning them is printed), 5 the chunks disagree (settings, input, rows twice or "
    "missing): a rerun alone will not fix it."
)


def merge(
    output_dir: Annotated[
        Path, typer.Argument(help="The folder the array tasks wrote to.", exists=True, file_okay=False)
    ],
    script: Annotated[
        Optional[Path], typer.Option("--script", help="The sbatch array script, named in the rerun command.")
    ] = None,
) -> None:
    """Check that every chunk is complete and every row is there once; write predictions.jsonl and report.json."""
    expected = _expected_rows(output_dir)
    result = merge_mod.merge(output_dir, expected_count=expected)
    if not result.ok:
        raise typer.Exit(_explain_failure(result, script))
    report = combined_report(result, output_dir)
    report_path = output_dir / "report.json"
    reports.write_report_json(report_path, report)
    report_dict = report.to_dict()
    ui.out.print(ui.run_summary(report_dict, f"{output_dir.name} · {result.chunk_count} chunks merged"))
    ui.console.print(f"predictions: {result.merged}\nreport: {report_path}")
    if result.rows_failed:
        ui.console.print(f"[yellow]{result.rows_failed} rows failed[/yellow] (their `error` says why; `--retry-failed` redoes them)")
    raise typer.Exit(EXIT_OK)


def rerun_command(array: str, script: Path | None) -> str:
    """`sbatch --array=0,3 SCRIPT`: reruns just the chunks named in `array`."""
    target = shlex.quote(str(script)) if script is not None else SCRIPT_PLACEHOLDER
    return f"sbatch --array={array} {target}"


def _explain_failure(result: merge_mod.MergeResult, script: Path | None) -> int:
    ui.console.print(f"[bold red]cannot merge[/bold red] {result.output_dir} ({result.chunk_count} chunks):")
    for problem in result.problems():
        ui.console.print(f"  - {problem}", markup=False, highlight=False)
    if not result.rerun_array:
        ui.console.print("the chunks disagree: rerun them with --overwrite, or check the folder holds one run")
        return EXIT_MERGE_CONFLICT
    ui.console.print("rerun only those chunks (each resumes where it stopped), then merge again:")
    # stdout, unwrapped: scripts and users copy this line as is.
    ui.out.print(rerun_command(result.rerun_array, script), soft_wrap=True, markup=False, highlight=False)
    return EXIT_MERGE_INCOMPLETE


def _expected_rows(output_dir: Path) -> int | None:
    """Input rows as the chunks recorded them (meta `input_rows`), when they all agree."""
    counts = set()
    for meta_path in output_dir.glob("predictions.chunk-*.meta.json"):
        meta = read_json(meta_path) or {}
        if isinstance(meta.get("input_rows"), int):
            counts.add(meta["input_rows"])
    return counts.pop() if len(counts) == 1 else None


def chunk_reports(output_dir: Path, count: int) -> list[dict[str, Any] | None]:
    """Each chunk's `report.chunk-XXXX-of-NNNN.json` (None where absent), in chunk order."""
    return [read_json(output_dir / f"report.{ChunkSpec(k, count).label}.json") for k in range(count)]


def combined_report(result: merge_mod.MergeResult, output_dir: Path) -> reports.RunReport:
    """The whole set's report: WER over the merged rows; RTFx = sum of audio / sum of time over chunks.

    Chunk reports time the rows of each chunk's last run (rows resumed from an earlier, killed run were timed
    by that run, whose report was replaced), so audio and time are summed over the same rows.
    """
    assert result.merged is not None
    found = chunk_reports(output_dir, result.chunk_count)
    present = [r for r in found if r is not None]
    missing = [k for k, r in enumerate(found) if r is None]
    first = present[0] if present else {}
    score = reports.score_rows(read_predictions(result.merged), Scoring.from_settings(first.get("settings") or {}))
    warnings = tuple(score.warnings)
    if missing:
        warnings += (f"no report for chunks {merge_mod.compress_indices(missing)}: RTFx leaves them out",)
    return reports.RunReport(
        model=str(first.get("model", "")),
        settings=dict(first.get("settings") or {}),
        versions=dict(first.get("versions") or {}),
        device=str(first.get("device", "")),
        score=dataclasses.replace(score, warnings=warnings),
        timings=_summed_timings(present),
        created=max((str(r.get("created", "")) for r in present), default=""),
        run_audio_s=sum(_timed_audio_s(r) for r in present),
        run_rows=sum(int(_rows(r).get("this_run") or 0) for r in present),
        resumed_rows=sum(int(_rows(r).get("resumed") or 0) for r in present),
    )


def _summed_timings(chunk_reports_: Sequence[Mapping[str, Any]]) -> reports.Timings:
    """Each stage summed over chunks (chunks run in parallel, so these are compute seconds, not elapsed)."""
    names = ("load_s", "warmup_s", "decode_s", "engine_s", "write_s", "wall_s")
    totals = dict.fromkeys(names, 0.0)
    for report in chunk_reports_:
        timings = report.get("timings") or {}
        for name in names:
            value = timings.get(name)
            totals[name] += float(value) if isinstance(value, (int, float)) else 0.0
    return reports.Timings(**totals)


def _timed_audio_s(report: Mapping[str, Any]) -> float:
    """Audio seconds behind a chunk report's RTFx (this run's audio, not resumed rows')."""
    loaded = reports.load_report(report)
    return loaded.timed_audio_s if loaded is not None else 0.0


def _rows(report: Mapping[str, Any]) -> Mapping[str, Any]:
    rows = report.get("rows")
    return rows if isinstance(rows, Mapping) else {}
