"""Everything the terminal shows: the only module that imports rich.

Tables are laid out to stay whole at 80 columns (tests render them at that width and look for cut cells):
the run summary is a two-column table of measures, and the eval results are two narrow tables (accuracy,
then errors and speed) rather than one wide one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)
out = Console()  # tables meant for stdout (pipes, CI logs)


class AudioColumn(ProgressColumn):
    """Hours of audio done and the live real-time factor.

    RTFx counts from the first finished window (so model load and warm-up stay out): the audio finished
    since then over the wall time since then; "-" until a second window is in.
    """

    def render(self, task: Task) -> Text:
        audio_s = task.fields.get("audio_s", 0.0)
        first_at, first_audio_s = task.fields.get("first_at"), task.fields.get("first_audio_s", 0.0)
        now = task.get_time()
        window_s = now - first_at if first_at is not None else 0.0
        rtfx = f"{(audio_s - first_audio_s) / window_s:.1f}x" if window_s > 0 and audio_s > first_audio_s else "-"
        return Text(f"{audio_s / 3600:.2f} h · RTFx {rtfx}", style="progress.data.speed")


def progress(target: Console | None = None) -> Progress:
    """rows done / total, audio hours, live RTFx, elapsed, ETA: about 75 columns with a short label."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=16),
        MofNCompleteColumn(),
        AudioColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=target or console,
        transient=False,
    )


def add_rows(bar: Progress, task: Any, rows: Sequence[Any]) -> None:
    """Advance a task by finished rows (RowResult) and add their audio."""
    fields = bar.tasks[task].fields
    audio_s = fields.get("audio_s", 0.0) + sum(r.audio_s for r in rows)
    if "first_at" not in fields:
        fields.update(first_at=bar.get_time(), first_audio_s=audio_s)
    bar.update(task, advance=len(rows), audio_s=audio_s)


def _fmt(value: Any, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _sdi(w: Mapping[str, Any] | None) -> str:
    return f"{w['substitutions']} / {w['deletions']} / {w['insertions']}" if w else "-"


def run_summary(report: Mapping[str, Any], title: str) -> Table:
    """The end-of-run table from a report dict (report.json's content): one measure per line."""
    rows, rtfx, timings = report["rows"], report.get("rtfx") or {}, report.get("timings") or {}
    wer = report.get("wer") or {}
    scored = wer.get("reference_words")
    table = Table(title=title, show_header=False, box=box.SIMPLE, title_justify="left")
    table.add_column("measure", style="bold", no_wrap=True)
    table.add_column("value", no_wrap=True)
    cut = f", {rows['truncated']} cut by the token cap" if rows.get("truncated") else ""
    table.add_row("rows", f"{rows['ok']} ok, {rows['failed']} failed{cut}")
    table.add_row("audio", f"{report['audio_s'] / 3600:.3f} h ({report['audio_s']:.1f} s)")
    if scored:
        table.add_row("WER", f"{_fmt(wer.get('wer_percent'))} %  (S / D / I {_sdi(wer)} of {scored} words)")
    else:
        table.add_row("WER", "- (no reference text)")
    table.add_row("RTFx", f"{_fmt(rtfx.get('end_to_end'), '.1f')} end to end, {_fmt(rtfx.get('engine'), '.1f')} engine")
    table.add_row("load", f"{_fmt(timings.get('load_s'), '.1f')} s (model and engine start)")
    return table


def failures_table(by_kind: Mapping[str, int]) -> Table:
    table = Table(title="Failed rows by kind", header_style="bold", box=box.SIMPLE, title_justify="left")
    table.add_column("error kind", no_wrap=True)
    table.add_column("rows", justify="right", no_wrap=True)
    for kind, count in sorted(by_kind.items()):
        table.add_row(kind, str(count))
    return table


def eval_results_tables(payload: Mapping[str, Any], title: str) -> list[Table]:
    """The eval / report tables from results.json's content: accuracy per dataset, then errors and speed."""
    runs = {run["dataset"]: run for run in payload.get("runs", [])}
    datasets = payload["datasets"]
    title = f"{title} · scorer {payload['scorer']}" if payload.get("scorer") else title
    accuracy = _narrow_table(title, ("dataset", "rows", "failed/\ndropped", "words", "WER %", "CER %"))
    speed = _narrow_table("errors and speed", ("dataset", "hours", "S / D / I", "RTFx\nengine", "RTFx\ne2e"))
    for i, d in enumerate(datasets):
        w, run, last = d["wer_stats"], runs.get(d["name"], {}), i == len(datasets) - 1
        accuracy.add_row(
            d["name"], str(d["rows"]), f"{d.get('failed', 0)}/{d['dropped_refs']}", str(w["reference_words"]),
            _fmt(d["wer_percent"]), _fmt(d.get("cer_percent")), end_section=last,
        )
        speed.add_row(
            d["name"], _fmt(d["hours"], ".3f"), _sdi(w),
            _fmt(run.get("rtfx_engine", d.get("rtfx")), ".1f"), _fmt(run.get("rtfx_end_to_end"), ".1f"),
            end_section=last,
        )
    accuracy.add_row("[bold]average[/bold]", "", "", "", f"[bold]{_fmt(payload.get('average_wer_percent'))}[/bold]", "")
    speed.add_row(
        "[bold]composite[/bold]", _fmt(payload.get("audio_s", 0.0) / 3600, ".3f"), "",
        _fmt(payload.get("composite_rtfx"), ".1f"), _fmt(payload.get("composite_rtfx_end_to_end"), ".1f"),
    )
    return [accuracy, speed]


def _narrow_table(title: str, columns: Sequence[str]) -> Table:
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for col in columns:
        table.add_column(col, justify="left" if col == "dataset" else "right", no_wrap=True)
    return table
