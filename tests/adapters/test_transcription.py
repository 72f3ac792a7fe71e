"""transcription: the model class's own prompt / config / post-processing, behind a version-pinned wrapper."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from speechlm_batch.adapters import detect_family, resolve_adapter, transcription
from speechlm_batch.adapters.transcription import SpeechToTextApi, TranscriptionAdapter, check_api
from speechlm_batch.errors import EngineError, UsageError
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece


@dataclass
class Params:
    """Field for field vLLM 0.32/0.33's SpeechToTextParams."""

    audio: Any
    stt_config: Any
    model_config: Any
    language: str | None = None
    hotwords: str | None = None
    task_type: str = "transcribe"
    request_prompt: str = ""
    to_language: str | None = None


class AsrModel:
    """A SupportsTranscription model class as vLLM defines one (Qwen3-ASR-like output format)."""

    supports_transcription = True
    seen: list[Params] = []
    clip_s: float | None = 30

    @classmethod
    def validate_language(cls, language):
        if language not in {"en", "de"}:
            raise ValueError(f"Unsupported language: {language!r}")
        return language

    @classmethod
    def get_speech_to_text_config(cls, model_config, task_type):
        return SimpleNamespace(sample_rate=16000.0, max_audio_clip_s=cls.clip_s)

    @classmethod
    def get_generation_prompt(cls, stt_params):
        cls.seen.append(stt_params)
        return {"prompt_token_ids": [1, 2, 3, 4], "multi_modal_data": {"audio": stt_params.audio}}

    @classmethod
    def get_num_audio_tokens(cls, audio_duration_s, stt_config, model_config):
        return int(audio_duration_s * 25)

    @classmethod
    def post_process_output(cls, text):
        return text.split("<asr_text>", 1)[-1]


class NoClip(AsrModel):
    clip_s = None


class OldSignature(AsrModel):
    @classmethod
    def get_generation_prompt(cls, audio, stt_config, model_config, language, task_type, request_prompt, to_language):
        raise AssertionError("never called")


@pytest.fixture
def api(monkeypatch):
    api = SpeechToTextApi(Params, "0.32.0")
    monkeypatch.setattr(SpeechToTextApi, "load", classmethod(lambda cls: api))
    AsrModel.seen.clear()
    return api


def _adapter(make_info, model_cls=AsrModel, decode=DecodeSettings(), max_model_len=2048):
    info = make_info(None, model_cls=model_cls, model_config="MODEL_CONFIG", max_model_len=max_model_len)
    return TranscriptionAdapter.from_model(info, decode)


def test_prompt_is_the_models_own_and_never_gets_request_prompt(api, make_info):
    adapter = _adapter(make_info, decode=DecodeSettings(language="de"))
    samples = np.zeros(16000, dtype=np.float32)
    request = adapter.request(AudioPiece("u", 0, 1, samples, 16000))
    assert request.prompt == {"prompt_token_ids": [1, 2, 3, 4], "multi_modal_data": {"audio": samples}}
    params = AsrModel.seen[-1]
    assert params.audio is samples and params.model_config == "MODEL_CONFIG"
    assert (params.language, params.task_type, params.request_prompt, params.to_language) == ("de", "transcribe", "", None)


def test_limits_come_from_the_speech_to_text_config(api, make_info):
    adapter = _adapter(make_info)
    assert (adapter.sample_rate, adapter.max_piece_s) == (16000, 30.0)
    assert _adapter(make_info, NoClip).max_piece_s is None  # no clip length: the whole file in one piece


def test_output_uses_the_models_post_processing(api, make_info):
    assert _adapter(make_info).postprocess("language English<asr_text> ask not ") == "ask not"


def test_token_cap_leaves_room_for_prompt_and_audio_tokens(api, make_info):
    adapter = _adapter(make_info, decode=DecodeSettings(tokens_per_s=1000.0), max_model_len=300)
    request = adapter.request(AudioPiece("u", 0, 1, np.zeros(16000 * 4, dtype=np.float32), 16000))
    assert request.max_tokens == 300 - 4 - 100  # 4 prompt tokens, 4 s x 25 audio tokens
    guarded = _adapter(make_info).request(AudioPiece("u", 0, 1, np.zeros(16000 * 4, dtype=np.float32), 16000))
    assert guarded.max_tokens == 12 * 4 + 16


def test_unsupported_language_is_a_usage_error(api, make_info):
    with pytest.raises(UsageError, match="Unsupported language"):
        _adapter(make_info, decode=DecodeSettings(language="xx"))


def test_model_without_transcription_support_is_refused(api, make_info):
    with pytest.raises(UsageError, match="SupportsTranscription"):
        _adapter(make_info, SimpleNamespace)


def test_old_multi_argument_signature_is_refused_clearly(api, make_info):
    with pytest.raises(EngineError, match="get_generation_prompt takes"):
        _adapter(make_info, OldSignature)


@pytest.mark.parametrize("version", ["0.31.2", "0.34.0", "1.0.0"])
def test_other_vllm_series_are_refused(version):
    with pytest.raises(EngineError, match="pinned to vLLM") as err:
        check_api(version, Params, AsrModel)
    assert version in err.value.hint


def test_changed_params_fields_are_refused():
    @dataclass
    class Renamed:
        audio: Any
        config: Any

    with pytest.raises(EngineError, match="lacks stt_config"):
        check_api("0.33.1", Renamed)


def test_supported_series_pass():
    check_api("0.32.0", Params, AsrModel)
    check_api("0.33.0", Params, AsrModel)
    assert transcription.SUPPORTED_VLLM_SERIES == ("0.32", "0.33")


def test_transcription_models_are_detected_by_capability(api, make_info):
    info = make_info(None, model_cls=AsrModel, model_config="MODEL_CONFIG", architectures=("GlmAsrForConditionalGeneration",))
    assert detect_family(info) == "transcription"
    assert isinstance(resolve_adapter(info, DecodeSettings()), TranscriptionAdapter)
