"""`report DIR`: score files an eval (or transcribe + merge) wrote, without a model, as `eval` scores them.

Leaderboard files (`MODEL_*_DATASET_*.jsonl`) or merged `predictions.jsonl` folders are read back, each
dataset scored by the chosen scorer with its language's normalizer (the registry set's language, else the
run's `--language` from its meta file, else English), and results.* written as `evaluation` writes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm_batch import leaderboard_files as lbf
from speechlm_batch import outputs, reports
from speechlm_batch.evaluation import DatasetRun, EvalOutcome, finish, rows_in_order, timing_from_reports, with_dropped
from speechlm_batch.scoring import Scorer, Scoring
from speechlm_batch.settings import DEFAULT_LANGUAGE, DEFAULT_SCORER
from speechlm_batch.sources import leaderboard as lb


def rescore(
    directory: Path, *, prefer: str = "auto", output_dir: Path | None = None, scorer: Scorer = Scorer(DEFAULT_SCORER)
) -> EvalOutcome:
    """Score existing files without a model and write results.* into `output_dir` (default `directory`).

    Args:
        directory: searched recursively.
        prefer: "leaderboard" (MODEL_*_DATASET_*.jsonl files), "predictions" (merged predictions.jsonl per
            folder; their report*.json files give the time), or "auto": leaderboard files when there are any.
            From predictions, leaderboard files are written too when the meta file says which dataset it was.
        scorer: the scorer; each dataset's language is its registry set's, else the run's (meta), else "en".

    Raises:
        UsageError: nothing to score in `directory`.
    """
    from speechlm_batch.errors import UsageError

    directory = Path(directory)
    out = Path(output_dir) if output_dir is not None else directory
    manifests = lbf.read_leaderboard_manifests(directory) if prefer in ("auto", "leaderboard") else {}
    if manifests:
        known = _eval_datasets(directory)
        runs = [_run_from_leaderboard(name, rows, directory, known, scorer) for name, rows in manifests.items()]
        model_id = next(iter(manifests)).model
    else:
        runs = [] if prefer == "leaderboard" else _runs_from_predictions(directory, out, scorer)
        model_id = None
    if not runs:
        raise UsageError(
            f"{directory}: no leaderboard files (MODEL_*_DATASET_*.jsonl) or merged predictions.jsonl files to score",
            hint="for a --chunk run, merge each dataset folder first (speechlm-batch merge DIR/<dataset>)",
        )
    return finish(out, runs, model_id, False)


@dataclass(frozen=True)
class _KnownDataset:
    """What eval's meta files remember about a dataset that its leaderboard file does not say."""

    name: str
    rows_dropped: int
    language: str | None


def _eval_datasets(directory: Path) -> dict[tuple[str, str, str], _KnownDataset]:
    """Per (dataset slug, config, split): name, rows dropped before inference, language, from eval's meta files."""
    found: dict[tuple[str, str, str], _KnownDataset] = {}
    for path in directory.rglob("predictions*.meta.json"):
        meta = outputs.read_json(path) or {}
        identity = meta.get("input") or {}
        spec = identity.get("leaderboard") or {}
        if spec.get("path") is not None:
            key = (str(spec["path"]).replace("/", "-"), spec.get("config") or "", spec.get("split") or "")
            language = spec.get("language") or _meta_language(meta)
            found[key] = _KnownDataset(
                str(spec.get("name") or identity.get("name")), int(identity.get("rows_dropped") or 0), language
            )
    return found


def _meta_language(meta: Mapping[str, Any]) -> str | None:
    return ((meta.get("settings") or {}).get("decode") or {}).get("language")


def _run_from_leaderboard(
    name: lbf.LeaderboardName, rows: list[dict[str, Any]], directory: Path,
    known: Mapping[tuple[str, str, str], _KnownDataset], scorer: Scorer,
) -> DatasetRun:
    seen = known.get((name.dataset_path, name.config, name.split))
    label = lb.name_for(name.dataset_path, name.config, name.split) or (seen.name if seen else None)
    label = label or f"{name.dataset_path}_{name.config}_{name.split}"
    spec = lb.REGISTRY.get(label)
    language = (spec.language if spec else None) or (seen.language if seen else None) or DEFAULT_LANGUAGE
    before = seen.rows_dropped if seen else 0
    result = with_dropped(reports.result_from_leaderboard_rows(label, rows, Scoring(scorer, language)), before)
    target = {
        "dataset": label,
        "dataset_path": spec.path if spec else name.dataset_path,
        "config": name.config,
        "split": name.split,
        "family": spec.family if spec else None,
        "chunked": spec.chunked if spec else any("chunk_index" in r for r in rows),
        "language": language,
    }
    timing = {
        "time_s": result.time_s, "wall_s": None, "rtfx_engine": result.rtfx, "rtfx_end_to_end": None,
        "timed_audio_s": result.audio_s, "time_extrapolated": False,
    }
    return DatasetRun(target, directory, result, timing, None, directory / name.filename(), before)


def _runs_from_predictions(directory: Path, out: Path, scorer: Scorer) -> list[DatasetRun]:
    runs = []
    for path in sorted(directory.rglob("predictions.jsonl")):
        folder = path.parent
        rows = rows_in_order(path)
        meta = outputs.read_json(folder / "predictions.meta.json") or {}
        target = _target_from_meta(meta, folder, directory)
        score = reports.score_rows(rows, Scoring(scorer, target["language"]))
        report_dicts = _folder_reports(folder)
        timing = timing_from_reports(report_dicts, score.audio_s)
        dropped = int((meta.get("input") or {}).get("rows_dropped") or 0)
        result = with_dropped(reports.DatasetResult.from_score(target["dataset"], score, timing["time_s"]), dropped)
        leaderboard_file = _leaderboard_from_meta(meta, target, rows, timing, out)
        first = report_dicts[0] if report_dicts else None
        runs.append(DatasetRun(target, folder, result, timing, first, leaderboard_file, dropped))
    return runs


def _folder_reports(folder: Path) -> list[dict[str, Any]]:
    """report.json (a whole run, or merge's sum over chunks), else the chunk reports: never both."""
    whole = outputs.read_json(folder / "report.json")
    if whole is not None:
        return [whole]
    return [d for p in sorted(folder.glob("report.chunk-*.json")) if (d := outputs.read_json(p))]


def _target_from_meta(meta: Mapping[str, Any], folder: Path, root: Path) -> dict[str, Any]:
    spec = (meta.get("input") or {}).get("leaderboard") or {}
    fallback = folder.relative_to(root).as_posix() if folder != root else folder.name
    name = spec.get("name") or meta.get("source") or fallback
    return {
        "dataset": name,
        "dataset_path": spec.get("path"),
        "config": spec.get("config"),
        "split": spec.get("split"),
        "family": spec.get("family"),
        "chunked": bool(spec.get("chunked")),
        "language": spec.get("language") or _meta_language(meta) or DEFAULT_LANGUAGE,
    }


def _leaderboard_from_meta(meta, target, rows, timing, out: Path) -> Path | None:
    model_id = ((meta.get("settings") or {}).get("engine") or {}).get("model")
    if not model_id or target["dataset_path"] is None or target["split"] is None:
        return None
    path = out / lbf.leaderboard_filename(model_id, target["dataset_path"], target["config"] or "", target["split"])
    lbf.write_leaderboard_manifest(path, rows, timing["time_s"] or 0.0)
    return path
