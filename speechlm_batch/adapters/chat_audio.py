"""`chat-audio`: decoder-only audio LLMs prompted through their tokenizer's chat template.

Qwen2-Audio, Ultravox, Phi-4-MM, Nemotron-3-Nano-Omni, Audio Flamingo, MiDashengLM...: one user turn
`"{prompt} {placeholder}"` rendered with `apply_chat_template(add_generation_prompt=True)`, the audio passed
as `multi_modal_data`. The placeholder is the one vLLM's own chat path inserts for the first audio of a
message (`get_placeholder_str("audio", 1)`: vLLM counts items from 1, so Qwen2-Audio gets its
"Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>"); `--audio-placeholder` overrides it, and it is the fallback
for model classes without one.

Longest piece: the model's own clip length when it declares one (a SupportsTranscription config, else its
feature extractor's `chunk_length`), else DEFAULT_MAX_PIECE_S. Most audio LLMs encode through a
Whisper-style 30 s window and drop the rest silently, so 30 s is the safe default.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from speechlm_batch.adapters.base import EngineRequest, ModelInfo, max_tokens_for, whole_piece
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DEFAULT_AUDIO_PLACEHOLDER, DecodeSettings
from speechlm_batch.types import AudioPiece, Seconds, Segment

DEFAULT_SAMPLE_RATE = 16000
DEFAULT_MAX_PIECE_S = 30.0
# A reasoning block the model opened itself; only a leading one is removed (transcripts may mention tags).
LEADING_THINK = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)


def strip_leading_think(text: str) -> str:
    """Remove one leading `<think>...</think>` block and surrounding whitespace."""
    return LEADING_THINK.sub("", text, count=1).strip()


def chat_prompt(tokenizer: Any, task_prompt: str, placeholder: str) -> str:
    """The model's chat template applied to one user turn holding the task prompt and the audio."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise UsageError(
            "the model's tokenizer has no chat template",
            hint="use --tokenizer with one that has a chat template, or another --family",
        )
    content = f"{task_prompt} {placeholder}" if task_prompt else placeholder
    messages = [{"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def model_placeholder(info: ModelInfo, decode: DecodeSettings) -> str:
    """--audio-placeholder when the user set one, else the model class's, else the default."""
    if decode.audio_placeholder != DEFAULT_AUDIO_PLACEHOLDER:
        return decode.audio_placeholder
    getter = getattr(info.model_cls, "get_placeholder_str", None)
    if getter is not None:
        try:
            found = getter("audio", 1)
        except (ValueError, NotImplementedError, TypeError):
            found = None
        if found:
            return found
    return decode.audio_placeholder


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of an already templated prompt (the template wrote any BOS itself)."""
    return len(tokenizer.encode(text, add_special_tokens=False))


def model_audio_limits(info: ModelInfo) -> tuple[int, float | None]:
    """(sample rate, longest piece in seconds) as the model declares them; defaults when it does not."""
    cls = info.model_cls
    if cls is not None and getattr(cls, "supports_transcription", False) and info.model_config is not None:
        try:
            stt = cls.get_speech_to_text_config(info.model_config, "transcribe")
            return int(stt.sample_rate), (float(stt.max_audio_clip_s) if stt.max_audio_clip_s else None)
        except Exception:  # model-specific loaders; fall through to the feature extractor
            pass
    extractor = _feature_extractor(info)
    if extractor is not None:
        rate = int(getattr(extractor, "sampling_rate", DEFAULT_SAMPLE_RATE))
        chunk_s = getattr(extractor, "chunk_length", None)
        return rate, float(chunk_s) if chunk_s else DEFAULT_MAX_PIECE_S
    return DEFAULT_SAMPLE_RATE, DEFAULT_MAX_PIECE_S


def _feature_extractor(info: ModelInfo) -> Any:
    if info.model_config is None:
        return None
    try:
        from vllm.transformers_utils.processor import cached_processor_from_config

        return getattr(cached_processor_from_config(info.model_config), "feature_extractor", None)
    except Exception:  # no HF processor for this model (plugins, custom code)
        return None


@dataclass(frozen=True)
class ChatAudioAdapter:
    family: ClassVar[str] = "chat-audio"
    prompt_text: str
    prompt_tokens: int
    max_model_len: int
    decode: DecodeSettings
    sample_rate: int = DEFAULT_SAMPLE_RATE
    max_piece_s: float | None = DEFAULT_MAX_PIECE_S

    @classmethod
    def from_model(cls, info: ModelInfo, decode: DecodeSettings) -> ChatAudioAdapter:
        prompt = chat_prompt(info.tokenizer, decode.prompt, model_placeholder(info, decode))
        rate, max_piece_s = model_audio_limits(info)
        return cls(prompt, count_tokens(info.tokenizer, prompt), info.max_model_len, decode, rate, max_piece_s)

    def request(self, piece: AudioPiece) -> EngineRequest:
        prompt = {"prompt": self.prompt_text, "multi_modal_data": {"audio": (piece.samples, piece.sample_rate)}}
        return EngineRequest(prompt, max_tokens_for(piece.duration_s, self.decode, self.max_model_len - self.prompt_tokens))

    def postprocess(self, text: str) -> str:
        return strip_leading_think(text)

    def segments(self, text: str, token_ids: Sequence[int], duration_s: Seconds) -> tuple[Segment, ...]:
        return whole_piece(text, duration_s)  # no timestamp tokens: the piece is the finest span known

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "prompt": self.prompt_text,
            "prompt_tokens": self.prompt_tokens,
            "sample_rate": self.sample_rate,
            "max_piece_s": self.max_piece_s,
        }
