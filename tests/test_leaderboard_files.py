"""speechlm_batch.leaderboard_files: the leaderboard's manifest names and rows, read back as written."""

from __future__ import annotations

import json

import pytest

from speechlm_batch.leaderboard_files import (
    FIELDS,
    LeaderboardName,
    leaderboard_filename,
    parse_leaderboard_filename,
    read_leaderboard_manifests,
    write_leaderboard_manifest,
)


def _ok(i: int, text: str | None, pred: str, audio_s: float, **extra) -> dict:
    row = {"audio_filepath": f"a{i}.wav", "duration": audio_s, "_id": str(i), "_position": i}
    if text is not None:
        row["text"] = text
    return {**row, "pred_text": pred, "_audio_s": audio_s, **extra}


FAILED = {"audio_filepath": "f.wav", "duration": 2.0, "text": "lost words", "pred_text": None,
          "error": {"kind": "decode", "message": "bad bytes"}, "_audio_s": 0.0}
UNPARSED = {"_raw": "{x", "_id": "4", "pred_text": None, "error": {"kind": "bad_row"}}


@pytest.mark.parametrize(
    ("model", "dataset", "config", "split", "expected"),
    [
        (
            "openai/whisper-large-v3", "hf-audio/esb-datasets-test-only-sorted", "librispeech", "test.clean",
            "MODEL_openai-whisper-large-v3_DATASET_hf-audio-esb-datasets-test-only-sorted_librispeech_test.clean.jsonl",
        ),
        (
            "nvidia/canary-qwen-2.5b", "hf-audio/open-asr-leaderboard", "ami_cleaned", "test",
            "MODEL_nvidia-canary-qwen-2.5b_DATASET_hf-audio-open-asr-leaderboard_ami_cleaned_test.jsonl",
        ),
        (
            "m/x", "ArtificialAnalysis/Earnings22-Cleaned-AA-chunked", "", "test",
            "MODEL_m-x_DATASET_ArtificialAnalysis-Earnings22-Cleaned-AA-chunked__test.jsonl",
        ),
        (
            "m/x", "hf-audio/open-asr-leaderboard-multilingual-datasets", "fleurs_de", "test",
            "MODEL_m-x_DATASET_hf-audio-open-asr-leaderboard-multilingual-datasets_fleurs_de_test.jsonl",
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


def test_manifest_has_exactly_the_five_keys_and_spreads_the_time(tmp_path) -> None:
    path = tmp_path / "results" / leaderboard_filename("org/model", "org/data", "cfg", "test")
    rows = [_ok(0, "the cat sat", "the cat sit", 3.0), _ok(1, "hello", "hello", 2.0), _ok(9, "café au lait", "café", 1.0)]
    assert write_leaderboard_manifest(path, rows, total_time_s=0.75) == 3
    raw = path.read_text(encoding="utf-8")
    assert "café" in raw  # ensure_ascii=False
    lines = [json.loads(line) for line in raw.splitlines()]
    assert [set(line) for line in lines] == [set(FIELDS)] * 3
    assert lines[0] == {"audio_filepath": "a0.wav", "duration": 3.0, "time": 0.25, "text": "the cat sat",
                        "pred_text": "the cat sit"}
    found = read_leaderboard_manifests(tmp_path)
    assert found == {LeaderboardName("org-model", "org-data", "cfg", "test"): lines}


def test_failed_rows_are_blank_predictions_marked_with_their_kind(tmp_path) -> None:
    path = tmp_path / "m.jsonl"
    chunk = _ok(0, "call ref", "call", 1.0, parent_id="p", chunk_index=0)
    assert write_leaderboard_manifest(path, [chunk, FAILED, UNPARSED], total_time_s=1.0) == 2  # no reference: skipped
    first, failed = (json.loads(line) for line in path.read_text().splitlines())
    assert set(first) == {*FIELDS, "parent_id", "chunk_index"}
    assert failed == {"audio_filepath": "f.wav", "duration": 2.0, "time": 0.5, "text": "lost words", "pred_text": "",
                      "error": "decode"}
