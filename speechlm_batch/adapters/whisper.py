"""Whisper (encoder-decoder): explicit encoder / decoder prompts.

The decoder prompt is built here rather than through vLLM's `get_generation_prompt`, which writes the
non-Whisper token `<|prev|>` for text prompts (vllm-project/vllm#53206) and always adds a language token:
English-only checkpoints (`*.en`) must see `<|startoftranscript|><|notimestamps|>` or they degrade badly.
The checkpoint's `suppress_tokens` are applied through `logit_bias`, as transformers applies them, so both
engines decode the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from speechlm_batch.adapters.base import EngineRequest, ModelInfo, max_tokens_for
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece

WHISPER_SAMPLE_RATE = 16000
WHISPER_WINDOW_S = 30.0  # the encoder sees 30 s; vLLM truncates longer audio silently
MULTILINGUAL_VOCAB_SIZE = 51865  # English-only checkpoints have 51864
SUPPRESSED_LOGIT = -100.0


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

    @classmethod
    def from_model(cls, info: ModelInfo, decode: DecodeSettings) -> WhisperAdapter:
        multilingual = getattr(info.hf_config, "vocab_size", 0) >= MULTILINGUAL_VOCAB_SIZE
        prompt = decoder_prompt(multilingual, decode.language)
        if multilingual and info.tokenizer is not None:
            _check_language_token(info.tokenizer, decode.language)
        suppress = tuple(getattr(info.hf_config, "suppress_tokens", None) or ())
        prompt_tokens = 4 if multilingual else 2
        device = "cuda" if info.accelerator == "cuda" else None
        return cls(prompt, info.max_model_len - prompt_tokens, decode, suppress, device)

    def request(self, piece: AudioPiece) -> EngineRequest:
        prompt = {
            "encoder_prompt": {"prompt": "", "multi_modal_data": {"audio": (piece.samples, piece.sample_rate)}},
            "decoder_prompt": self.decoder_prompt,
        }
        sampling = {"logit_bias": {t: SUPPRESSED_LOGIT for t in self.suppress_tokens}} if self.suppress_tokens else {}
        processor = {"device": self.feature_device} if self.feature_device else {}
        return EngineRequest(prompt, max_tokens_for(piece.duration_s, self.decode, self.ceiling_tokens), sampling, processor)

    def postprocess(self, text: str) -> str:
        return text.strip()

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "decoder_prompt": self.decoder_prompt,
            "sample_rate": self.sample_rate,
            "max_piece_s": self.max_piece_s,
            "max_tokens_ceiling": self.ceiling_tokens,
            "suppressed_tokens": len(self.suppress_tokens),
        }


def decoder_prompt(multilingual: bool, language: str) -> str:
    """The decoder prefix: `.en` checkpoints take no language or task token."""
    if not multilingual:
        return "<|startoftranscript|><|notimestamps|>"
    return f"<|startoftranscript|><|{language}|><|transcribe|><|notimestamps|>"


def _check_language_token(tokenizer: Any, language: str) -> None:
    token = f"<|{language}|>"
    ids = tokenizer.convert_tokens_to_ids(token)
    if ids is None or ids == getattr(tokenizer, "unk_token_id", None):
        raise UsageError(f"Whisper has no language token {token}", hint="use --language with an ISO 639-1 code, e.g. en")
