"""What a run and an eval record: `report.json` (one run) and the per-dataset results of an eval.

Scoring is `scoring`, file formats `leaderboard_files`, markdown / HTML `rendering`. Numbers are stored
unrounded; `*_percent` / `*_display` fields are rounded copies for reading. Every file goes through
`fsutil.atomic_write_text`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from speechlm_batch.fsutil import atomic_write_text
from speechlm_batch.metrics import ScoredSet, WerStats, leaderboard_average, rtfx
from speechlm_batch.scoring import DatasetScore, Scoring, note, score_rows

__all__ = [
    "DatasetResult", "DatasetScore", "EvalSummary", "ReportFile", "RunReport", "Timings", "load_report",
    "percent", "score_rows", "summarize", "write_report_json",
]
RTFX_NOTE = "RTFx excludes model load and warm-up."


def percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(100 * fraction, 2)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


# ---------------------------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class Timings:
    """Seconds spent per stage of one run.

    Attributes:
        load_s: starting the engine and loading the model.
        warmup_s: warm-up requests, excluded from every RTFx.
        decode_s: reading and resampling audio, summed over decode threads (overlaps the engine).
        engine_s: time inside the engine's generate calls on already decoded audio.
        write_s: writing prediction rows.
        wall_s: the whole transcription loop (decode, resample, generate, write); load excluded.
    """

    load_s: float = 0.0
    warmup_s: float = 0.0
    decode_s: float = 0.0
    engine_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0


@dataclass(frozen=True)
class RunReport:
    """Everything `report.json` records about one run.

    RTFx uses the audio decoded in this run (`run_audio_s`; resumed rows were timed by an earlier run),
    falling back to the score's audio when the run did not say.
    """

    model: str
    settings: Mapping[str, Any]
    versions: Mapping[str, Any]  # speechlm-batch, vllm, torch, transformers, python
    device: str
    score: DatasetScore
    timings: Timings
    created: str  # ISO 8601
    run_audio_s: float | None = None
    run_rows: int | None = None
    resumed_rows: int = 0
    serving: Mapping[str, Any] | None = None  # server mode: latency, requests/s (server_engine.serving_stats)

    @property
    def timed_audio_s(self) -> float:
        return self.score.audio_s if self.run_audio_s is None else self.run_audio_s

    @property
    def rtfx_engine(self) -> float | None:
        """Audio seconds per second inside the engine's generate calls (pre-decoded audio)."""
        return rtfx(self.timed_audio_s, self.timings.engine_s)

    @property
    def rtfx_end_to_end(self) -> float | None:
        """Audio seconds per second of the whole transcription loop (decode, generate, write; load excluded)."""
        return rtfx(self.timed_audio_s, self.timings.wall_s)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: unrounded values, plus rounded `*_percent` / `*_display` copies."""
        return {
            "model": self.model,
            "created": self.created,
            "device": self.device,
            "versions": dict(self.versions),
            "settings": dict(self.settings),
            "scoring": self.score.scoring.describe(),
            "rows": _rows_dict(self),
            **score_dict(self.score.scored),
            "ok_rows_only": _ok_only_dict(self.score),
            "audio_s": self.score.audio_s,
            "loops_collapsed": self.score.loops_collapsed,
            "timings": asdict(self.timings),
            "rtfx": _rtfx_dict(self),
            "notes": [note(self.score.scoring), RTFX_NOTE],
            "warnings": list(self.score.warnings),
            **({"serving": dict(self.serving)} if self.serving is not None else {}),
        }


def _rows_dict(report: RunReport) -> dict[str, Any]:
    score = report.score
    return {
        "total": score.rows_total,
        "ok": score.rows_ok,
        "failed": score.rows_failed,
        "failed_by_kind": dict(score.rows_failed_by_kind),
        "failed_scored_as_empty": score.failed_scored,
        "unscored_no_reference": score.rows_unscored,
        "truncated": score.rows_truncated,
        "dropped_refs": score.scored.dropped_refs,
        "this_run": report.run_rows,
        "resumed": report.resumed_rows,
    }


def score_dict(scored: ScoredSet) -> dict[str, Any]:
    return {
        "wer": {**scored.words.to_dict(), "wer_percent": percent(scored.wer)},
        "cer": {
            "char_errors": scored.char_errors,
            "reference_chars": scored.reference_chars,
            "cer": scored.cer,
            "cer_percent": percent(scored.cer),
        },
        "mean_utterance_wer": {
            "value": scored.mean_utterance_wer,
            "percent": percent(scored.mean_utterance_wer),
            "note": "unweighted mean of per-utterance WERs; not the leaderboard number",
        },
    }


def _ok_only_dict(score: DatasetScore) -> dict[str, Any]:
    words = score.scored_ok_only.words
    return {"wer": words.wer, "wer_percent": percent(words.wer), "wer_stats": words.to_dict()}


def _rtfx_dict(report: RunReport) -> dict[str, Any]:
    return {
        "audio_s": report.timed_audio_s,
        "engine": report.rtfx_engine,
        "end_to_end": report.rtfx_end_to_end,
        "engine_display": _round(report.rtfx_engine, 1),
        "end_to_end_display": _round(report.rtfx_end_to_end, 1),
    }


def write_report_json(path: Path, report: RunReport) -> None:
    """Write `report.to_dict()` as indented UTF-8 JSON."""
    atomic_write_text(Path(path), json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class ReportFile:
    """The parts of a `report.json` that other steps read back (merge, eval, report DIR)."""

    model: str = ""
    created: str = ""
    device: str = ""
    versions: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    timings: Timings = Timings()
    timed_audio_s: float = 0.0  # audio behind this run's RTFx (resumed rows excluded)
    rows_this_run: int = 0
    rows_resumed: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict)

    @property
    def language(self) -> str | None:
        return (self.settings.get("decode") or {}).get("language")


def load_report(data: Mapping[str, Any] | None) -> ReportFile | None:
    """A `report.json`'s content (as `outputs.read_json` returns it) as a `ReportFile`; None stays None."""
    if data is None:
        return None
    timings = data.get("timings") or {}
    known = {name: float(timings.get(name) or 0.0) for name in Timings.__dataclass_fields__}
    rows = data.get("rows") if isinstance(data.get("rows"), Mapping) else {}
    return ReportFile(
        model=str(data.get("model") or ""),
        created=str(data.get("created") or ""),
        device=str(data.get("device") or ""),
        versions=dict(data.get("versions") or {}),
        settings=dict(data.get("settings") or {}),
        timings=Timings(**known),
        timed_audio_s=float((data.get("rtfx") or {}).get("audio_s") or 0.0),
        rows_this_run=int(rows.get("this_run") or 0),
        rows_resumed=int(rows.get("resumed") or 0),
        raw=dict(data),
    )


# ---------------------------------------------------------------------------------------------- several datasets


@dataclass(frozen=True)
class DatasetResult:
    """One dataset's line in an eval summary. `time_s` is the timed seconds behind `rtfx`.

    `wer_stats` counts failed rows as empty hypotheses (the leaderboard's number); `wer_ok_only` leaves
    them out, so a reader sees how much of the WER is failures.
    """

    name: str
    rows: int
    hours: float
    wer_stats: WerStats
    cer: float | None
    mean_utterance_wer: float | None
    audio_s: float
    time_s: float | None
    rtfx: float | None
    dropped_refs: int
    failed: int
    failed_scored: int = 0
    wer_ok_only: float | None = None
    scoring: Scoring = field(default_factory=Scoring)
    warnings: tuple[str, ...] = ()

    @property
    def wer(self) -> float | None:
        return self.wer_stats.wer

    @property
    def wer_percent(self) -> float | None:
        return percent(self.wer)

    @classmethod
    def from_score(cls, name: str, score: DatasetScore, time_s: float | None) -> DatasetResult:
        s = score.scored
        return cls(
            name=name,
            rows=score.rows_total,
            hours=score.audio_s / 3600,
            wer_stats=s.words,
            cer=s.cer,
            mean_utterance_wer=s.mean_utterance_wer,
            audio_s=score.audio_s,
            time_s=time_s,
            rtfx=rtfx(score.audio_s, time_s),
            dropped_refs=s.dropped_refs,
            failed=score.rows_failed,
            failed_scored=score.failed_scored,
            wer_ok_only=score.scored_ok_only.wer,
            scoring=score.scoring,
            warnings=score.warnings,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wer_stats"] = self.wer_stats.to_dict()
        d["scoring"] = self.scoring.describe()
        d.update(
            wer=self.wer, wer_percent=self.wer_percent, cer_percent=percent(self.cer),
            wer_ok_only_percent=percent(self.wer_ok_only),
        )
        d["warnings"] = list(self.warnings)
        return d


def result_from_leaderboard_rows(name: str, rows: Sequence[Mapping[str, Any]], scoring: Scoring) -> DatasetResult:
    """Score a leaderboard manifest; time is the sum of `time` (None when any row lacks one, as upstream)."""
    times = [row.get("time") for row in rows]
    time_s = float(sum(times)) if times and all(isinstance(t, (int, float)) and t > 0 for t in times) else None
    return DatasetResult.from_score(name, score_rows(rows, scoring), time_s)


@dataclass(frozen=True)
class EvalSummary:
    """Several datasets: the leaderboard average WER and the composite RTFx (sum audio / sum time)."""

    datasets: tuple[DatasetResult, ...]
    average_wer_percent: float | None
    composite_rtfx: float | None
    audio_s: float
    time_s: float | None

    @property
    def scorings(self) -> list[Scoring]:
        return list(dict.fromkeys(d.scoring for d in self.datasets))

    def to_dict(self) -> dict[str, Any]:
        return {
            "scorer": ", ".join(dict.fromkeys(s.scorer.value for s in self.scorings)) or None,
            "scoring": [s.describe() for s in self.scorings],
            "datasets": [d.to_dict() for d in self.datasets],
            "average_wer_percent": self.average_wer_percent,
            "average_rule": "mean of per-dataset WER % each rounded to 2 decimals (Open ASR Leaderboard)",
            "composite_rtfx": self.composite_rtfx,
            "composite_rule": "sum of audio seconds / sum of timed seconds over all datasets",
            "audio_s": self.audio_s,
            "time_s": self.time_s,
            "notes": [note(s) for s in self.scorings],
        }


def summarize(results: Sequence[DatasetResult]) -> EvalSummary:
    """Average WER by the leaderboard rule; composite RTFx only when every dataset was timed."""
    wers = [r.wer_percent for r in results if r.wer_percent is not None]
    audio_s = sum(r.audio_s for r in results)
    timed = bool(results) and all(r.time_s for r in results)
    time_s = sum(r.time_s for r in results if r.time_s) if timed else None
    return EvalSummary(
        tuple(results), leaderboard_average(wers) if wers else None, rtfx(audio_s, time_s), audio_s, time_s
    )
