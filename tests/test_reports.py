"""speechlm_batch.reports: scoring prediction rows, report files and leaderboard manifests."""

from __future__ import annotations

import json

import pytest

from speechlm_batch import reports
from speechlm_batch.metrics import WerStats
from speechlm_batch.reports import (
    DatasetResult,
    LeaderboardName,
    RunReport,
    Timings,
    leaderboard_filename,
    parse_leaderboard_filename,
    read_leaderboard_manifests,
    render_results_markdown,
    render_summary_markdown,
    score_rows,
    summarize,
    write_chart_html,
    write_leaderboard_manifest,
    write_report_json,
    write_results_json,
)


def _ok(i: int, text: str | None, pred: str, audio_s: float, **extra) -> dict:
    row = {"audio_filepath": f"a{i}.wav", "duration": audio_s, "_id": str(i), "_position": i}
    if text is not None:
        row["text"] = text
    return {**row, "pred_text": pred, "_audio_s": audio_s, "_pieces": 1, **extra}


def _failed(i: int, kind: str, text: str = "never scored words") -> dict:
    return {
        "audio_filepath": f"a{i}.wav",
        "text": text,
        "_id": str(i),
        "_position": i,
        "pred_text": None,
        "error": {"kind": kind, "message": "..."},
        "_audio_s": 0.0,
        "_pieces": 0,
    }


ROWS = [
    _ok(0, "the cat sat on the mat", "the cat sit on mat", 3.0, _loops_collapsed=2),  # S=1 D=1 over 6
    _ok(1, "hello world", "hello big world", 2.0),  # I=1 over 2
    _failed(2, "missing_file"),
    _failed(3, "engine"),
    {
        "_raw": "{not json",
        "_id": "4",
        "_position": 4,
        "pred_text": None,
        "error": {"kind": "bad_row", "message": "line 5: not JSON"},
        "_audio_s": 0.0,
        "_pieces": 0,
    },
    _ok(5, None, "no reference here", 1.5),
]


def test_score_rows_counts_failures_by_kind_and_does_not_score_them() -> None:
    score = score_rows(ROWS)
    assert score.rows_total == 6
    assert score.rows_ok == 3
    assert score.rows_failed_by_kind == {"missing_file": 1, "engine": 1, "bad_row": 1}
    assert score.rows_failed == 3
    assert score.rows_unscored == 1
    assert score.audio_s == pytest.approx(6.5)  # ok rows only: 3.0 + 2.0 + 1.5
    assert score.loops_collapsed == 2
    w = score.scored.words
    # only rows 0 and 1: 8 reference words, S=1 D=1 I=1; failed rows' "never scored words" are not counted
    assert (w.substitutions, w.deletions, w.insertions, w.reference_words) == (1, 1, 1, 8)
    assert score.scored.wer == pytest.approx(3 / 8)


def test_score_rows_joins_chunks() -> None:
    rows = [
        _ok(1, "good morning all", "all", 1.0, parent_id="c", chunk_index=1),
        _ok(0, "good morning all", "good morning", 1.0, parent_id="c", chunk_index=0),
    ]
    score = score_rows(rows)
    assert score.scored.words.utterances == 1
    assert score.scored.words.errors == 0
    assert score.warnings == ()


def _timings() -> Timings:
    return Timings(load_s=20.0, warmup_s=1.0, decode_s=0.5, engine_s=2.0, write_s=0.1, wall_s=4.0)


def _report(**kw) -> RunReport:
    return RunReport(
        model="openai/whisper-base",
        settings={"window_rows": 256},
        versions={"speechlm-batch": "0.1.0", "python": "3.11"},
        device="cpu",
        score=score_rows(ROWS),
        timings=_timings(),
        created="2026-01-01T00:00:00+0000",
        **kw,
    )


def test_run_report_rtfx_uses_this_runs_audio() -> None:
    assert _report().rtfx_engine == pytest.approx(6.5 / 2.0)  # falls back to the scored audio
    report = _report(run_audio_s=4.0, run_rows=2, resumed_rows=4)
    assert report.rtfx_engine == pytest.approx(2.0)  # 4 s audio / 2 s in generate
    assert report.rtfx_end_to_end == pytest.approx(1.0)  # 4 s audio / 4 s loop


def test_report_json_keeps_fractions_and_rounded_percent(tmp_path) -> None:
    path = tmp_path / "report.json"
    write_report_json(path, _report())
    data = json.loads(path.read_text())
    assert data["wer"]["wer"] == pytest.approx(0.375)
    assert data["wer"]["wer_percent"] == 37.5
    assert data["rows"]["failed_by_kind"]["engine"] == 1
    assert data["timings"]["engine_s"] == 2.0
    assert data["rtfx"]["engine"] == pytest.approx(3.25)
    assert data["mean_utterance_wer"]["value"] == pytest.approx((2 / 6 + 1 / 2) / 2)


def test_summary_markdown_mentions_failures_and_wer() -> None:
    text = render_summary_markdown(_report())
    assert "WER 37.50 %" in text
    assert "engine: 1" in text and "missing_file: 1" in text
    assert "not scored" in text


# ------------------------------------------------------------------------------------------ leaderboard files


@pytest.mark.parametrize(
    ("model", "dataset", "config", "split", "expected"),
    [
        (
            "openai/whisper-large-v3",
            "hf-audio/esb-datasets-test-only-sorted",
            "librispeech",
            "test.clean",
            "MODEL_openai-whisper-large-v3_DATASET_hf-audio-esb-datasets-test-only-sorted_librispeech_test.clean.jsonl",
        ),
        (
            "nvidia/canary-qwen-2.5b",
            "hf-audio/open-asr-leaderboard",
            "ami_cleaned",
            "test",
            "MODEL_nvidia-canary-qwen-2.5b_DATASET_hf-audio-open-asr-leaderboard_ami_cleaned_test.jsonl",
        ),
        (
            "m/x",
            "ArtificialAnalysis/Earnings22-Cleaned-AA-chunked",
            "",
            "test",
            "MODEL_m-x_DATASET_ArtificialAnalysis-Earnings22-Cleaned-AA-chunked__test.jsonl",
        ),
    ],
)
def test_leaderboard_filename_round_trip(model, dataset, config, split, expected) -> None:
    name = leaderboard_filename(model, dataset, config, split)
    assert name == expected
    parsed = parse_leaderboard_filename(name)
    assert parsed == LeaderboardName(model.replace("/", "-"), dataset.replace("/", "-"), config, split)
    assert parsed.filename() == name


def test_parse_rejects_other_names() -> None:
    assert parse_leaderboard_filename("predictions.jsonl") is None


def test_leaderboard_manifest_has_exactly_the_five_keys(tmp_path) -> None:
    name = leaderboard_filename("org/model", "org/data", "cfg", "test")
    path = tmp_path / "results" / name
    rows = [*ROWS[:2], _ok(9, "café au lait", "café", 1.0)]
    assert write_leaderboard_manifest(path, rows, time_per_row_s=0.25) == 3
    raw = path.read_text(encoding="utf-8")
    assert "café" in raw  # ensure_ascii=False
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [set(line) for line in lines] == [set(reports.LEADERBOARD_FIELDS)] * 3
    assert lines[0] == {
        "audio_filepath": "a0.wav",
        "duration": 3.0,
        "time": 0.25,
        "text": "the cat sat on the mat",
        "pred_text": "the cat sit on mat",
    }
    found = read_leaderboard_manifests(tmp_path)
    assert list(found) == [LeaderboardName("org-model", "org-data", "cfg", "test")]
    assert found[LeaderboardName("org-model", "org-data", "cfg", "test")] == lines


def test_leaderboard_manifest_keeps_chunk_keys_and_blanks_failed_predictions(tmp_path) -> None:
    path = tmp_path / "m.jsonl"
    chunk = _ok(0, "call ref", "call", 1.0, parent_id="p", chunk_index=0)
    written = write_leaderboard_manifest(path, [chunk, ROWS[2], ROWS[4]], time_per_row_s=[0.1, 0.2, 0.3])
    assert written == 2  # the unparsed row has no reference and is skipped
    first, failed = (json.loads(line) for line in path.read_text().splitlines())
    assert set(first) == {*reports.LEADERBOARD_FIELDS, "parent_id", "chunk_index"}
    assert failed["pred_text"] == "" and failed["time"] == 0.2


# ------------------------------------------------------------------------------------------ several datasets

CANARY_QWEN = [10.19, 10.45, 9.43, 1.61, 3.10, 1.90, 2.71, 5.66]


def _result(name: str, wer_percent: float, audio_s: float, time_s: float | None) -> DatasetResult:
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
        _result(f"set{i}", w, 100.0 if i == 0 else 10.0, 1.0 if i == 0 else 10.0) for i, w in enumerate(CANARY_QWEN)
    ]
    summary = summarize(results)
    assert summary.average_wer_percent == 5.63
    # sum/sum: (100 + 7*10) / (1 + 7*10) = 170 / 71; the mean of per-set RTFx would be (100 + 7) / 8
    assert summary.composite_rtfx == pytest.approx(170 / 71)
    assert summary.audio_s == pytest.approx(170.0)


def test_composite_rtfx_is_none_when_a_dataset_was_not_timed() -> None:
    summary = summarize([_result("a", 1.0, 10.0, 1.0), _result("b", 2.0, 10.0, None)])
    assert summary.composite_rtfx is None
    assert summary.average_wer_percent == 1.5


def test_result_from_leaderboard_rows_sums_time() -> None:
    rows = [
        {"audio_filepath": "x", "duration": 4.0, "time": 0.5, "text": "hello world", "pred_text": "hello"},
        {"audio_filepath": "y", "duration": 6.0, "time": 1.5, "text": "good day", "pred_text": "good day"},
    ]
    result = reports.result_from_leaderboard_rows("ls", rows)
    assert result.time_s == 2.0 and result.audio_s == 10.0
    assert result.rtfx == pytest.approx(5.0)
    assert result.wer == pytest.approx(1 / 4)


def test_results_markdown_json_and_chart(tmp_path) -> None:
    summary = summarize([_result("librispeech_test.clean", 1.61, 100.0, 1.0), _result("ami <x>", 10.19, 50.0, 2.0)])
    md = render_results_markdown(summary)
    assert "| librispeech_test.clean | 100 |" in md
    assert "161 / 0 / 0" in md  # S / D / I
    assert "Average WER: 5.90 %" in md  # (1.61 + 10.19) / 2
    assert "Composite RTFx: 50.0" in md  # 150 / 3
    assert "mean utt. WER %" in md
    write_results_json(tmp_path / "results.json", summary)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["datasets"][0]["wer_stats"]["substitutions"] == 161
    assert data["average_wer_percent"] == 5.9
    write_chart_html(tmp_path / "chart.html", summary)
    page = (tmp_path / "chart.html").read_text()
    assert page.count("<svg") == 2
    assert "<script" not in page and "src=" not in page and "href=" not in page
    assert "ami &lt;x&gt;" in page  # names are escaped
