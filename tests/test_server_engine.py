"""server_engine: the family choice."""

from __future__ import annotations

import json

from speechlm_batch import outputs
from speechlm_batch.server_client import ServerInfo
from speechlm_batch.server_engine import choose_family
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
