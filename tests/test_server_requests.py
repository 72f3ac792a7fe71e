"""server_requests: what each family sends, and how replies are read."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import soundfile

from speechlm_batch.server_requests import (
    CHAT_PATH,
    TRANSCRIPTION_PATH,
    ServerAdapter,
    chat_text,
    parse_reply,
    wav_bytes,
)
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece

SR = 16000


def piece(seconds: float = 2.0) -> AudioPiece:
    samples = (np.random.default_rng(0).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)
    return AudioPiece("u", 0, 1, samples, SR)


def test_wav_round_trip_is_exact():
    p = piece()
    decoded, rate = soundfile.read(io.BytesIO(wav_bytes(p.samples, SR)), dtype="float32")
    assert rate == SR and np.array_equal(decoded, p.samples)


def test_whisper_goes_to_transcriptions_as_multipart():
    adapter = ServerAdapter.create("whisper", "whisper-base", DecodeSettings(language="de"), 448)
    request = adapter.request(piece(2.0))
    http = request.prompt["http"]
    assert http.path == TRANSCRIPTION_PATH and http.json is None
    assert http.data["model"] == "whisper-base" and http.data["language"] == "de"
    assert http.data["temperature"] == "0.0" and http.data["response_format"] == "json"
    assert http.data["max_completion_tokens"] == str(request.max_tokens) == str(24 + 16)  # 12 tokens/s + margin
    name, payload, mime = http.files["file"]
    assert mime == "audio/wav" and payload.startswith(b"RIFF")
    assert adapter.max_piece_s == 30.0 and adapter.postprocess("  Hi. ") == "Hi."


def test_nemo_speechlm_chat_turn_is_the_offline_text_with_the_tag():
    decode = DecodeSettings()
    adapter = ServerAdapter.create("nemo-speechlm", "salm", decode, 4096)
    http = adapter.request(piece(1.0)).prompt["http"]
    assert http.path == CHAT_PATH
    text_part, audio_part = http.json["messages"][0]["content"]
    assert text_part == {"type": "text", "text": "Transcribe the following: <|audio|>"}
    assert audio_part["input_audio"]["format"] == "wav"
    assert base64.b64decode(audio_part["input_audio"]["data"]).startswith(b"RIFF")
    assert http.json["temperature"] == 0.0 and http.json["model"] == "salm"
    assert adapter.max_piece_s == pytest.approx((4096 - 512 - 64 - 1) / 12.5, abs=0.1)
    assert adapter.postprocess("<think>\n</think>\nhello") == "hello"
    assert adapter.postprocess("\n</think>\nhello") == "hello"  # the template opened <think> in the prompt


def test_chat_audio_places_the_placeholder_only_when_known():
    assert chat_text("chat-audio", DecodeSettings(prompt="Transcribe:")) == "Transcribe:"
    custom = DecodeSettings(prompt="Transcribe:", audio_placeholder="<|AUDIO|>")
    assert chat_text("chat-audio", custom) == "Transcribe: <|AUDIO|>"
    assert chat_text("nemo-speechlm", DecodeSettings(prompt="")) == "<|audio|>"


def test_unknown_family_is_a_usage_error():
    from speechlm_batch.errors import UsageError

    with pytest.raises(UsageError):
        ServerAdapter.create("ctc", "m", DecodeSettings(), 448)


def test_parse_reply_both_shapes_and_garbage():
    assert parse_reply(TRANSCRIPTION_PATH, {"text": " a"}).text == " a"
    chat = parse_reply(CHAT_PATH, {"choices": [{"message": {"content": None}}], "usage": {"prompt_tokens": 7}})
    assert chat.text == "" and chat.prompt_tokens == 7
    for path, body in ((TRANSCRIPTION_PATH, {"error": "x"}), (CHAT_PATH, {"choices": []}), (CHAT_PATH, [1])):
        with pytest.raises(ValueError):
            parse_reply(path, body)
