"""`speechlm-batch eval`: Open ASR Leaderboard sets or any HF dataset, one engine, scored as the board scores.

Exit codes as transcribe (errors.py): 0 complete (failed rows are scored without them and counted), 2 usage,
3 a dataset or the model is not available, 130 interrupted (rerun to resume).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speechlm_batch import evaluation, preflight
from speechlm_batch.cli import common
from speechlm_batch.cli import console as ui
from speechlm_batch.cli.options import INPUT, OutputDirOpt, RunArgs, run_options
from speechlm_batch.errors import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_OK, UsageError
from speechlm_batch.sources.leaderboard import GROUPS, REGISTRY, expand

DatasetOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--dataset",
        "-d",
        help=(
            "Named Open ASR Leaderboard set or group (repeatable). Groups: 'all' = the 2026 public English set "
            "(7 sets, hf-audio/open-asr-leaderboard + chunked Earnings22); 'all-classic' = the 2024-2026 eight; "
            "'longform'; 'multilingual' = FLEURS / MCV / MLS of --language (de, fr, it, es, pt). Sets: "
            + ", ".join(REGISTRY)
            + "."
        ),
        rich_help_panel=INPUT,
    ),
]
HfDatasetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--hf-dataset",
        help="Any dataset instead: hub id (from the HF cache offline), save_to_disk folder, parquet file or "
        "folder, or audio folder with metadata.csv / metadata.jsonl.",
        rich_help_panel=INPUT,
    ),
]
ConfigOpt = Annotated[
    Optional[str], typer.Option("--config", help="Dataset config (with --hf-dataset).", rich_help_panel=INPUT)
]
SplitOpt = Annotated[str, typer.Option("--split", help="Split (with --hf-dataset).", rich_help_panel=INPUT)]
LimitOpt = Annotated[
    Optional[int],
    typer.Option("--limit", min=1, help="At most N rows per dataset: a quick look. Default: all.", rich_help_panel=INPUT),
]
DatasetsDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--datasets-dir",
        envvar="SPEECHLM_BATCH_DATASETS",
        help="Local copies of named sets as <path>/<config>/<split> (save_to_disk, parquet or audio folder). "
        "Default: the HF cache.",
        rich_help_panel=INPUT,
    ),
]


EXAMPLES = """\
[bold]Examples[/bold]

Two named leaderboard sets with Whisper base:
  [cyan]speechlm-batch eval -d librispeech_clean_2026 -d ami_cleaned -m whisper-base -o eval/[/cyan]
The 2026 public English set from a local mirror (scorer 2026, the default):
  [cyan]speechlm-batch eval -d all --datasets-dir /data/asr[/cyan]
The classic eight, scored the classic way:
  [cyan]speechlm-batch eval -d all-classic --scorer classic[/cyan]
The German multilingual sets (German normalizer):
  [cyan]speechlm-batch eval -d multilingual -l de -m whisper-small[/cyan]
Any dataset, its first 200 rows:
  [cyan]speechlm-batch eval --hf-dataset ./my_set --split test --limit 200[/cyan]
Re-score the written files later, without a model:
  [cyan]speechlm-batch report eval/[/cyan]

Writes per dataset a leaderboard file MODEL_*_DATASET_*.jsonl, then
results.json, results.md and results.html.

""" + EXIT_CODES_HELP + "\n"


@run_options("eval")
def eval_command(
    dataset: DatasetOpt = None,
    hf_dataset: HfDatasetOpt = None,
    config: ConfigOpt = None,
    split: SplitOpt = "test",
    limit: LimitOpt = None,
    datasets_dir: DatasetsDirOpt = None,
    output_dir: OutputDirOpt = Path("eval"),
    *,
    run: RunArgs,
) -> None:
    """Transcribe and score leaderboard sets or an HF dataset; write leaderboard files and results.*."""
    settings, model = run.settings, run.settings.engine.model
    chunk_spec = common.resolve_chunk(run.chunk)
    retry = common.retry_kinds(run)
    language = settings.decode.language
    targets = _targets(dataset, hf_dataset, config, split, limit, datasets_dir, language)  # before the model loads
    model_path = common.run_model(settings)
    preflight.check_run(settings, model_path, output_dir)  # seconds, before an engine start of minutes
    with common.run_logging(output_dir, chunk_spec, run.log_level, "eval") as log:
        outcome = _run(targets, settings, output_dir, model_path, model, chunk_spec, run.overwrite, retry)
    code = _finish(outcome, model, output_dir)
    ui.console.print(common.log_note(log), highlight=False)
    raise typer.Exit(code)


def _targets(dataset, hf_dataset, config, split, limit, datasets_dir, language) -> list[evaluation.EvalTarget]:
    if bool(dataset) == bool(hf_dataset):
        groups = " / ".join(f"--dataset {g}" for g in GROUPS if "-" not in g or g == "all-classic")
        raise UsageError(f"give either --dataset NAME (or {groups}) or --hf-dataset ID_OR_PATH, not both or neither")
    if hf_dataset:
        return [evaluation.target_from_hf(hf_dataset, config, split, limit=limit)]
    _check_languages(dataset, language)
    return evaluation.targets_from_names(dataset, mirror=datasets_dir, limit=limit, language=language)


def _check_languages(names: list[str], language: str) -> None:
    """One --language per run: the model is asked for it and the normalizer follows the set's language."""
    other = sorted({s.name for s in expand(names, language=language) if s.language != language})
    if other:
        raise UsageError(
            f"{', '.join(other)} are not in --language {language}",
            hint="run each language separately, e.g. -d multilingual-de -l de",
        )


def _run(targets, settings, output_dir, model_path, model, chunk_spec, overwrite, retry) -> evaluation.EvalOutcome:
    stop = common.install_stop_handlers()
    with ui.progress() as bar:
        current: dict[str, int] = {}

        def dataset_started(name: str, index: int, count: int) -> None:
            current["task"] = bar.add_task(f"{name} ({index + 1}/{count})", total=None, audio_s=0.0)

        def rows_started(total: int, resumed: int) -> None:
            bar.update(current["task"], total=total, completed=resumed)

        def rows_done(rows) -> None:
            ui.add_rows(bar, current["task"], rows)

        hooks = evaluation.EvalHooks(dataset_started, rows_started, rows_done)
        return evaluation.run_eval(
            targets, settings, output_dir, model_path=model_path, model_id=model, chunk=chunk_spec,
            overwrite=overwrite, stop=stop, hooks=hooks, retry_kinds=retry,
        )


def _finish(outcome: evaluation.EvalOutcome, model: str, output_dir: Path) -> int:
    if outcome.payload is None:  # a --chunk run: results need every chunk
        names = " ".join(str(r.output_dir) for r in outcome.runs)
        ui.console.print(
            "chunk done. When every chunk has finished: `speechlm-batch merge` each of "
            f"{names}, then `speechlm-batch report {output_dir}`"
        )
    else:
        show_results(outcome, f"{model} · {output_dir}")
    if outcome.interrupted:
        ui.console.print("[yellow]interrupted: rerun the same command to resume where it stopped[/yellow]")
        return EXIT_INTERRUPTED
    return EXIT_OK  # failed rows are counted in the results


def show_results(outcome: evaluation.EvalOutcome, title: str) -> None:
    """The results table, then where the files are and any scoring warnings (also used by `report`)."""
    for table in ui.eval_results_tables(outcome.payload, title):
        ui.out.print(table)
    for run in outcome.runs:
        if run.leaderboard_file is not None:
            ui.console.print(f"[dim]leaderboard file:[/dim] {run.leaderboard_file}")
    ui.console.print("results: " + ", ".join(str(p) for p in outcome.files))
    for warning in outcome.warnings:
        ui.console.print(f"[yellow]warning:[/yellow] {warning}")
