"""Scores and timings of runs, written as JSON, markdown, HTML and Open ASR Leaderboard manifests.

No terminal code: the CLI renders these values itself. Every file goes through `fsutil.atomic_write_text`.
Numbers are stored unrounded; `*_percent` / `*_display` fields are rounded copies for reading.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from speechlm_batch.fsutil import atomic_write_text
from speechlm_batch.metrics import (
    CHUNK_INDEX_KEY,
    CHUNK_PARENT_KEY,
    ReferenceMode,
    ScoredSet,
    WerStats,
    corpus_wer,
    join_chunked,
    leaderboard_average,
    rtfx,
)

SCORER_NOTE = (
    "WER: corpus level (sum of S+D+I over sum of reference words), jiwer alignment after Whisper's "
    "EnglishTextNormalizer on both sides (classic Open ASR Leaderboard rule; the 2026 scorer uses kaldialign "
    "with compound merging). References that normalize to empty or 'ignore time segment in scoring' are dropped."
)
FAILED_NOTE = "Failed rows have no prediction and are not scored for WER; they are counted by kind."
LEADERBOARD_FIELDS = ("audio_filepath", "duration", "time", "text", "pred_text")


def _percent(fraction: float | None) -> float | None:
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

    load_s: float
    warmup_s: float
    decode_s: float
    engine_s: float
    write_s: float
    wall_s: float


@dataclass(frozen=True)
class DatasetScore:
    """What one predictions file scores.

    Attributes:
        rows_total: every row, failed ones included.
        rows_ok: rows with a prediction.
        rows_failed_by_kind: ErrorKind value -> count ("unknown" when a failed row names none).
        rows_unscored: ok rows without a `text` reference.
        audio_s: decoded audio of ok rows (`_audio_s`, else `duration`).
        scored: WER / CER over ok rows that have a reference (chunk rows joined per parent).
        loops_collapsed: repetition loops removed by the runaway guard.
        rows_truncated: ok rows whose text the token cap cut (`_truncated`, finish_reason "length").
        warnings: chunk-joining problems (missing chunks, disagreeing references).
    """

    rows_total: int
    rows_ok: int
    rows_failed_by_kind: Mapping[str, int]
    rows_unscored: int
    audio_s: float
    scored: ScoredSet
    loops_collapsed: int = 0
    warnings: tuple[str, ...] = ()
    rows_truncated: int = 0

    @property
    def rows_failed(self) -> int:
        return sum(self.rows_failed_by_kind.values())


def _is_ok(row: Mapping[str, Any]) -> bool:
    return isinstance(row.get("pred_text"), str) and not row.get("error")


def _failure_kind(row: Mapping[str, Any]) -> str:
    error = row.get("error")
    return str(error.get("kind") or "unknown") if isinstance(error, Mapping) else "unknown"


def _row_audio_s(row: Mapping[str, Any]) -> float:
    value = row.get("_audio_s", row.get("duration"))
    return float(value) if isinstance(value, (int, float)) else 0.0


def score_rows(rows: Iterable[Mapping[str, Any]], reference: ReferenceMode = "auto") -> DatasetScore:
    """Count and score prediction (or leaderboard) rows.

    Args:
        rows: rows of a predictions JSONL (see outputs) or of a leaderboard manifest.
        reference: how chunk rows' references are joined (see `metrics.join_chunked`).

    Returns:
        Counts by outcome and the WER / CER of ok rows that carry a string `text`.
    """
    total = ok = unscored = loops = truncated = 0
    failed: Counter[str] = Counter()
    audio_s = 0.0
    scorable: list[Mapping[str, Any]] = []
    for row in rows:
        total += 1
        loops += int(row.get("_loops_collapsed") or 0)
        truncated += row.get("_truncated") is True
        if not _is_ok(row):
            failed[_failure_kind(row)] += 1
            continue
        ok += 1
        audio_s += _row_audio_s(row)
        if isinstance(row.get("text"), str):
            scorable.append(row)
        else:
            unscored += 1
    joined, warnings = join_chunked(scorable, reference)
    scored = corpus_wer([r["text"] for r in joined], [r["pred_text"] for r in joined])
    return DatasetScore(total, ok, dict(failed), unscored, audio_s, scored, loops, tuple(warnings), truncated)


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
            "rows": _rows_dict(self),
            **_score_dict(self.score.scored),
            "audio_s": self.score.audio_s,
            "loops_collapsed": self.score.loops_collapsed,
            "timings": asdict(self.timings),
            "rtfx": _rtfx_dict(self),
            "notes": [SCORER_NOTE, FAILED_NOTE, "RTFx excludes model load and warm-up."],
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
        "unscored_no_reference": score.rows_unscored,
        "truncated": score.rows_truncated,
        "dropped_refs": score.scored.dropped_refs,
        "this_run": report.run_rows,
        "resumed": report.resumed_rows,
    }


def _score_dict(scored: ScoredSet) -> dict[str, Any]:
    return {
        "wer": {**scored.words.to_dict(), "wer_percent": _percent(scored.wer)},
        "cer": {
            "char_errors": scored.char_errors,
            "reference_chars": scored.reference_chars,
            "cer": scored.cer,
            "cer_percent": _percent(scored.cer),
        },
        "mean_utterance_wer": {
            "value": scored.mean_utterance_wer,
            "percent": _percent(scored.mean_utterance_wer),
            "note": "unweighted mean of per-utterance WERs; not the leaderboard number",
        },
    }


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


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def render_summary_markdown(report: RunReport) -> str:
    """A short markdown summary of one run (results.md)."""
    s, t, w = report.score, report.timings, report.score.scored.words
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(s.rows_failed_by_kind.items())) or "none"
    mean_utt = _fmt(_percent(s.scored.mean_utterance_wer), ".2f", " %")
    lines = [
        f"# {report.model}",
        "",
        f"- created: {report.created}; device: {report.device}",
        (
            f"- rows: {s.rows_total} total, {s.rows_ok} ok, {s.rows_failed} failed ({failed}), "
            f"{s.rows_unscored} without reference, {s.scored.dropped_refs} references dropped"
        ),
        f"- audio: {s.audio_s / 3600:.3f} h",
        (
            f"- **WER {_fmt(_percent(w.wer), '.2f', ' %')}** (S {w.substitutions} / D {w.deletions} / "
            f"I {w.insertions} over {w.reference_words} reference words, {w.utterances} utterances)"
        ),
        (
            f"- CER {_fmt(_percent(s.scored.cer), '.2f', ' %')}; "
            f"mean per-utterance WER {mean_utt} (not the leaderboard number)"
        ),
        (
            f"- RTFx engine {_fmt(report.rtfx_engine, '.1f')} (audio / {t.engine_s:.2f} s in generate), "
            f"end-to-end {_fmt(report.rtfx_end_to_end, '.1f')} (audio / {t.wall_s:.2f} s loop)"
        ),
        (
            f"- timings: load {t.load_s:.2f} s, warm-up {t.warmup_s:.2f} s, decode {t.decode_s:.2f} s, "
            f"write {t.write_s:.2f} s"
        ),
    ]
    if s.loops_collapsed:
        lines.append(f"- repetition loops collapsed: {s.loops_collapsed}")
    if s.rows_truncated:
        lines.append(f"- rows cut by the token cap (`_truncated`): {s.rows_truncated}")
    lines += ["", f"_{SCORER_NOTE} {FAILED_NOTE}_"]
    lines += [f"- warning: {msg}" for msg in s.warnings]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- leaderboard


@dataclass(frozen=True)
class LeaderboardName:
    """The parts of a leaderboard manifest name. "/" became "-", so `model` / `dataset_path` are slugs."""

    model: str
    dataset_path: str
    config: str
    split: str

    def filename(self) -> str:
        return f"MODEL_{self.model}_DATASET_{self.dataset_path}_{self.config}_{self.split}.jsonl"


def leaderboard_filename(model_id: str, dataset_path: str, config: str, split: str) -> str:
    """`MODEL_{model_id / -> -}_DATASET_{dataset_path / -> -}_{config}_{split}.jsonl`, as the leaderboard writes."""
    return LeaderboardName(model_id.replace("/", "-"), dataset_path.replace("/", "-"), config, split).filename()


_NAME_RE = re.compile(r"MODEL_(?P<model>.+?)_DATASET_(?P<rest>.+)\.jsonl")


def parse_leaderboard_filename(name: str) -> LeaderboardName | None:
    """Split a manifest name back into its parts; None when it is not one.

    The dataset slug ends at the first "_" after DATASET_ and the split starts after the last "_", so a
    config may contain "_" (`ami_cleaned`) or be empty (`..._Earnings22-Cleaned-AA-chunked__test`).
    """
    match = _NAME_RE.fullmatch(Path(name).name)
    if match is None or match["rest"].count("_") < 2:
        return None
    head, split = match["rest"].rsplit("_", 1)
    dataset_path, config = head.split("_", 1)
    return LeaderboardName(match["model"], dataset_path, config, split)


def _time_for(time_per_row_s: float | Sequence[float], index: int) -> float:
    return float(time_per_row_s) if isinstance(time_per_row_s, (int, float)) else float(time_per_row_s[index])


def _leaderboard_row(row: Mapping[str, Any], index: int, time_s: float) -> dict[str, Any]:
    audio_s = row.get("_audio_s")
    duration = audio_s if isinstance(audio_s, (int, float)) and audio_s > 0 else row.get("duration")
    out = {
        "audio_filepath": row.get("audio_filepath") or row.get("_id") or f"sample_{index}",
        "duration": duration,
        "time": time_s,
        "text": row["text"],
        "pred_text": row.get("pred_text") or "",
    }
    for key in (CHUNK_PARENT_KEY, CHUNK_INDEX_KEY):
        if key in row:
            out[key] = row[key]
    return out


def write_leaderboard_manifest(
    path: Path, rows: Iterable[Mapping[str, Any]], time_per_row_s: float | Sequence[float]
) -> int:
    """Write rows in the leaderboard's manifest format: `audio_filepath, duration, time, text, pred_text`.

    `parent_id` / `chunk_index` are kept when present. Text stays raw (the scorer normalizes). Rows without
    a string `text` are skipped (nothing to score against); failed rows get `pred_text` "" so the official
    scorer counts their words as deleted. `duration` is the decoded audio (`_audio_s`) when known.

    Args:
        path: the file to write; name it with `leaderboard_filename`.
        rows: prediction rows.
        time_per_row_s: one time for every row (timed total / rows), or one per input row.

    Returns:
        The number of lines written.
    """
    lines = [
        json.dumps(_leaderboard_row(row, i, _time_for(time_per_row_s, i)), ensure_ascii=False)
        for i, row in enumerate(rows)
        if isinstance(row.get("text"), str)
    ]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def read_leaderboard_manifests(directory: Path) -> dict[LeaderboardName, list[dict[str, Any]]]:
    """Read every `MODEL_*_DATASET_*.jsonl` below `directory` (recursively, as the scorer does)."""
    found: dict[LeaderboardName, list[dict[str, Any]]] = {}
    for path in sorted(Path(directory).rglob("MODEL_*_DATASET_*.jsonl")):
        name = parse_leaderboard_filename(path.name)
        if name is None:
            continue
        with path.open(encoding="utf-8") as f:
            found[name] = [json.loads(line) for line in f if line.strip()]
    return found


# ---------------------------------------------------------------------------------------------- several datasets


@dataclass(frozen=True)
class DatasetResult:
    """One dataset's line in an eval summary. `time_s` is the timed seconds behind `rtfx`."""

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
    warnings: tuple[str, ...] = ()

    @property
    def wer(self) -> float | None:
        return self.wer_stats.wer

    @property
    def wer_percent(self) -> float | None:
        return _percent(self.wer)

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
            warnings=score.warnings,
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wer_stats"] = self.wer_stats.to_dict()
        d.update(wer=self.wer, wer_percent=self.wer_percent, cer_percent=_percent(self.cer))
        d["warnings"] = list(self.warnings)
        return d


def result_from_leaderboard_rows(name: str, rows: Sequence[Mapping[str, Any]]) -> DatasetResult:
    """Score a leaderboard manifest; time is the sum of `time` (None when any row lacks one, as upstream)."""
    times = [row.get("time") for row in rows]
    time_s = float(sum(times)) if times and all(isinstance(t, (int, float)) and t > 0 for t in times) else None
    return DatasetResult.from_score(name, score_rows(rows), time_s)


@dataclass(frozen=True)
class EvalSummary:
    """Several datasets: the leaderboard average WER and the composite RTFx (sum audio / sum time)."""

    datasets: tuple[DatasetResult, ...]
    average_wer_percent: float | None
    composite_rtfx: float | None
    audio_s: float
    time_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "datasets": [d.to_dict() for d in self.datasets],
            "average_wer_percent": self.average_wer_percent,
            "average_rule": "mean of per-dataset WER % each rounded to 2 decimals (Open ASR Leaderboard)",
            "composite_rtfx": self.composite_rtfx,
            "composite_rule": "sum of audio seconds / sum of timed seconds over all datasets",
            "audio_s": self.audio_s,
            "time_s": self.time_s,
            "notes": [SCORER_NOTE, FAILED_NOTE],
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


def write_results_json(path: Path, summary: EvalSummary) -> None:
    atomic_write_text(Path(path), json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")


def render_results_markdown(summary: EvalSummary) -> str:
    """Per-dataset table, then the average WER and composite RTFx lines."""
    lines = [
        "| dataset | rows | hours | WER % | S / D / I | ref words | CER % | mean utt. WER % | RTFx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.datasets:
        w = r.wer_stats
        lines.append(
            f"| {r.name} | {r.rows} | {r.hours:.3f} | {_fmt(r.wer_percent, '.2f')} | "
            f"{w.substitutions} / {w.deletions} / {w.insertions} | {w.reference_words} | "
            f"{_fmt(_percent(r.cer), '.2f')} | {_fmt(_percent(r.mean_utterance_wer), '.2f')} | {_fmt(r.rtfx, '.1f')} |"
        )
    lines += [
        "",
        (
            f"**Average WER: {_fmt(summary.average_wer_percent, '.2f', ' %')}** "
            "(mean of per-dataset WERs rounded to 2 decimals, leaderboard rule)"
        ),
        f"**Composite RTFx: {_fmt(summary.composite_rtfx, '.1f')}** (sum of audio / sum of timed seconds)",
        "",
        (
            "Mean utt. WER is the unweighted mean of per-utterance WERs, shown only to explain differences "
            "from tools that average that way; the leaderboard uses corpus WER."
        ),
    ]
    lines += _notes_md(summary)
    return "\n".join(lines) + "\n"


def _notes_md(summary: EvalSummary) -> list[str]:
    notes = ["", f"_{SCORER_NOTE} {FAILED_NOTE}_"]
    for r in summary.datasets:
        if r.failed or r.dropped_refs:
            notes.append(f"- {r.name}: {r.failed} failed rows, {r.dropped_refs} references dropped")
        notes += [f"- {r.name}: warning: {msg}" for msg in r.warnings]
    return notes


# ---------------------------------------------------------------------------------------------- HTML chart


def _svg_bars(title: str, labels: Sequence[str], values: Sequence[float | None], fmt: str) -> str:
    """A horizontal bar chart as inline SVG; None values are drawn as "n/a"."""
    label_w, bar_w, row_h, top = 260, 420, 26, 34
    peak = max((v for v in values if v is not None), default=0.0) or 1.0
    height = top + row_h * len(labels) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 90}" height="{height}" role="img">',
        f'<text x="4" y="20" font-weight="bold">{html.escape(title)}</text>',
    ]
    for i, (label, value) in enumerate(zip(labels, values)):
        y = top + i * row_h
        width = 0.0 if value is None else bar_w * value / peak
        text = "n/a" if value is None else format(value, fmt)
        parts += [
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{html.escape(label)}</text>',
            f'<rect x="{label_w}" y="{y + 4}" width="{width:.1f}" height="{row_h - 8}" fill="#4c78a8"/>',
            f'<text x="{label_w + width + 6:.1f}" y="{y + 16}">{text}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts)


def write_chart_html(path: Path, summary: EvalSummary) -> None:
    """A self-contained HTML page with inline SVG bar charts of WER % and RTFx per dataset (no scripts)."""
    labels = [r.name for r in summary.datasets]
    wer_chart = _svg_bars("WER % (lower is better)", labels, [r.wer_percent for r in summary.datasets], ".2f")
    rtfx_chart = _svg_bars("RTFx (higher is better)", labels, [r.rtfx for r in summary.datasets], ".1f")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>speechlm-batch results</title>
<style>body{{font-family:sans-serif;margin:2em}} svg{{display:block;margin:1em 0;font-size:13px}}</style>
</head><body>
<h1>speechlm-batch results</h1>
<p>Average WER: {_fmt(summary.average_wer_percent, ".2f", " %")} (leaderboard rule);
composite RTFx: {_fmt(summary.composite_rtfx, ".1f")} (sum of audio / sum of time).</p>
{wer_chart}
{rtfx_chart}
<p><small>{html.escape(SCORER_NOTE)}</small></p>
</body></html>
"""
    atomic_write_text(Path(path), page)
