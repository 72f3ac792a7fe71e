"""Model families, one small module each, registered here explicitly.

`--family` choices and `speechlm-batch models` are generated from FAMILIES. A family is chosen from the
model's architecture unless the user names one.
"""

from __future__ import annotations

from collections.abc import Callable

from speechlm_batch.adapters.base import ModelAdapter, ModelInfo
from speechlm_batch.adapters.chat_audio import ChatAudioAdapter
from speechlm_batch.adapters.nemo_speechlm import NeMoSpeechLMAdapter
from speechlm_batch.adapters.transcription import TranscriptionAdapter
from speechlm_batch.adapters.whisper import WhisperAdapter
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DecodeSettings

AdapterFactory = Callable[[ModelInfo, DecodeSettings], ModelAdapter]

FAMILIES: dict[str, AdapterFactory] = {
    WhisperAdapter.family: WhisperAdapter.from_model,
    TranscriptionAdapter.family: TranscriptionAdapter.from_model,
    ChatAudioAdapter.family: ChatAudioAdapter.from_model,
    NeMoSpeechLMAdapter.family: NeMoSpeechLMAdapter.from_model,
}

# Architecture name -> family, for models whose family is not obvious from their capabilities.
ARCHITECTURE_FAMILIES: dict[str, str] = {
    "WhisperForConditionalGeneration": "whisper",
    # The NeMo Speech LM's names across plugin versions (NeMo Speech PR #15520 and its predecessors).
    "NeMoSpeechLMForConditionalGeneration": "nemo-speechlm",
    "NeMoSpeechLMHybridForConditionalGeneration": "nemo-speechlm",
    "NemotronNanoASRForConditionalGeneration": "nemo-speechlm",
}


# config.json model_type -> family, for checkpoints whose architecture name is not one of the above.
MODEL_TYPE_FAMILIES: dict[str, str] = {"nemo_speechlm": "nemo-speechlm"}


def detect_family(info: ModelInfo) -> str:
    """The family: by architecture name, else by model_type, else by what the vLLM model class supports."""
    for arch in info.architectures:
        if arch in ARCHITECTURE_FAMILIES:
            return ARCHITECTURE_FAMILIES[arch]
    if getattr(info.hf_config, "model_type", None) in MODEL_TYPE_FAMILIES:
        return MODEL_TYPE_FAMILIES[info.hf_config.model_type]
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
        "prompt": "<|startoftranscript|><|LANG|><|transcribe|><|notimestamps|> (.en: <|startoftranscript|><|notimestamps|>; "
        "--timestamps: <|0.00|> in place of <|notimestamps|>)",
        "max_piece": "30 s",
        "detect": "WhisperForConditionalGeneration",
        "examples": "whisper-base, whisper-tiny.en (offline); openai/whisper-large-v3-turbo",
        "command": "speechlm-batch transcribe data.jsonl --model openai/whisper-large-v3-turbo --language en",
    },
    "transcription": {
        "prompt": "the model's own get_generation_prompt (as vLLM's /v1/audio/transcriptions), --language",
        "max_piece": "the model's SpeechToTextConfig.max_audio_clip_s (none: whole file)",
        "detect": "any vLLM model class implementing SupportsTranscription",
        "examples": "Qwen/Qwen3-ASR-0.6B, zai-org/GLM-ASR-Nano-2512, ibm-granite/granite-4.0-1b-speech",
        "command": "speechlm-batch transcribe data.jsonl --model Qwen/Qwen3-ASR-0.6B --family transcription",
    },
    "chat-audio": {
        "prompt": "chat template, user turn '{--prompt} {placeholder}'; placeholder = the model's (get_placeholder_str)",
        "max_piece": "the model's clip length (feature extractor chunk_length), else 30 s",
        "detect": "other audio LLMs (no SupportsTranscription)",
        "examples": "Qwen/Qwen2-Audio-7B-Instruct, fixie-ai/ultravox-v0_5-llama-3_2-1b",
        "command": "speechlm-batch transcribe data.jsonl --model Qwen/Qwen2-Audio-7B-Instruct --family chat-audio",
    },
    "nemo-speechlm": {
        "prompt": "chat template, user turn '{--prompt} <|audio|>' (NemotronH: ends '<|im_start|>assistant\\n<think>\\n')",
        "max_piece": "(max_model_len - 512 - prompt) / 12.5 tokens/s: ~280 s at 4096",
        "detect": "model_type nemo_speechlm, NeMoSpeechLM(Hybrid)ForConditionalGeneration, "
        "NemotronNanoASRForConditionalGeneration (plugin picked too)",
        "examples": "SALM exports of Canary + Qwen3 / Nemotron-Nano-v3 (NVIDIA's plugin: PyPI nemo-toolkit 3.0.0 "
        "on vLLM 0.28, the .venv-nemo environment)",
        "command": ".venv-nemo/bin/speechlm-batch transcribe data.jsonl --model ./my-salm-export",
    },
}


def describe_families() -> list[dict[str, str]]:
    return [{"family": name, **FAMILY_DOCS.get(name, {"prompt": "", "max_piece": "", "detect": "", "examples": ""})} for name in FAMILIES]
