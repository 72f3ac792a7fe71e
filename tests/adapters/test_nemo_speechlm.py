"""The NeMo Speech LM prompt, think stripping and piece arithmetic, against the backend that matched NeMo's WER."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from speechlm_batch.adapters import detect_family, resolve_adapter
from speechlm_batch.adapters.nemo_speechlm import AUDIO_TOKENS_PER_S, NeMoSpeechLMAdapter, max_piece_s, strip_think
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece

# NeMo-Skills backend @479caca, hard-coded before it switched to apply_chat_template (seed-backend.md §1.3).
BACKEND_PROMPT = (
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nTranscribe the following: <|audio|><|im_end|>\n"
    "<|im_start|>assistant\n<think>\n"
)
CONFIG = SimpleNamespace(audio_locator_tag="<|audio|>")


def _adapter(tokenizer, make_info, decode=DecodeSettings(), max_model_len=4096, hf_config=CONFIG):
    return NeMoSpeechLMAdapter.from_model(make_info(tokenizer, hf_config=hf_config, max_model_len=max_model_len), decode)


def test_prompt_is_the_backend_prompt_exactly(nemotron_tokenizer, make_info):
    adapter = _adapter(nemotron_tokenizer, make_info)
    assert adapter.prompt_text == BACKEND_PROMPT
    assert adapter.prompt_text.endswith("<|im_start|>assistant\n<think>\n")


def test_prompt_token_ids_hold_one_audio_token_and_end_in_think(nemotron_tokenizer, make_info):
    adapter = _adapter(nemotron_tokenizer, make_info)
    ids = nemotron_tokenizer.encode(adapter.prompt_text, add_special_tokens=False)
    audio_id = nemotron_tokenizer.convert_tokens_to_ids("<|audio|>")
    think_id = nemotron_tokenizer.convert_tokens_to_ids("<think>")
    assert ids.count(audio_id) == 1  # the plugin expands exactly one locator per audio
    assert ids[-2] == think_id and nemotron_tokenizer.decode(ids[-1:]) == "\n"
    assert adapter.prompt_tokens == len(ids) - 1


def test_task_prompt_and_placeholder_are_configurable(nemotron_tokenizer, make_info):
    decode = DecodeSettings(prompt="Transcribe with punctuation:", audio_placeholder="<audio>")
    adapter = _adapter(nemotron_tokenizer, make_info, decode)
    assert "<|im_start|>user\nTranscribe with punctuation: <audio><|im_end|>\n" in adapter.prompt_text


def test_audio_locator_tag_comes_from_the_checkpoint_config(nemotron_tokenizer, make_info):
    adapter = _adapter(nemotron_tokenizer, make_info, hf_config=SimpleNamespace(audio_locator_tag="<|speech|>"))
    assert "Transcribe the following: <|speech|><|im_end|>" in adapter.prompt_text


def test_tokenizer_without_chat_template_is_a_usage_error(make_info):
    tokenizer = SimpleNamespace(chat_template=None)
    with pytest.raises(UsageError, match="chat template"):
        _adapter(tokenizer, make_info)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("<think>\nhmm, speech\n</think>\n\nhello world", "hello world"),
        ("<think></think>hello", "hello"),
        ("  hello world  ", "hello world"),
        ("hello <think>not leading</think> world", "hello <think>not leading</think> world"),
        ("<think>a</think>b<think>c</think>", "b<think>c</think>"),  # only the leading block
    ],
)
def test_leading_think_block_is_stripped(raw, clean):
    assert strip_think(raw) == clean


def test_closing_half_is_stripped_when_the_prompt_opened_think(nemotron_tokenizer, make_info):
    adapter = _adapter(nemotron_tokenizer, make_info)
    assert adapter.prompt_opens_think
    assert adapter.postprocess("\n</think>\n\nask not") == "ask not"
    assert adapter.postprocess("ask not what your country") == "ask not what your country"
    assert strip_think("x</think>y") == "x</think>y"  # without an open prompt block nothing is guessed


def test_longest_piece_arithmetic_about_280_s_at_4096():
    # (4096 - 512 output - 30 prompt - 1) / 12.5 tokens/s = 284.2 s
    assert max_piece_s(4096, 30, 512) == pytest.approx(284.2)
    assert 275 <= max_piece_s(4096, 60, 512) <= 285


def test_longest_piece_uses_the_real_prompt_and_output_budget(nemotron_tokenizer, make_info):
    adapter = _adapter(nemotron_tokenizer, make_info, max_model_len=2048)
    expected = (2048 - 512 - adapter.prompt_tokens - 1) / AUDIO_TOKENS_PER_S
    assert adapter.max_piece_s == pytest.approx(expected, abs=0.1)
    assert adapter.max_piece_s <= expected
    smaller = _adapter(nemotron_tokenizer, make_info, DecodeSettings(max_tokens=64), max_model_len=2048)
    assert smaller.max_piece_s == pytest.approx((2048 - 64 - smaller.prompt_tokens - 1) / AUDIO_TOKENS_PER_S, abs=0.1)


def test_no_room_for_audio_is_a_usage_error(nemotron_tokenizer, make_info):
    with pytest.raises(UsageError, match="max_model_len"):
        _adapter(nemotron_tokenizer, make_info, max_model_len=520)


def test_request_carries_the_audio_and_a_context_safe_token_cap(nemotron_tokenizer, make_info):
    adapter = _adapter(nemotron_tokenizer, make_info, DecodeSettings(tokens_per_s=1000.0), max_model_len=2048)
    samples = np.zeros(16000 * 10, dtype=np.float32)
    request = adapter.request(AudioPiece("u", 0, 1, samples, 16000))
    assert request.prompt["prompt"] == adapter.prompt_text
    audio, rate = request.prompt["multi_modal_data"]["audio"]
    assert audio is samples and rate == 16000
    assert request.max_tokens == 2048 - adapter.prompt_tokens - 125  # 10 s = 125 audio tokens; budget 10016
    guarded = _adapter(nemotron_tokenizer, make_info).request(AudioPiece("u", 0, 1, samples, 16000))
    assert guarded.max_tokens == 12 * 10 + 16  # tokens_per_s budget + margin


@pytest.mark.parametrize(
    "arch",
    ["NeMoSpeechLMForConditionalGeneration", "NeMoSpeechLMHybridForConditionalGeneration", "NemotronNanoASRForConditionalGeneration"],
)
def test_every_nemo_speechlm_architecture_name_picks_the_family(arch, nemotron_tokenizer, make_info):
    info = make_info(nemotron_tokenizer, hf_config=CONFIG, architectures=(arch,))
    assert detect_family(info) == "nemo-speechlm"
    assert isinstance(resolve_adapter(info, DecodeSettings()), NeMoSpeechLMAdapter)


def test_model_type_picks_the_family_when_the_architecture_name_is_unknown(nemotron_tokenizer, make_info):
    config = SimpleNamespace(audio_locator_tag="<|audio|>", model_type="nemo_speechlm")
    info = make_info(nemotron_tokenizer, hf_config=config, architectures=("SomeFutureSpeechLM",))
    assert detect_family(info) == "nemo-speechlm"
