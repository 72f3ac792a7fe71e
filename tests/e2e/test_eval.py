"""Issue 3 end to end: a local HF dataset (Audio feature) of real speech, evaluated offline with whisper-base.

The S / D / I in results.json (2026 scorer) are checked against Debian's sclite (sctk) on the same
normalized text, and the leaderboard files are read back. Uses the session's one engine (`engine` fixture): no second engine starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_scoring import merged_for_sclite, sclite_counts

from speechlm_batch import evaluation
from speechlm_batch.metrics import normalize
from speechlm_batch.outputs import read_predictions
from speechlm_batch.settings import EngineSettings, RunSettings

pytestmark = pytest.mark.engine

ASTERISK_IDS = ("asterisk/agent-alreadyon", "asterisk/activated", "asterisk/added", "asterisk/agent-loginok")


def _rows(manifests: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (manifests / f"{name}.jsonl").read_text().splitlines() if line.strip()]


def _save(rows: list[dict], manifests: Path, folder: Path, text_column: str, with_ids: bool) -> Path:
    from datasets import Audio, Dataset

    columns = {
        "audio": [str(manifests / r["audio_filepath"]) for r in rows],
        text_column: [r["text"] for r in rows],
        "audio_length_s": [r["duration"] for r in rows],
    }
    if with_ids:
        columns["id"] = [r["id"] for r in rows]
    Dataset.from_dict(columns).cast_column("audio", Audio()).save_to_disk(str(folder))  # embeds the audio bytes
    return folder


@pytest.fixture(scope="module")
def speech_sets(manifests_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hf-speech")
    asterisk = {r["id"]: r for r in _rows(manifests_dir, "asterisk")}
    rows = _rows(manifests_dir, "librivox") + _rows(manifests_dir, "jfk") + [asterisk[i] for i in ASTERISK_IDS]
    # Two rows the leaderboard drops before inference: an empty and an "ignore" reference.
    rows += [
        {**asterisk["asterisk/added"], "id": "empty-ref", "text": " "},
        {**asterisk["asterisk/activated"], "id": "ignored-ref", "text": "ignore time segment in scoring"},
    ]
    speech = _save(rows, manifests_dir, root / "speech_set", "text", with_ids=True)
    cards = _save(_rows(manifests_dir, "cards"), manifests_dir, root / "cards_sentence", "sentence", with_ids=False)
    return speech, cards


@pytest.fixture(scope="module")
def outcome(engine, speech_sets, tmp_path_factory) -> evaluation.EvalOutcome:
    out = tmp_path_factory.mktemp("eval-out")
    targets = [evaluation.target_from_hf(str(path)) for path in speech_sets]
    settings = RunSettings(engine=EngineSettings(model="whisper-base"))
    return evaluation.run_eval(
        targets, settings, out, model_path=engine.info.name, model_id="whisper-base", engine=engine
    )


def test_results_files_and_dropped_rows(outcome):
    payload = json.loads((outcome.output_dir / "results.json").read_text())
    by_name = {d["name"]: d for d in payload["datasets"]}
    assert set(by_name) == {"speech_set", "cards_sentence"}
    assert by_name["speech_set"]["rows"] == 10 and by_name["speech_set"]["dropped_refs"] == 2
    assert by_name["cards_sentence"]["rows"] == 5 and by_name["cards_sentence"]["dropped_refs"] == 0
    assert by_name["speech_set"]["wer_percent"] < 10  # clean read speech with whisper-base
    for run in payload["runs"]:
        assert run["rtfx_engine"] > 0 and run["rtfx_end_to_end"] > 0 and run["load_s"] is not None
    assert payload["device"] and payload["settings"]["engine"]["model"] == "whisper-base"
    for name in ("results.md", "results.html"):
        assert (outcome.output_dir / name).stat().st_size > 0


def test_sentence_column_and_index_ids(outcome):
    rows = list(read_predictions(outcome.output_dir / "cards_sentence" / "predictions.jsonl"))
    assert sorted(r["_id"] for r in rows) == ["0", "1", "2", "3", "4"]
    assert all(r["text"] and r["pred_text"] is not None for r in rows)


def test_leaderboard_files_parse(outcome):
    files = sorted(outcome.output_dir.glob("MODEL_whisper-base_DATASET_*.jsonl"))
    assert [f.name for f in files] == [
        "MODEL_whisper-base_DATASET_cards-sentence__test.jsonl",
        "MODEL_whisper-base_DATASET_speech-set__test.jsonl",
    ]
    rows = [json.loads(line) for line in files[1].read_text().splitlines()]
    assert len(rows) == 10
    assert all(set(r) == {"audio_filepath", "duration", "time", "text", "pred_text"} for r in rows)
    jfk = next(r for r in rows if r["audio_filepath"] == "jfk")
    assert abs(jfk["duration"] - 11.0) < 0.01 and jfk["time"] > 0
    assert normalize(jfk["pred_text"]) == normalize(jfk["text"])  # hand-checked: whisper-base gets JFK exactly


def test_wer_matches_sclite(outcome, tmp_path):
    """sclite (Debian sctk; CI installs it) on the same normalized text gives identical S / D / I.

    sclite has no compound rule, so the compounds the 2026 scorer merged are written joined for it first.
    """
    payload = json.loads((outcome.output_dir / "results.json").read_text())
    assert payload["scorer"] == "2026"
    for dataset in payload["datasets"]:
        rows = list(read_predictions(outcome.output_dir / dataset["name"] / "predictions.jsonl"))
        refs, hyps, joined = merged_for_sclite([normalize(r["text"]) for r in rows], [normalize(r["pred_text"]) for r in rows])
        counts = sclite_counts(refs, hyps, tmp_path)
        ours = dataset["wer_stats"]
        assert counts["words"] + joined == ours["reference_words"], dataset["name"]
        assert (counts["sub"], counts["del"], counts["ins"]) == (
            ours["substitutions"], ours["deletions"], ours["insertions"]
        ), dataset["name"]
