"""speechlm_batch.rendering: results.md / results.html and the one-run summary say what they must."""

from __future__ import annotations

from test_reports import ROWS, _report, result

from speechlm_batch.rendering import render_chart_html, render_results_markdown, render_summary_markdown
from speechlm_batch.reports import summarize


def test_summary_markdown_names_the_scorer_failures_and_both_wers() -> None:
    text = render_summary_markdown(_report())
    assert "WER 50.00 %" in text and "scorer: 2026" in text
    assert "engine: 1" in text
    assert "1 failed rows scored as empty; WER over ok rows only: 37.50 %" in text
    assert len(ROWS) == 4


def test_results_markdown_and_chart() -> None:
    summary = summarize([result("librispeech_test.clean", 1.61, 100.0, 1.0), result("ami <x>", 10.19, 50.0, 2.0)])
    runs = [{"dataset": "librispeech_test.clean", "rtfx_end_to_end": 40.0}, {"dataset": "ami <x>", "rtfx_end_to_end": 9.5}]
    md = render_results_markdown(summary, runs)
    assert "Scorer: **2026**" in md
    assert "| librispeech_test.clean | 100 | 0 |" in md
    assert "161 / 0 / 0" in md  # S / D / I
    assert "| 100.0 | 40.0 |" in md  # RTFx engine, then end to end
    assert "Average WER: 5.90 %" in md  # (1.61 + 10.19) / 2
    assert "Composite RTFx: 50.0" in md  # 150 / 3
    page = render_chart_html(summary, runs)
    assert page.count("<svg") == 3 and "Scorer: 2026" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert "ami &lt;x&gt;" in page  # names are escaped
