"""Whisper's decoder prompt: multilingual vs English-only (.en), as strings and as the checkpoints' token ids."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from speechlm_batch.adapters import detect_family, resolve_adapter
from speechlm_batch.adapters.whisper import WhisperAdapter, decoder_prompt, ordered_segments
from speechlm_batch.errors import UsageError
from speechlm_batch.fsutil import cache_dir
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.timestamp_rules import TimestampRules
from speechlm_batch.types import AudioPiece, Segment

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


# -- timestamps (--timestamps)

def test_timestamp_prompt_opens_at_zero_instead_of_notimestamps():
    assert decoder_prompt(True, "en", timestamps=True) == "<|startoftranscript|><|en|><|transcribe|><|0.00|>"
    assert decoder_prompt(False, "en", timestamps=True) == "<|startoftranscript|><|0.00|>"
    assert decoder_prompt(True, "en") == decoder_prompt(True, "en", timestamps=False)  # off: prompt unchanged


def test_timestamps_off_leaves_decoding_as_it_was(make_info):
    adapter = WhisperAdapter.from_model(make_info(LanguageTokens(), hf_config=MULTILINGUAL), DecodeSettings())
    assert adapter.tokenizer is None and adapter.suppress_tokens == (1, 2, 7)
    assert adapter.postprocess(" a <|1.00|> b ") == "a <|1.00|> b"  # no stripping: text exactly as before
    assert adapter.segments("a b", [1, 2], 4.0) == (Segment(0.0, 4.0, "a b"),)


def test_timestamps_need_a_tokenizer_that_reads_them(make_info):
    with pytest.raises(UsageError, match="--timestamps needs a Whisper tokenizer"):
        WhisperAdapter.from_model(make_info(LanguageTokens(), hf_config=MULTILINGUAL), DecodeSettings(timestamps=True))


def test_ordered_segments_clamps_into_the_piece_and_keeps_order():
    raw = [(0.0, 2.0, " one"), (1.5, 3.0, "two "), (4.0, 40.0, "three"), (5.0, None, "four"), (6.0, 7.0, "  ")]
    assert ordered_segments(raw, 10.0) == (
        Segment(0.0, 2.0, "one"), Segment(2.0, 3.0, "two"), Segment(4.0, 10.0, "three"), Segment(10.0, 10.0, "four"),
    )


def _converted_tokenizer(alias):
    from transformers import AutoTokenizer

    folder = cache_dir() / "models" / alias
    if not (folder / "tokenizer.json").is_file():
        pytest.skip(f"{alias} not converted yet (python -m speechlm_batch.models.store {alias})")
    return AutoTokenizer.from_pretrained(folder)


def _ids(tokenizer, *parts):
    """Token ids of text pieces and "<|x.xx|>" / "<|endoftext|>" tokens, as the model generates them."""
    ids = []
    for part in parts:
        if part.startswith("<|"):
            ids.append(tokenizer.convert_tokens_to_ids(part))
        else:
            ids.extend(tokenizer.encode(part, add_special_tokens=False))
    return ids


@pytest.mark.parametrize("alias", ["whisper-base", "whisper-tiny.en"])
def test_segments_from_timestamp_tokens(alias, make_info):
    tokenizer = _converted_tokenizer(alias)
    config = MULTILINGUAL if alias == "whisper-base" else ENGLISH_ONLY
    adapter = WhisperAdapter.from_model(make_info(tokenizer, hf_config=config), DecodeSettings(timestamps=True))
    assert adapter.decoder_prompt.endswith("<|0.00|>")
    assert tokenizer.convert_tokens_to_ids("<|notimestamps|>") in adapter.suppress_tokens
    generated = _ids(tokenizer, " Hello world.", "<|2.40|>", "<|2.40|>", " Next one.", "<|5.00|>", "<|endoftext|>")
    assert adapter.segments("ignored", generated, 6.0) == (
        Segment(0.0, 2.4, "Hello world."), Segment(2.4, 5.0, "Next one."),
    )
    # Cut off before its closing timestamp (max tokens): the text runs to the end of the piece.
    cut = _ids(tokenizer, " Hello world.", "<|2.40|>", "<|3.00|>", " and then")
    assert adapter.segments("", cut, 6.0) == (Segment(0.0, 2.4, "Hello world."), Segment(3.0, 6.0, "and then"))
    assert adapter.postprocess(tokenizer.decode(generated, skip_special_tokens=False).replace("<|endoftext|>", "")) == (
        "Hello world. Next one."
    )


@pytest.mark.parametrize("alias", ["whisper-base", "whisper-tiny.en"])
def test_timestamp_requests_carry_the_rules_and_plain_ones_do_not(alias, make_info):
    tokenizer = _converted_tokenizer(alias)
    config = MULTILINGUAL if alias == "whisper-base" else ENGLISH_ONLY
    piece = AudioPiece("u", 0, 1, np.zeros(16000, dtype=np.float32), 16000)
    timed = WhisperAdapter.from_model(make_info(tokenizer, hf_config=config), DecodeSettings(timestamps=True))
    rules = TimestampRules.from_extra_args(timed.request(piece).sampling["extra_args"])
    ids = tokenizer.convert_tokens_to_ids
    assert rules.no_timestamps_id == ids("<|notimestamps|>") and rules.timestamp_begin == ids("<|0.00|>")
    assert rules.eos_id == ids("<|endoftext|>") and rules.opening == (ids("<|0.00|>"),)  # the prompt's last token
    plain = WhisperAdapter.from_model(make_info(tokenizer, hf_config=config), DecodeSettings())
    assert "extra_args" not in plain.request(piece).sampling  # timestamps off: the processor never engages


CAPTURED = Path(__file__).parents[1] / "fixtures" / "whisper_base_timestamp_ids.json"


@pytest.mark.parametrize("index", [0, 1, 2])
def test_segments_of_ids_captured_from_the_real_model(index, make_info):
    """What vLLM returned for real speech: text (with timestamps as text) and ids, parsed the same way."""
    piece = json.loads(CAPTURED.read_text())["pieces"][index]
    tokenizer = _converted_tokenizer("whisper-base")
    adapter = WhisperAdapter.from_model(make_info(tokenizer, hf_config=MULTILINGUAL), DecodeSettings(timestamps=True))
    text = adapter.postprocess(piece["text"])
    assert "<|" not in text and text
    segments = adapter.segments(text, piece["token_ids"], piece["duration_s"])
    assert " ".join(s.text for s in segments) == text  # the segments hold the transcript, no more, no less
    assert all(0.0 <= s.start_s <= s.end_s <= piece["duration_s"] for s in segments)
    assert all(a.end_s <= b.start_s for a, b in zip(segments, segments[1:]))
    closing = [tokenizer.convert_ids_to_tokens(i) for i in piece["token_ids"] if i > tokenizer.convert_tokens_to_ids("<|notimestamps|>")]
    if closing:  # the model closed its last segment: that is where the transcript ends
        assert segments[-1].end_s == pytest.approx(float(closing[-1][2:-2]))
    else:  # no timestamp at all (vLLM has no timestamp rules): one segment over the piece
        assert segments == (Segment(0.0, piece["duration_s"], text),)
