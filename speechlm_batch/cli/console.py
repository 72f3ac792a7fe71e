"""Everything the terminal shows: the only module that imports rich."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
out = Console()  # tables meant for stdout (pipes, CI logs)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[audio_h]:.2f} h audio"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def _fmt(value: Any, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def run_summary(report: Mapping[str, Any], title: str) -> Table:
    """The end-of-run table from a report dict (report.json's content)."""
    rows, wer, rtfx = report["rows"], report.get("wer") or {}, report.get("rtfx") or {}
    table = Table(title=title, show_header=True, header_style="bold")
    for col in ("rows ok", "rows failed", "audio h", "WER %", "S / D / I", "ref words", "RTFx e2e", "RTFx engine", "load s"):
        table.add_column(col, justify="right")
    sdi = f"{wer['substitutions']} / {wer['deletions']} / {wer['insertions']}" if wer else "-"
    table.add_row(
        str(rows["ok"]),
        str(rows["failed"]),
        _fmt(report["audio_s"] / 3600, ".3f"),
        _fmt(wer.get("wer_percent")),
        sdi,
        str(wer.get("reference_words", "-")),
        _fmt(rtfx.get("end_to_end"), ".1f"),
        _fmt(rtfx.get("engine"), ".1f"),
        _fmt(report["timings"].get("load_s"), ".1f"),
    )
    return table


def failures_table(by_kind: Mapping[str, int]) -> Table:
    table = Table(title="Failed rows by kind", header_style="bold")
    table.add_column("error kind")
    table.add_column("rows", justify="right")
    for kind, count in sorted(by_kind.items()):
        table.add_row(kind, str(count))
    return table


def eval_results_table(payload: Mapping[str, Any], title: str) -> Table:
    """The eval / report table from results.json's content: one row per dataset, then the leaderboard lines."""
    table = Table(title=title, show_header=True, header_style="bold")
    columns = ("dataset", "rows", "dropped", "hours", "WER %", "S / D / I", "ref words", "CER %", "RTFx engine", "RTFx e2e")
    for col in columns:
        table.add_column(col, justify="left" if col == "dataset" else "right")
    runs = {run["dataset"]: run for run in payload.get("runs", [])}
    for i, d in enumerate(payload["datasets"]):
        w, run = d["wer_stats"], runs.get(d["name"], {})
        table.add_row(
            d["name"],
            str(d["rows"]),
            str(d["dropped_refs"]),
            _fmt(d["hours"], ".3f"),
            _fmt(d["wer_percent"]),
            f"{w['substitutions']} / {w['deletions']} / {w['insertions']}",
            str(w["reference_words"]),
            _fmt(d.get("cer_percent")),
            _fmt(run.get("rtfx_engine", d.get("rtfx")), ".1f"),
            _fmt(run.get("rtfx_end_to_end"), ".1f"),
            end_section=i == len(payload["datasets"]) - 1,
        )
    table.add_row(
        "[bold]average / composite[/bold]", "", "", _fmt(payload.get("audio_s", 0.0) / 3600, ".3f"),
        f"[bold]{_fmt(payload.get('average_wer_percent'))}[/bold]", "", "", "",
        _fmt(payload.get("composite_rtfx"), ".1f"), _fmt(payload.get("composite_rtfx_end_to_end"), ".1f"),
    )
    return table
