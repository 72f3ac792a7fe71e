"""Model families, one small module each, registered here explicitly.

`--family` choices and `speechlm-batch models` are generated from FAMILIES. A family is chosen from the
model's architecture unless the user names one.
"""

from __future__ import annotations

from collections.abc import Callable

from speechlm_batch.adapters.base import ModelAdapter, ModelInfo
from speechlm_batch.adapters.whisper import WhisperAdapter
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DecodeSettings

AdapterFactory = Callable[[ModelInfo, DecodeSettings], ModelAdapter]

FAMILIES: dict[str, AdapterFactory] = {
    WhisperAdapter.family: WhisperAdapter.from_model,
}

# Architecture name -> family, for models whose family is not obvious from their capabilities.
ARCHITECTURE_FAMILIES: dict[str, str] = {
    "WhisperForConditionalGeneration": "whisper",
}


def detect_family(info: ModelInfo) -> str:
    """The family for a loaded model: by architecture name, else by what the vLLM model class supports."""
    for arch in info.architectures:
        if arch in ARCHITECTURE_FAMILIES:
            return ARCHITECTURE_FAMILIES[arch]
    if info.model_cls is not None and getattr(info.model_cls, "supports_transcription", False):
        return "transcription"
    return "chat-audio"


def resolve_adapter(info: ModelInfo, decode: DecodeSettings) -> ModelAdapter:
    family = decode.family or detect_family(info)
    factory = FAMILIES.get(family)
    if factory is None:
        raise UsageError(
            f"unknown model family {family!r} for {', '.join(info.architectures) or info.name}",
            hint=f"choose --family from: {', '.join(sorted(FAMILIES))}",
        )
    return factory(info, decode)


# What `speechlm-batch models` shows per family: how it prompts, its longest piece, and real models.
FAMILY_DOCS: dict[str, dict[str, str]] = {
    "whisper": {
        "prompt": "<|startoftranscript|><|LANG|><|transcribe|><|notimestamps|> (.en: <|startoftranscript|><|notimestamps|>)",
        "max_piece": "30 s",
        "detect": "WhisperForConditionalGeneration",
        "examples": "whisper-base, whisper-tiny.en (offline); openai/whisper-large-v3-turbo",
    },
}


def describe_families() -> list[dict[str, str]]:
    return [{"family": name, **FAMILY_DOCS.get(name, {"prompt": "", "max_piece": "", "detect": "", "examples": ""})} for name in FAMILIES]
