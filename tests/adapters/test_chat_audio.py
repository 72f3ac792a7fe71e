"""chat-audio: the chat-template prompt with the model's own placeholder, limits, and <think> stripping."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from speechlm_batch.adapters import chat_audio, detect_family, resolve_adapter
from speechlm_batch.adapters.chat_audio import ChatAudioAdapter, strip_leading_think
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece


class Qwen2AudioLike:
    """What vLLM's Qwen2-Audio class answers (it counts audio items from 1 in its chat path)."""

    supports_transcription = False

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str:
        return f"Audio {i}: <|audio_bos|><|AUDIO|><|audio_eos|>"


class NoPlaceholder:
    pass


class TranscriptionCapable:
    supports_transcription = True

    @classmethod
    def get_speech_to_text_config(cls, model_config, task_type):
        assert task_type == "transcribe"
        return SimpleNamespace(sample_rate=24000.0, max_audio_clip_s=12)

    @classmethod
    def get_placeholder_str(cls, modality, i):
        return "<|audio|>"


def test_prompt_is_the_chat_template_with_the_models_placeholder(chatml_tokenizer, make_info):
    adapter = ChatAudioAdapter.from_model(make_info(chatml_tokenizer, model_cls=Qwen2AudioLike), DecodeSettings())
    assert adapter.prompt_text == (
        "<|im_start|>user\nTranscribe the following: Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = chatml_tokenizer.encode(adapter.prompt_text, add_special_tokens=False)
    assert ids.count(chatml_tokenizer.convert_tokens_to_ids("<|AUDIO|>")) == 1
    assert adapter.prompt_tokens == len(ids)


def test_explicit_placeholder_and_prompt_win(chatml_tokenizer, make_info):
    decode = DecodeSettings(prompt="Write down what is said.", audio_placeholder="<|AUDIO|>")
    adapter = ChatAudioAdapter.from_model(make_info(chatml_tokenizer, model_cls=Qwen2AudioLike), decode)
    assert "<|im_start|>user\nWrite down what is said. <|AUDIO|><|im_end|>\n" in adapter.prompt_text


def test_default_placeholder_when_the_class_has_none(chatml_tokenizer, make_info):
    adapter = ChatAudioAdapter.from_model(make_info(chatml_tokenizer, model_cls=NoPlaceholder), DecodeSettings())
    assert "Transcribe the following: <|audio|><|im_end|>" in adapter.prompt_text


def test_no_chat_template_is_a_usage_error(make_info):
    with pytest.raises(UsageError, match="chat template"):
        ChatAudioAdapter.from_model(make_info(SimpleNamespace(chat_template=None)), DecodeSettings())


def test_request_passes_audio_with_its_rate_and_caps_tokens(chatml_tokenizer, make_info):
    info = make_info(chatml_tokenizer, model_cls=Qwen2AudioLike, max_model_len=256)
    adapter = ChatAudioAdapter.from_model(info, DecodeSettings(max_tokens=10_000))
    samples = np.ones(8000, dtype=np.float32)
    request = adapter.request(AudioPiece("u", 0, 1, samples, 16000))
    assert request.prompt["prompt"] == adapter.prompt_text
    assert request.prompt["multi_modal_data"]["audio"][0] is samples
    assert request.prompt["multi_modal_data"]["audio"][1] == 16000
    assert request.max_tokens == 256 - adapter.prompt_tokens


def test_limits_from_the_models_transcription_config(chatml_tokenizer, make_info):
    info = make_info(chatml_tokenizer, model_cls=TranscriptionCapable, model_config=object())
    adapter = ChatAudioAdapter.from_model(info, DecodeSettings())
    assert (adapter.sample_rate, adapter.max_piece_s) == (24000, 12.0)


def test_limits_from_the_feature_extractor(chatml_tokenizer, make_info, monkeypatch):
    extractor = SimpleNamespace(sampling_rate=16000, chunk_length=20)
    monkeypatch.setattr(chat_audio, "_feature_extractor", lambda info: extractor)
    adapter = ChatAudioAdapter.from_model(make_info(chatml_tokenizer, model_cls=Qwen2AudioLike), DecodeSettings())
    assert (adapter.sample_rate, adapter.max_piece_s) == (16000, 20.0)


def test_default_limits_without_model_information(chatml_tokenizer, make_info):
    adapter = ChatAudioAdapter.from_model(make_info(chatml_tokenizer, model_cls=Qwen2AudioLike), DecodeSettings())
    assert (adapter.sample_rate, adapter.max_piece_s) == (16000, chat_audio.DEFAULT_MAX_PIECE_S)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<think>\nreasoning\n</think>\n\nhello there", "hello there"),
        ("\n<think>r</think> hello", "hello"),
        ("hello <think>x</think>", "hello <think>x</think>"),
        (" plain text ", "plain text"),
    ],
)
def test_leading_think_is_stripped(raw, clean):
    assert strip_leading_think(raw) == clean


def test_audio_llms_without_transcription_support_default_to_chat_audio(chatml_tokenizer, make_info):
    info = make_info(chatml_tokenizer, model_cls=Qwen2AudioLike, architectures=("Qwen2AudioForConditionalGeneration",))
    assert detect_family(info) == "chat-audio"
    assert isinstance(resolve_adapter(info, DecodeSettings()), ChatAudioAdapter)
