"""The interface every model family implements, and what the engine tells adapters about the model.

An adapter turns one audio piece into exactly what `LLM.generate` receives, the raw generated text into
the transcript, and (with --timestamps) the generated tokens into timed segments. Adapters do no I/O: the
engine loads the config and tokenizer and passes them in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece, Seconds, Segment

MAX_TOKENS_MARGIN = 16  # tokens on top of the duration budget: punctuation, special tokens, short clips


@dataclass(frozen=True)
class ModelInfo:
    """What the engine knows about the loaded model; adapters are built from this alone."""

    name: str  # resolved model path or hub id
    architectures: tuple[str, ...]
    hf_config: Any  # transformers PretrainedConfig
    tokenizer: Any  # the HF tokenizer vLLM uses (None if vLLM skipped it)
    max_model_len: int
    model_config: Any = None  # vllm ModelConfig (needed by the `transcription` family)
    model_cls: Any = None  # the vLLM model class, for SupportsTranscription models
    accelerator: str = "cpu"  # "cuda" when the engine runs on a GPU


@dataclass(frozen=True, slots=True)
class EngineRequest:
    """Exactly what the engine submits for one piece: the prompt and the sampling knobs that differ."""

    prompt: Mapping[str, Any]  # {"encoder_prompt", "decoder_prompt"} or {"prompt"|"prompt_token_ids", "multi_modal_data"}
    max_tokens: int
    sampling: Mapping[str, Any] = field(default_factory=dict)  # extra SamplingParams fields (e.g. logit_bias)
    processor_kwargs: Mapping[str, Any] = field(default_factory=dict)  # vLLM mm_processor_kwargs for this request


class ModelAdapter(Protocol):
    family: ClassVar[str]
    sample_rate: int
    max_piece_s: Seconds | None  # None: the model takes any length in one piece

    def request(self, piece: AudioPiece) -> EngineRequest: ...

    def postprocess(self, text: str) -> str: ...

    def segments(self, text: str, token_ids: Sequence[int], duration_s: Seconds) -> tuple[Segment, ...]:
        """Timed segments of one piece, in seconds from the piece's start; `text` is `postprocess`'s output."""
        ...

    def describe(self) -> dict[str, Any]: ...


def whole_piece(text: str, duration_s: Seconds) -> tuple[Segment, ...]:
    """The segments of a model without timestamps: the piece's text over the whole piece (none if no text)."""
    return (Segment(0.0, duration_s, text),) if text else ()


def max_tokens_for(duration_s: Seconds, decode: DecodeSettings, ceiling: int) -> int:
    """The runaway-output guard: a generous per-second token budget, never above what fits the context."""
    if decode.max_tokens is not None:
        return max(1, min(decode.max_tokens, ceiling))
    budget = math.ceil(decode.tokens_per_s * duration_s) + MAX_TOKENS_MARGIN
    return max(1, min(budget, ceiling))
