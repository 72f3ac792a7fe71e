"""`speechlm-batch report DIR`: re-score existing leaderboard files or predictions without a model."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from speechlm_batch import rescoring
from speechlm_batch.cli.eval import show_results
from speechlm_batch.cli.options import RunArgs, run_options
from speechlm_batch.errors import EXIT_OK
from speechlm_batch.scoring import Scorer


class ScoreFrom(StrEnum):
    auto = "auto"
    leaderboard = "leaderboard"
    predictions = "predictions"


@run_options("report")
def report(
    directory: Annotated[Path, typer.Argument(help="Folder searched recursively.", exists=True, file_okay=False)],
    score_from: Annotated[
        ScoreFrom,
        typer.Option(
            "--from",
            help="leaderboard: MODEL_*_DATASET_*.jsonl files; predictions: merged predictions.jsonl per folder "
            "(time from their report*.json); auto: leaderboard files when there are any.",
        ),
    ] = ScoreFrom.auto,
    output_dir: Annotated[
        Optional[Path], typer.Option("--output-dir", "-o", help="Where results.* go (default: DIR).")
    ] = None,
    *,
    run: RunArgs,
) -> None:
    """Write results.json / results.md / results.html for DIR and print the table (leaderboard rules)."""
    scorer = Scorer(run.settings.scorer)
    outcome = rescoring.rescore(directory, prefer=score_from.value, output_dir=output_dir, scorer=scorer)
    show_results(outcome, f"{directory} · re-scored from {score_from.value} · scorer {scorer.value}")
    raise typer.Exit(EXIT_OK)
