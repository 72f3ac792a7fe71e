"""Whisper (encoder-decoder): explicit encoder / decoder prompts.

The decoder prompt is built here rather than through vLLM's `get_generation_prompt`, which writes the
non-Whisper token `<|prev|>` for text prompts (vllm-project/vllm#53206) and always adds a language token:
English-only checkpoints (`*.en`) must see `<|startoftranscript|><|notimestamps|>` or they degrade badly.
The checkpoint's `suppress_tokens` are applied through `logit_bias`, as transformers applies them, so both
engines decode the same way.

With --timestamps the prompt ends `<|0.00|>` in place of `<|notimestamps|>` (as vLLM's own server asks for
verbose_json), `<|notimestamps|>` is suppressed (transformers' timestamp logits processor does the same), and
the generated ids are read back into segments by transformers' Whisper decoder (`WhisperTokenizer._decode_asr`,
the state machine its ASR pipeline runs). vLLM has no timestamp rules of its own: each request carries
Whisper's (speechlm_batch/timestamp_rules.py) in `extra_args` for the logits processor engine.py registers.
The times are still clamped into the piece and kept in order here, for engines without that processor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from speechlm_batch.adapters.base import EngineRequest, ModelInfo, max_tokens_for, whole_piece
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.timestamp_rules import EXTRA_ARGS_KEY, TimestampRules
from speechlm_batch.types import AudioPiece, Seconds, Segment

WHISPER_SAMPLE_RATE = 16000
WHISPER_WINDOW_S = 30.0  # the encoder sees 30 s; vLLM truncates longer audio silently
MULTILINGUAL_VOCAB_SIZE = 51865  # English-only checkpoints have 51864
SUPPRESSED_LOGIT = -100.0
NO_TIMESTAMPS = "<|notimestamps|>"
FIRST_TIMESTAMP = "<|0.00|>"
TIME_PRECISION_S = 0.02  # one timestamp step: the 30 s window over 1500 encoder positions
MAX_INITIAL_TIMESTAMP_INDEX = 50  # the first timestamp at most 1.00 s in (the checkpoints' generation config)
TIMESTAMP_TOKEN = re.compile(r"<\|\d+\.\d+\|>")  # as text: vLLM detokenizes them (they are not special tokens)


@dataclass(frozen=True)
class WhisperAdapter:
    family: ClassVar[str] = "whisper"
    decoder_prompt: str
    ceiling_tokens: int
    decode: DecodeSettings
    suppress_tokens: tuple[int, ...] = ()
    # On a GPU the log-mel is computed there (WhisperFeatureExtractor(device=...)): the offline front end is
    # the bottleneck, and this took it from 218x to 615x real time on an H200 (docs/benchmarks.md).
    feature_device: str | None = None
    sample_rate: int = WHISPER_SAMPLE_RATE
    max_piece_s: float = WHISPER_WINDOW_S
    tokenizer: Any = field(default=None, compare=False, repr=False)  # --timestamps: reads segments from ids
    timestamp_rules: TimestampRules | None = None  # --timestamps: applied while sampling (engine.py's processor)

    @classmethod
    def from_model(cls, info: ModelInfo, decode: DecodeSettings) -> WhisperAdapter:
        multilingual = getattr(info.hf_config, "vocab_size", 0) >= MULTILINGUAL_VOCAB_SIZE
        prompt = decoder_prompt(multilingual, decode.language, decode.timestamps)
        if multilingual and info.tokenizer is not None:
            _check_language_token(info.tokenizer, decode.language)
        suppress = tuple(getattr(info.hf_config, "suppress_tokens", None) or ())
        rules = None
        if decode.timestamps:
            rules = timestamp_rules(_timestamp_tokenizer(info.tokenizer))
            suppress += (rules.no_timestamps_id,)
        prompt_tokens = 4 if multilingual else 2
        device = "cuda" if info.accelerator == "cuda" else None
        tokenizer = info.tokenizer if decode.timestamps else None
        return cls(prompt, info.max_model_len - prompt_tokens, decode, suppress, device, tokenizer=tokenizer,
                   timestamp_rules=rules)

    def request(self, piece: AudioPiece) -> EngineRequest:
        prompt = {
            "encoder_prompt": {"prompt": "", "multi_modal_data": {"audio": (piece.samples, piece.sample_rate)}},
            "decoder_prompt": self.decoder_prompt,
        }
        sampling: dict[str, Any] = {}
        if self.suppress_tokens:
            sampling["logit_bias"] = {t: SUPPRESSED_LOGIT for t in self.suppress_tokens}
        if self.timestamp_rules is not None:
            sampling["extra_args"] = {EXTRA_ARGS_KEY: self.timestamp_rules.to_extra_args()}
        processor = {"device": self.feature_device} if self.feature_device else {}
        return EngineRequest(prompt, max_tokens_for(piece.duration_s, self.decode, self.ceiling_tokens), sampling, processor)

    def postprocess(self, text: str) -> str:
        if self.decode.timestamps:
            text = TIMESTAMP_TOKEN.sub("", text)
        return text.strip()

    def segments(self, text: str, token_ids: Sequence[int], duration_s: Seconds) -> tuple[Segment, ...]:
        if not self.decode.timestamps or self.tokenizer is None:
            return whole_piece(text, duration_s)
        return timestamp_segments(self.tokenizer, token_ids, duration_s)

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "decoder_prompt": self.decoder_prompt,
            "sample_rate": self.sample_rate,
            "max_piece_s": self.max_piece_s,
            "max_tokens_ceiling": self.ceiling_tokens,
            "suppressed_tokens": len(self.suppress_tokens),
            "timestamps": self.decode.timestamps,
        }


def decoder_prompt(multilingual: bool, language: str, timestamps: bool = False) -> str:
    """The decoder prefix: `.en` checkpoints take no language or task token; timestamps open at 0.00."""
    last = FIRST_TIMESTAMP if timestamps else NO_TIMESTAMPS
    if not multilingual:
        return f"<|startoftranscript|>{last}"
    return f"<|startoftranscript|><|{language}|><|transcribe|>{last}"


def timestamp_rules(tokenizer: Any) -> TimestampRules:
    """The rules for a checkpoint's vocabulary; the prompt's `<|0.00|>` opens the first segment."""
    ids = tokenizer.convert_tokens_to_ids
    return TimestampRules(ids(NO_TIMESTAMPS), int(tokenizer.eos_token_id), MAX_INITIAL_TIMESTAMP_INDEX,
                          opening=(ids(FIRST_TIMESTAMP),))


def timestamp_segments(tokenizer: Any, token_ids: Sequence[int], duration_s: Seconds) -> tuple[Segment, ...]:
    """Segments of one piece from the ids generated after a prompt that ended `<|0.00|>`.

    Text without a closing timestamp (cut off, or the model never closed it) runs to the end of the piece.
    """
    first = tokenizer.convert_tokens_to_ids(FIRST_TIMESTAMP)
    ids = np.array([[first, *token_ids]])  # the prompt's <|0.00|> opens the first segment
    _, parsed = tokenizer._decode_asr(
        [{"tokens": ids}], return_timestamps=True, return_language=False, time_precision=TIME_PRECISION_S
    )
    return ordered_segments([(*chunk["timestamp"], chunk["text"]) for chunk in parsed["chunks"]], duration_s)


def ordered_segments(raw: Sequence[tuple[float | None, float | None, str]], duration_s: Seconds) -> tuple[Segment, ...]:
    """(start, end, text) triples as segments inside [0, duration_s], each starting where the last one ended
    at the earliest; texts stripped, empty ones dropped, a missing end is the end of the piece."""
    segments: list[Segment] = []
    previous_end = 0.0
    for start, end, text in raw:
        text = text.strip()
        if not text:
            continue
        start_s = min(max(start or 0.0, previous_end), duration_s)
        end_s = min(max(duration_s if end is None else end, start_s), duration_s)
        segments.append(Segment(start_s, end_s, text))
        previous_end = end_s
    return tuple(segments)


def _timestamp_tokenizer(tokenizer: Any) -> Any:
    """The tokenizer, when it can read timestamps back (transformers' WhisperTokenizer); else a usage error."""
    if tokenizer is None or not hasattr(tokenizer, "_decode_asr") or tokenizer.convert_tokens_to_ids(
        FIRST_TIMESTAMP
    ) in (None, getattr(tokenizer, "unk_token_id", None)):
        raise UsageError(
            "--timestamps needs a Whisper tokenizer with timestamp tokens (<|0.00|> ...)",
            hint="use the checkpoint's own tokenizer (transformers' WhisperTokenizer), or drop --timestamps",
        )
    return tokenizer


def _check_language_token(tokenizer: Any, language: str) -> None:
    token = f"<|{language}|>"
    ids = tokenizer.convert_tokens_to_ids(token)
    if ids is None or ids == getattr(tokenizer, "unk_token_id", None):
        raise UsageError(f"Whisper has no language token {token}", hint="use --language with an ISO 639-1 code, e.g. en")
