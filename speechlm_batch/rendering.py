"""Markdown and HTML (inline SVG) views of run reports and eval results. Pure text, no I/O, no terminal code."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from speechlm_batch.reports import EvalSummary, RunReport, percent
from speechlm_batch.scoring import note


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def render_summary_markdown(report: RunReport) -> str:
    """A short markdown summary of one run."""
    s, t, w = report.score, report.timings, report.score.scored.words
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(s.rows_failed_by_kind.items())) or "none"
    mean_utt = fmt(percent(s.scored.mean_utterance_wer), ".2f", " %")
    lines = [
        f"# {report.model}",
        "",
        f"- created: {report.created}; device: {report.device}; scorer: {s.scoring.scorer.value}",
        (
            f"- rows: {s.rows_total} total, {s.rows_ok} ok, {s.rows_failed} failed ({failed}), "
            f"{s.rows_unscored} without reference, {s.scored.dropped_refs} references dropped"
        ),
        f"- audio: {s.audio_s / 3600:.3f} h",
        (
            f"- **WER {fmt(percent(w.wer), '.2f', ' %')}** (S {w.substitutions} / D {w.deletions} / "
            f"I {w.insertions} over {w.reference_words} reference words, {w.utterances} utterances)"
        ),
        (
            f"- CER {fmt(percent(s.scored.cer), '.2f', ' %')}; "
            f"mean per-utterance WER {mean_utt} (not the leaderboard number)"
        ),
        (
            f"- RTFx engine {fmt(report.rtfx_engine, '.1f')} (audio / {t.engine_s:.2f} s in generate), "
            f"end-to-end {fmt(report.rtfx_end_to_end, '.1f')} (audio / {t.wall_s:.2f} s loop)"
        ),
        (
            f"- timings: load {t.load_s:.2f} s, warm-up {t.warmup_s:.2f} s, decode {t.decode_s:.2f} s, "
            f"write {t.write_s:.2f} s"
        ),
    ]
    if s.failed_scored:
        ok_only = fmt(percent(s.scored_ok_only.wer), ".2f", " %")
        lines.append(f"- {s.failed_scored} failed rows scored as empty; WER over ok rows only: {ok_only}")
    if s.loops_collapsed:
        lines.append(f"- repetition loops collapsed: {s.loops_collapsed}")
    if s.rows_truncated:
        lines.append(f"- rows cut by the token cap (`_truncated`): {s.rows_truncated}")
    lines += ["", f"_{note(s.scoring)}_"]
    lines += [f"- warning: {msg}" for msg in s.warnings]
    return "\n".join(lines) + "\n"


def render_results_markdown(summary: EvalSummary, runs: Sequence[Mapping[str, Any]] = ()) -> str:
    """Per-dataset table (WER, both RTFx), the average WER and composite RTFx, the scorer, then notes.

    Args:
        summary: the scored datasets.
        runs: results.json's `runs` entries (end-to-end RTFx per dataset); without them that column is n/a.
    """
    end_to_end = {r.get("dataset"): r.get("rtfx_end_to_end") for r in runs}
    lines = [
        f"Scorer: **{summary.to_dict()['scorer']}**",
        "",
        "| dataset | rows | failed | hours | WER % | S / D / I | ref words | WER ok rows % | CER % "
        "| RTFx engine | RTFx end-to-end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary.datasets:
        w = r.wer_stats
        lines.append(
            f"| {r.name} | {r.rows} | {r.failed} | {r.hours:.3f} | {fmt(r.wer_percent, '.2f')} | "
            f"{w.substitutions} / {w.deletions} / {w.insertions} | {w.reference_words} | "
            f"{fmt(percent(r.wer_ok_only), '.2f')} | {fmt(percent(r.cer), '.2f')} | {fmt(r.rtfx, '.1f')} | "
            f"{fmt(end_to_end.get(r.name), '.1f')} |"
        )
    lines += [
        "",
        (
            f"**Average WER: {fmt(summary.average_wer_percent, '.2f', ' %')}** "
            "(mean of per-dataset WERs rounded to 2 decimals, leaderboard rule)"
        ),
        f"**Composite RTFx: {fmt(summary.composite_rtfx, '.1f')}** (sum of audio / sum of timed seconds)",
        "",
        "WER counts failed rows as empty hypotheses, as the leaderboard does; 'WER ok rows' leaves them out.",
    ]
    lines += _notes_md(summary)
    return "\n".join(lines) + "\n"


def _notes_md(summary: EvalSummary) -> list[str]:
    notes = [""] + [f"_{text}_" for text in summary.to_dict()["notes"]]
    for r in summary.datasets:
        if r.failed or r.dropped_refs:
            notes.append(f"- {r.name}: {r.failed} failed rows, {r.dropped_refs} references dropped")
        notes += [f"- {r.name}: warning: {msg}" for msg in r.warnings]
    return notes


def render_timing_markdown(payload: Mapping[str, Any], time_note: str) -> str:
    """Model, device, load time, then per dataset the engine and end-to-end seconds and RTFx."""
    lines = [
        "",
        f"Model: {payload.get('model')}; device: {payload.get('device')}; load {fmt(payload.get('load_s'), '.1f')} s",
        "",
        "| dataset | rows dropped before inference | engine s | RTFx engine | end-to-end s | RTFx end-to-end |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in payload["runs"]:
        lines.append(
            f"| {run['dataset']} | {run['rows_dropped_before_inference']} | {fmt(run['time_s'], '.2f')} | "
            f"{fmt(run['rtfx_engine'], '.1f')} | {fmt(run['wall_s'], '.2f')} | {fmt(run['rtfx_end_to_end'], '.1f')} |"
        )
    lines += ["", f"_{time_note}_"]
    return "\n".join(lines) + "\n"


def _svg_bars(title: str, labels: Sequence[str], values: Sequence[float | None], spec: str) -> str:
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
        parts += [
            f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{html.escape(label)}</text>',
            f'<rect x="{label_w}" y="{y + 4}" width="{width:.1f}" height="{row_h - 8}" fill="#4c78a8"/>',
            f'<text x="{label_w + width + 6:.1f}" y="{y + 16}">{fmt(value, spec)}</text>',
        ]
    parts.append("</svg>")
    return "\n".join(parts)


def render_chart_html(summary: EvalSummary, runs: Sequence[Mapping[str, Any]] = ()) -> str:
    """A self-contained HTML page: bar charts of WER % and both RTFx per dataset (no scripts)."""
    labels = [r.name for r in summary.datasets]
    end_to_end = {r.get("dataset"): r.get("rtfx_end_to_end") for r in runs}
    charts = [
        _svg_bars("WER % (lower is better)", labels, [r.wer_percent for r in summary.datasets], ".2f"),
        _svg_bars("RTFx, engine (higher is better)", labels, [r.rtfx for r in summary.datasets], ".1f"),
    ]
    if runs:
        charts.append(_svg_bars("RTFx, end to end", labels, [end_to_end.get(n) for n in labels], ".1f"))
    notes = "".join(f"<p><small>{html.escape(text)}</small></p>" for text in summary.to_dict()["notes"])
    chart_html = "\n".join(charts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>speechlm-batch results</title>
<style>body{{font-family:sans-serif;margin:2em}} svg{{display:block;margin:1em 0;font-size:13px}}</style>
</head><body>
<h1>speechlm-batch results</h1>
<p>Scorer: {html.escape(str(summary.to_dict()["scorer"]))}. Average WER: {fmt(summary.average_wer_percent, ".2f", " %")}
(leaderboard rule); composite RTFx: {fmt(summary.composite_rtfx, ".1f")} (sum of audio / sum of time).</p>
{chart_html}
{notes}
</body></html>
"""
