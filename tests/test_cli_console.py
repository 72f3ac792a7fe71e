"""The terminal tables stay whole at 80 columns: every cell value appears in one piece, nothing cut with '…'."""

from __future__ import annotations

from rich.console import Console

from speechlm_batch.cli import console as ui

# Long names and large, realistic counts: the widest tables these renderers produce.
NAMES = ("earnings22_cleaned_aa_chunked", "librispeech_clean_2026", "ami")
WER = {"substitutions": 12345, "deletions": 1234, "insertions": 1234, "reference_words": 1234567}


def _render(*tables) -> str:
    console = Console(width=80, record=True, color_system=None)
    for table in tables:
        console.print(table)
    return console.export_text()


def _payload() -> dict:
    return {
        "datasets": [
            {"name": n, "rows": 123456, "dropped_refs": 1234, "hours": 123.456, "wer_percent": 12.34,
             "cer_percent": 5.67, "wer_stats": WER, "rtfx": 1234.5}
            for n in NAMES
        ],
        "runs": [{"dataset": n, "rtfx_engine": 1234.5, "rtfx_end_to_end": 999.9} for n in NAMES],
        "average_wer_percent": 12.34, "audio_s": 1e6, "composite_rtfx": 1234.5, "composite_rtfx_end_to_end": 999.9,
    }


def _assert_whole(text: str, cells: list[str]) -> None:
    assert "…" not in text, text
    assert all(len(line) <= 80 for line in text.splitlines())
    for cell in cells:
        assert cell in text, (cell, text)


def test_eval_tables_fit_80_columns():
    text = _render(*ui.eval_results_tables(_payload(), "whisper-large-v3-turbo · eval/"))
    _assert_whole(text, [*NAMES, "123456", "1234567", "12.34", "5.67", "123.456", "12345 / 1234 / 1234", "1234.5",
                         "999.9", "average", "composite", "277.778", "dropped", "failed", "WER %", "CER %", "S / D / I"])


def test_run_summary_fits_80_columns():
    report = {
        "rows": {"ok": 123456, "failed": 1234}, "audio_s": 1e6,
        "wer": {"wer_percent": 12.34, **WER}, "rtfx": {"end_to_end": 1234.5, "engine": 2345.6},
        "timings": {"load_s": 59.3},
    }
    text = _render(ui.run_summary(report, "demo.jsonl · whisper-base"), ui.failures_table({"missing_file": 12}))
    _assert_whole(text, ["123456 ok, 1234 failed", "277.778 h", "12.34 %", "12345 / 1234 / 1234 of 1234567 words",
                         "1234.5 end to end, 2345.6 engine", "59.3 s", "missing_file"])


def test_run_summary_without_references_says_so():
    report = {"rows": {"ok": 3, "failed": 0}, "audio_s": 30.0, "wer": None, "rtfx": {}, "timings": {}}
    assert "no reference text" in _render(ui.run_summary(report, "x"))


def test_progress_line_fits_80_columns():
    console = Console(width=80, record=True, color_system=None)
    bar = ui.progress(console)
    task = bar.add_task("demo.jsonl", total=12345, audio_s=0.0)
    ui.add_rows(bar, task, [_Row(600.0)])  # the first window: its time included model load, not counted
    assert "RTFx -" in _progress_text(console, bar)
    bar.tasks[task].fields["first_at"] -= 60.0  # a minute later 7200 s more audio: RTFx 120
    ui.add_rows(bar, task, [_Row(3600.0)] * 2)
    text = _progress_text(console, bar)
    assert "…" not in text and "3/12345" in text and "2.17 h" in text and "RTFx 120.0x" in text, text


class _Row:
    def __init__(self, audio_s: float) -> None:
        self.audio_s = audio_s


def _progress_text(console: Console, bar) -> str:
    console.print(bar.make_tasks_table(bar.tasks))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    return text
