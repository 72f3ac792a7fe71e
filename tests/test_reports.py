"""speechlm_batch.reports: report.json of one run (and its typed loader), eval results and their averages."""

from __future__ import annotations

import json

import pytest

from speechlm_batch import reports
from speechlm_batch.metrics import WerStats
from speechlm_batch.reports import DatasetResult, RunReport, Timings, load_report, score_rows, summarize
from speechlm_batch.scoring import Scorer, Scoring

ROWS = [
    {"_id": "0", "text": "the cat sat on the mat", "pred_text": "the cat sit on mat", "_audio_s": 3.0},  # S1 D1 /6
    {"_id": "1", "text": "hello world", "pred_text": "hello big world", "_audio_s": 2.0},  # I1 /2
    {"_id": "2", "text": "two words", "pred_text": None, "error": {"kind": "engine"}, "_audio_s": 0.0},  # D2 /2
    {"_id": "3", "pred_text": "no reference here", "_audio_s": 1.5},
]


def _report(**kw) -> RunReport:
    return RunReport(
        model="openai/whisper-base",
        settings={"window_rows": 256, "scorer": "2026", "decode": {"language": "en"}},
        versions={"speechlm-batch": "0.1.0", "python": "3.11"},
        device="cpu",
        score=score_rows(ROWS),
        timings=Timings(load_s=20.0, warmup_s=1.0, decode_s=0.5, engine_s=2.0, write_s=0.1, wall_s=4.0),
        created="2026-01-01T00:00:00+0000",
        **kw,
    )


def test_run_report_rtfx_uses_this_runs_audio() -> None:
    assert _report().rtfx_engine == pytest.approx(6.5 / 2.0)  # falls back to the ok rows' audio
    report = _report(run_audio_s=4.0, run_rows=2, resumed_rows=4)
    assert report.rtfx_engine == pytest.approx(2.0)  # 4 s audio / 2 s in generate
    assert report.rtfx_end_to_end == pytest.approx(1.0)  # 4 s audio / 4 s loop


def test_report_json_names_the_scorer_and_counts_failed_rows_both_ways(tmp_path) -> None:
    path = tmp_path / "report.json"
    reports.write_report_json(path, _report())
    data = json.loads(path.read_text())
    assert data["scoring"]["scorer"] == "2026" and "2026" in data["scoring"]["normalizer"]
    assert data["wer"]["wer"] == pytest.approx(5 / 10)  # the failed row's 2 words count as deleted
    assert data["wer"]["wer_percent"] == 50.0
    assert data["ok_rows_only"]["wer"] == pytest.approx(3 / 8)
    assert data["rows"]["failed_by_kind"] == {"engine": 1} and data["rows"]["failed_scored_as_empty"] == 1
    assert data["timings"]["engine_s"] == 2.0 and data["rtfx"]["engine"] == pytest.approx(3.25)
    assert data["mean_utterance_wer"]["value"] == pytest.approx((2 / 6 + 1 / 2 + 1) / 3)


def test_load_report_reads_what_write_report_json_wrote(tmp_path) -> None:
    path = tmp_path / "report.json"
    reports.write_report_json(path, _report(run_audio_s=4.0, run_rows=2, resumed_rows=4))
    loaded = load_report(json.loads(path.read_text()))
    assert loaded.timings == _report().timings
    assert loaded.timed_audio_s == 4.0 and (loaded.rows_this_run, loaded.rows_resumed) == (2, 4)
    assert loaded.model == "openai/whisper-base" and loaded.language == "en"
    assert load_report(None) is None
    assert load_report({}).timings == Timings()  # a bare file reads as zeros, not a crash


# ------------------------------------------------------------------------------------------ several datasets

CANARY_QWEN = [10.19, 10.45, 9.43, 1.61, 3.10, 1.90, 2.71, 5.66]


def result(name: str, wer_percent: float, audio_s: float, time_s: float | None) -> DatasetResult:
    stats = WerStats(
        substitutions=round(wer_percent * 100),
        hits=10_000 - round(wer_percent * 100),
        reference_words=10_000,
        utterances=100,
    )
    rtfx = audio_s / time_s if time_s else None
    return DatasetResult(name, 100, audio_s / 3600, stats, 0.05, 0.2, audio_s, time_s, rtfx, 0, 0)


def test_summarize_average_wer_and_composite_rtfx() -> None:
    results = [
        result(f"set{i}", w, 100.0 if i == 0 else 10.0, 1.0 if i == 0 else 10.0) for i, w in enumerate(CANARY_QWEN)
    ]
    summary = summarize(results)
    assert summary.average_wer_percent == 5.63
    # sum/sum: (100 + 7*10) / (1 + 7*10) = 170 / 71; the mean of per-set RTFx would be (100 + 7) / 8
    assert summary.composite_rtfx == pytest.approx(170 / 71)
    assert summary.audio_s == pytest.approx(170.0)
    assert summary.to_dict()["scorer"] == "2026"


def test_composite_rtfx_is_none_when_a_dataset_was_not_timed() -> None:
    summary = summarize([result("a", 1.0, 10.0, 1.0), result("b", 2.0, 10.0, None)])
    assert summary.composite_rtfx is None
    assert summary.average_wer_percent == 1.5


def test_result_from_leaderboard_rows_sums_time_and_counts_marked_failures() -> None:
    rows = [
        {"audio_filepath": "x", "duration": 4.0, "time": 0.5, "text": "hello world", "pred_text": "hello"},
        {"audio_filepath": "y", "duration": 6.0, "time": 1.5, "text": "good day", "pred_text": "good day"},
        {"audio_filepath": "z", "duration": 1.0, "time": 1.0, "text": "lost", "pred_text": "", "error": "decode"},
    ]
    res = reports.result_from_leaderboard_rows("ls", rows, Scoring(Scorer.classic))
    assert res.time_s == 3.0 and res.audio_s == 10.0  # the failed row's audio is not counted as transcribed
    assert res.rtfx == pytest.approx(10 / 3)
    assert res.wer == pytest.approx(2 / 5) and res.wer_ok_only == pytest.approx(1 / 4)
    assert res.failed == 1 and res.failed_scored == 1 and res.scoring.scorer is Scorer.classic
