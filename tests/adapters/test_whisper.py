"""Whisper's decoder prompt: multilingual vs English-only (.en), as strings and as the checkpoints' token ids."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from speechlm_batch.adapters import detect_family, resolve_adapter
from speechlm_batch.adapters.whisper import WhisperAdapter, decoder_prompt
from speechlm_batch.errors import UsageError
from speechlm_batch.fsutil import cache_dir
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece

MULTILINGUAL = SimpleNamespace(vocab_size=51865, suppress_tokens=[1, 2, 7])
ENGLISH_ONLY = SimpleNamespace(vocab_size=51864, suppress_tokens=None)


class LanguageTokens:
    """The part of a Whisper tokenizer the adapter asks: language token ids."""

    unk_token_id = 50256

    def convert_tokens_to_ids(self, token):
        return {"<|en|>": 50259, "<|de|>": 50261}.get(token, self.unk_token_id)


def test_multilingual_prompt_has_language_and_task():
    assert decoder_prompt(True, "en") == "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    assert decoder_prompt(True, "de") == "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>"


def test_english_only_prompt_has_neither():
    assert decoder_prompt(False, "en") == "<|startoftranscript|><|notimestamps|>"


def test_adapter_picks_the_prompt_from_the_vocabulary(make_info):
    multi = WhisperAdapter.from_model(make_info(LanguageTokens(), hf_config=MULTILINGUAL, max_model_len=448), DecodeSettings())
    english = WhisperAdapter.from_model(make_info(LanguageTokens(), hf_config=ENGLISH_ONLY, max_model_len=448), DecodeSettings())
    assert multi.decoder_prompt == "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    assert english.decoder_prompt == "<|startoftranscript|><|notimestamps|>"
    assert (multi.ceiling_tokens, english.ceiling_tokens) == (444, 446)


def test_unknown_language_is_a_usage_error(make_info):
    with pytest.raises(UsageError, match="no language token"):
        WhisperAdapter.from_model(make_info(LanguageTokens(), hf_config=MULTILINGUAL), DecodeSettings(language="xx"))


def test_request_is_explicit_encoder_decoder_with_suppressed_tokens(make_info):
    adapter = WhisperAdapter.from_model(make_info(LanguageTokens(), hf_config=MULTILINGUAL, max_model_len=448), DecodeSettings())
    samples = np.zeros(16000, dtype=np.float32)
    request = adapter.request(AudioPiece("u", 0, 1, samples, 16000))
    assert request.prompt["encoder_prompt"]["prompt"] == ""
    assert request.prompt["encoder_prompt"]["multi_modal_data"]["audio"][0] is samples
    assert request.prompt["decoder_prompt"] == adapter.decoder_prompt
    assert request.sampling["logit_bias"] == {1: -100.0, 2: -100.0, 7: -100.0}
    assert adapter.max_piece_s == 30.0 and adapter.postprocess("  hi ") == "hi"


def test_whisper_architecture_picks_the_family(make_info):
    info = make_info(LanguageTokens(), hf_config=MULTILINGUAL, architectures=("WhisperForConditionalGeneration",))
    assert detect_family(info) == "whisper"
    assert isinstance(resolve_adapter(info, DecodeSettings()), WhisperAdapter)


@pytest.mark.parametrize(
    ("alias", "expected_ids"),
    [
        ("whisper-base", [50258, 50259, 50359, 50363]),  # sot, en, transcribe, notimestamps
        ("whisper-tiny.en", [50257, 50362]),  # English-only vocabulary: sot, notimestamps
    ],
)
def test_converted_checkpoints_get_their_exact_token_ids(alias, expected_ids, make_info):
    from transformers import AutoConfig, AutoTokenizer

    folder = cache_dir() / "models" / alias
    if not (folder / "config.json").is_file():
        pytest.skip(f"{alias} not converted yet (python -m speechlm_batch.models.store {alias})")
    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    adapter = WhisperAdapter.from_model(make_info(tokenizer, hf_config=config, max_model_len=448), DecodeSettings())
    ids = tokenizer.encode(adapter.decoder_prompt, add_special_tokens=False)
    assert ids == expected_ids
    assert len(adapter.suppress_tokens) > 0  # the checkpoint's suppress_tokens reach logit_bias
