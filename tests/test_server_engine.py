"""server_engine: the family choice, and dropping server-failed rows before a rerun."""

from __future__ import annotations

import json

from speechlm_batch import outputs
from speechlm_batch.server_client import ServerInfo
from speechlm_batch.server_engine import choose_family, forget_server_failures
from speechlm_batch.settings import DecodeSettings, RunSettings
from speechlm_batch.sharding import ChunkSpec

FINGERPRINT = "f" * 16


def _info(transcription):
    return ServerInfo("http://a:8000", "m", 448, "0.32.0", transcription)


def test_family_from_flag_alias_local_config_then_routes(tmp_path):
    assert choose_family(RunSettings(decode=DecodeSettings(family="chat-audio")), "whisper-base", ()) == "chat-audio"
    assert choose_family(RunSettings(), "whisper-tiny.en", ()) == "whisper"
    folder = tmp_path / "salm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "nemo_speechlm"}))
    assert choose_family(RunSettings(), str(folder), ()) == "nemo-speechlm"
    assert choose_family(RunSettings(), "org/asr", (_info(True),)) == "transcription"
    assert choose_family(RunSettings(), "org/audio-llm", (_info(False),)) == "chat-audio"


def _write(tmp_path, chunk, rows, fingerprint=FINGERPRINT):
    paths = outputs.OutputPaths.of(tmp_path, chunk)
    paths.predictions.write_bytes(b"".join(outputs.encode_row(r) for r in rows))
    paths.meta.write_text(json.dumps({"fingerprint": fingerprint}))
    paths.done.write_text("{}")
    return paths


ROWS = [
    {"_id": "a", "pred_text": "x"},
    {"_id": "b", "pred_text": None, "error": {"kind": "server", "message": "down"}},
    {"_id": "c", "pred_text": None, "error": {"kind": "missing_file", "message": "gone"}},
]


def test_forget_drops_only_server_failures_and_the_done_marker(tmp_path):
    chunk = ChunkSpec(1, 4)
    paths = _write(tmp_path, chunk, ROWS)
    assert forget_server_failures(tmp_path, chunk, FINGERPRINT) == 1
    assert [r["_id"] for r in outputs.read_predictions(paths.predictions)] == ["a", "c"]
    assert not paths.done.exists()
    assert forget_server_failures(tmp_path, chunk, FINGERPRINT) == 0


def test_forget_leaves_files_of_other_settings_alone(tmp_path):
    paths = _write(tmp_path, None, ROWS, fingerprint="other")
    before = paths.predictions.read_bytes()
    assert forget_server_failures(tmp_path, None, FINGERPRINT) == 0
    assert paths.predictions.read_bytes() == before and paths.done.exists()
    assert forget_server_failures(tmp_path / "nothing-here", None, FINGERPRINT) == 0
