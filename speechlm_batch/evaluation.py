"""`eval` and `report` as library code: several datasets through one engine, scored as the leaderboard does.

`run_eval` is transcribe plus scoring, not a second pipeline: each dataset goes through `runner.run_source`
into its own subfolder (predictions, meta, done marker, report.json; resumable, `--chunk` aware), all with
one engine. Then, for a whole (unchunked) run, the output folder gets:

    MODEL_{model}_DATASET_{path}_{config}_{split}.jsonl   one per dataset, the leaderboard's manifest format
    results.json / results.md / results.html              per-dataset WER, S/D/I, CER, both RTFx; average
                                                           and composite by the leaderboard's rules

Scoring, said once: every dataset is scored by `settings.scorer` (`scoring`: "2026" by default, or
"classic") with the normalizer of its language (a multilingual set's own, else `--language`). `eval`,
`report DIR` and the leaderboard files score the same rows the same way, failed rows included as empty
hypotheses, so the three agree to the last digit.

Timing, said once: a dataset's `time_s` (and so its `rtfx`, and the `time` column of its leaderboard file,
spread evenly over its rows) is **engine time**: seconds inside the engine's generate calls on audio already
decoded, warm-up and model load excluded, which is what the leaderboard's transformers runner times.
`rtfx_end_to_end` divides the same audio by the whole loop (decode, resample, generate, write). When a run
resumed, the earlier rows were timed by an earlier run whose report was replaced: the time is extrapolated
from this run's RTFx and said so (`time_extrapolated`).

Re-scoring written files without a model (`report DIR`) is `rescoring`. Nothing here prints: the CLI
renders `EvalOutcome.payload` (the content of results.json).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm_batch import leaderboard_files as lbf
from speechlm_batch import outputs, rendering, reports, runner, sharding
from speechlm_batch.engine import Engine
from speechlm_batch.fsutil import atomic_write_text
from speechlm_batch.metrics import rtfx
from speechlm_batch.scoring import Scorer, Scoring
from speechlm_batch.settings import RunSettings
from speechlm_batch.sources import Source
from speechlm_batch.sources import leaderboard as lb
from speechlm_batch.sources.hf import default_name, open_hf

TIME_NOTE = (
    "time_s / rtfx: engine seconds (generate on pre-decoded audio; warm-up and model load excluded), as the "
    "leaderboard's transformers runner times; rtfx_end_to_end: decode + resample + generate + write. "
    "Leaderboard files spread time_s evenly over a dataset's rows."
)
RESULTS_FILES = ("results.json", "results.md", "results.html")


@dataclass(frozen=True)
class EvalTarget:
    """One dataset to evaluate and how its leaderboard file is named.

    Attributes:
        name: subfolder and row label.
        source: the rows (an `HfSource` for datasets; any `Source` works).
        dataset_path / config / split: the leaderboard file name parts (config "" when there is none).
        family: "classic", "2026", "longform", "multilingual", or None for a dataset outside the leaderboard.
        language: the set's language (its normalizer); None = the run's `--language`.
        chunked: chunk rows joined per `parent_id` before scoring (metrics.join_chunked does it for any
            rows that carry `parent_id` and `chunk_index`; this flag documents it in results.json).
    """

    name: str
    source: Source
    dataset_path: str
    config: str
    split: str
    family: str | None = None
    chunked: bool = False
    language: str | None = None

    @property
    def dropped_rows(self) -> int:
        return int(getattr(self.source, "dropped_rows", 0))

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "dataset_path": self.dataset_path,
            "config": self.config,
            "split": self.split,
            "family": self.family,
            "chunked": self.chunked,
            "language": self.language,
        }

    def scoring(self, settings: RunSettings) -> Scoring:
        return Scoring(Scorer(settings.scorer), self.language or settings.decode.language)


def targets_from_names(
    names: Sequence[str], *, mirror: Path | None = None, limit: int | None = None, language: str = "en"
) -> list[EvalTarget]:
    """Open the named leaderboard sets (groups expand; `multilingual` for `language`); fails before any engine starts."""
    return [
        EvalTarget(
            s.name, lb.open_spec(s, mirror=mirror, limit=limit), s.path, s.config, s.split, s.family, s.chunked,
            s.language,
        )
        for s in lb.expand(names, language=language)
    ]


def target_from_hf(
    path_or_id: str, config: str | None = None, split: str | None = "test", *, limit: int | None = None
) -> EvalTarget:
    """Any HF dataset or local copy (see `sources.hf.open_hf`). A local folder is named by its folder name."""
    name = default_name(path_or_id, config)
    is_local = Path(path_or_id).expanduser().exists()
    # A local path's slug is its name; "_" would end the dataset part of the leaderboard file name early.
    dataset_path = name.replace("_", "-") if is_local else str(path_or_id)
    naming = {"name": name, "path": dataset_path, "config": config or "", "split": split or "", "family": None}
    source = open_hf(path_or_id, config, split, limit=limit, name=name, identity_extra={"leaderboard": naming})
    return EvalTarget(name, source, dataset_path, config or "", split or "")


# ---------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DatasetRun:
    """One dataset's part of an eval: where its files are and what it scored."""

    target: Mapping[str, Any]  # EvalTarget.describe()
    output_dir: Path
    result: reports.DatasetResult
    timing: Mapping[str, Any]
    report: Mapping[str, Any] | None  # the run's report.json content
    leaderboard_file: Path | None
    dropped_before_inference: int
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        report = self.report or {}
        return {
            **self.target,
            "output_dir": str(self.output_dir),
            "leaderboard_file": None if self.leaderboard_file is None else str(self.leaderboard_file),
            "rows_dropped_before_inference": self.dropped_before_inference,
            **self.timing,
            "device": report.get("device"),
            "load_s": (report.get("timings") or {}).get("load_s"),
            "interrupted": self.interrupted,
            **({"serving": report["serving"]} if report.get("serving") else {}),
        }


@dataclass(frozen=True)
class EvalOutcome:
    """What `run_eval` / `rescore` did. `payload` is results.json's content (None for a chunk run)."""

    output_dir: Path
    runs: tuple[DatasetRun, ...]
    summary: reports.EvalSummary | None
    payload: Mapping[str, Any] | None
    files: tuple[Path, ...] = ()
    interrupted: bool = False
    warnings: tuple[str, ...] = ()

    @property
    def rows_failed(self) -> int:
        return sum(r.result.failed for r in self.runs)


@dataclass(frozen=True)
class EvalHooks:
    """Progress callbacks for a caller that shows progress (the CLI); all optional."""

    dataset_started: Callable[[str, int, int], None] | None = None  # name, index, count
    rows_started: Callable[[int, int], None] | None = None  # rows in this shard, rows resumed
    rows_done: Callable[[Sequence[Any]], None] | None = None  # a window of RowResult


def run_eval(
    targets: Sequence[EvalTarget],
    settings: RunSettings,
    output_dir: Path,
    *,
    model_path: str,
    model_id: str,
    engine: Engine | None = None,
    chunk: sharding.ChunkSpec | None = None,
    overwrite: bool = False,
    stop: threading.Event | None = None,
    hooks: EvalHooks = EvalHooks(),
    retry_kinds: Collection[str] | None = None,
) -> EvalOutcome:
    """Transcribe and score every target with one engine, then write the results files.

    Args:
        targets: datasets, opened already (so a missing one fails before the engine starts).
        settings: as for transcribe; the same for every dataset (leaderboard rule).
        output_dir: gets one subfolder per target, the leaderboard files and results.*.
        model_path: what the engine loads (models.store.resolve_model of `model_id`).
        model_id: the `--model` value; its "/"-to-"-" slug names the leaderboard files.
        engine: an engine already started (tests share one); else one is started here and shut down at the end.
        chunk: one shard of every dataset. Then only the subfolders are written: merge each, then `report`.
        overwrite / stop / retry_kinds: as for `runner.run_source`.
    """
    _check_names(targets)
    output_dir = Path(output_dir)
    if not overwrite:  # another input or settings in a dataset folder, or a second writer: refused before the start
        for target in targets:
            runner.check_output(target.source, settings, output_dir / target.name, model_path=model_path, chunk=chunk)
    own_engine = engine is None
    engine = engine or runner.start_engine(settings, model_path, output_dir / "logs")
    runs: list[DatasetRun] = []
    try:
        for i, target in enumerate(targets):
            if hooks.dataset_started is not None:
                hooks.dataset_started(target.name, i, len(targets))
            run = _run_one(
                target, settings, output_dir, model_path, model_id, engine, chunk, overwrite, stop, hooks, retry_kinds
            )
            runs.append(run)
            if run.interrupted:
                break
    finally:
        if own_engine:
            engine.shutdown()
    interrupted = any(r.interrupted for r in runs)
    if chunk is not None:
        return EvalOutcome(output_dir, tuple(runs), None, None, interrupted=interrupted)
    return finish(output_dir, [r for r in runs if not r.interrupted], model_id, interrupted)


def _check_names(targets: Sequence[EvalTarget]) -> None:
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        from speechlm_batch.errors import UsageError

        raise UsageError(f"two datasets share a name ({', '.join(names)}): their outputs would collide")


def _run_one(
    target, settings, output_dir, model_path, model_id, engine, chunk, overwrite, stop, hooks, retry_kinds=None
) -> DatasetRun:
    folder = output_dir / target.name
    outcome = runner.run_source(
        target.source, settings, folder, model_path=model_path, chunk=chunk, overwrite=overwrite, engine=engine,
        stop=stop, on_start=hooks.rows_started, on_rows=hooks.rows_done, retry_kinds=retry_kinds,
    )
    report = outcome.report.to_dict() if outcome.report is not None else _read_report(folder, chunk)
    rows = rows_in_order(outcome.predictions_path)
    score = reports.score_rows(rows, target.scoring(settings))
    timing = timing_from_reports([report] if report else [], score.audio_s)
    result = with_dropped(reports.DatasetResult.from_score(target.name, score, timing["time_s"]), target.dropped_rows)
    leaderboard_file = None
    if chunk is None and not outcome.interrupted:
        name = lbf.leaderboard_filename(model_id, target.dataset_path, target.config, target.split)
        leaderboard_file = output_dir / name
        lbf.write_leaderboard_manifest(leaderboard_file, rows, timing["time_s"] or 0.0)
    return DatasetRun(
        target.describe(), folder, result, timing, report, leaderboard_file, target.dropped_rows, outcome.interrupted
    )


def rows_in_order(path: Path) -> list[dict[str, Any]]:
    """Prediction rows in input order (they are written as they finish, longest first within a window)."""
    return sorted(outputs.read_predictions(path), key=lambda row: row.get("_position", 0))


def _read_report(folder: Path, chunk: sharding.ChunkSpec | None) -> dict[str, Any] | None:
    """report.json of an earlier run (a rerun of a finished dataset has nothing new to report)."""
    return outputs.read_json(folder / f"report{'.' + chunk.label if chunk else ''}.json")


def with_dropped(result: reports.DatasetResult, dropped_before: int) -> reports.DatasetResult:
    """Rows dropped before inference join those the scorer dropped: one count, as the leaderboard has."""
    return dataclasses.replace(result, dropped_refs=result.dropped_refs + dropped_before)


def timing_from_reports(report_dicts: Sequence[Mapping[str, Any]], audio_s: float) -> dict[str, Any]:
    """A dataset's timed seconds from the report.json contents of the runs that wrote its rows.

    Sums engine and loop seconds and the audio those runs timed. When the runs timed less audio than the
    dataset has (a resumed run's first part), times are scaled to all of it at the measured RTFx.

    Returns:
        time_s (engine), wall_s (end to end), rtfx_engine, rtfx_end_to_end, timed_audio_s, time_extrapolated.
    """
    loaded = [r for d in report_dicts if (r := reports.load_report(d)) is not None]
    timed_audio = sum(r.timed_audio_s for r in loaded)
    engine_s = sum(r.timings.engine_s for r in loaded)
    wall_s = sum(r.timings.wall_s for r in loaded)
    rtfx_engine, rtfx_e2e = rtfx(timed_audio, engine_s), rtfx(timed_audio, wall_s)
    scale_needed = timed_audio > 0 and abs(timed_audio - audio_s) > 1e-6 * max(audio_s, 1.0)
    return {
        "time_s": (audio_s / rtfx_engine if scale_needed else engine_s) if rtfx_engine else None,
        "wall_s": (audio_s / rtfx_e2e if scale_needed else wall_s) if rtfx_e2e else None,
        "rtfx_engine": rtfx_engine,
        "rtfx_end_to_end": rtfx_e2e,
        "timed_audio_s": timed_audio,
        "time_extrapolated": bool(scale_needed and rtfx_engine),
    }


# ---------------------------------------------------------------------------------------------- files


def finish(output_dir: Path, runs: Sequence[DatasetRun], model_id: str | None, interrupted: bool) -> EvalOutcome:
    summary = reports.summarize([r.result for r in runs])
    payload = results_payload(summary, runs, model_id)
    files = write_results(output_dir, summary, payload) if runs else ()
    warnings = tuple(f"{r.result.name}: {w}" for r in runs for w in r.result.warnings)
    return EvalOutcome(output_dir, tuple(runs), summary, payload, files, interrupted, warnings)


def results_payload(summary: reports.EvalSummary, runs: Sequence[DatasetRun], model_id: str | None) -> dict[str, Any]:
    """results.json: the summary plus, per dataset, both RTFx, load time, device and the settings used."""
    first = next((r.report for r in runs if r.report), None) or {}
    walls = [r.timing.get("wall_s") for r in runs]
    wall_total = sum(walls) if runs and all(walls) else None
    return {
        **summary.to_dict(),
        "composite_rtfx_end_to_end": rtfx(summary.audio_s, wall_total),
        "model": model_id or first.get("model"),
        "device": first.get("device"),
        "load_s": (first.get("timings") or {}).get("load_s"),
        "versions": first.get("versions"),
        "settings": first.get("settings"),
        "runs": [r.to_dict() for r in runs],
        "notes": [*summary.to_dict()["notes"], TIME_NOTE],
    }


def write_results(output_dir: Path, summary: reports.EvalSummary, payload: Mapping[str, Any]) -> tuple[Path, ...]:
    """results.json, results.md (table plus both RTFx per dataset) and results.html (chart)."""
    output_dir = Path(output_dir)
    paths = tuple(output_dir / name for name in RESULTS_FILES)
    atomic_write_text(paths[0], json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    markdown = rendering.render_results_markdown(summary, payload["runs"])
    atomic_write_text(paths[1], markdown + rendering.render_timing_markdown(payload, TIME_NOTE))
    atomic_write_text(paths[2], rendering.render_chart_html(summary, payload["runs"]))
    return paths
