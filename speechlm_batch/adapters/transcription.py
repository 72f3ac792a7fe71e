"""`transcription`: any vLLM model implementing `SupportsTranscription`, prompted exactly as vLLM's server does.

Qwen3-ASR, Granite Speech, Voxtral, GLM-ASR, Cohere ASR, Gemma 3n, Kimi-Audio, FunASR, FireRedASR2, Qwen3-Omni...
each know their own prompt, clip length and output clean-up. This adapter asks the model class for them:
`get_speech_to_text_config` (sample rate; `max_audio_clip_s` becomes the longest piece, None = no split),
`get_generation_prompt` (the exact prompt `/v1/audio/transcriptions` would send) and `post_process_output`.

Those are vLLM-internal class methods whose signature changed (0.32 replaced the multi-argument
`get_generation_prompt(audio, stt_config, ...)` by one `SpeechToTextParams`), so every call goes through
`SpeechToTextApi`, which checks the installed vLLM once and fails with a clear message on a mismatch.
`request_prompt` is never passed: Whisper's implementation writes the non-token `<|prev|>` for it
(vllm-project/vllm#53206).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from speechlm_batch.adapters.base import EngineRequest, ModelInfo, max_tokens_for, whole_piece
from speechlm_batch.errors import EngineError, UsageError
from speechlm_batch.settings import DecodeSettings
from speechlm_batch.types import AudioPiece, Seconds, Segment

# vLLM releases whose SupportsTranscription API this wrapper was written and tested against.
SUPPORTED_VLLM_SERIES = ("0.32", "0.33")
REQUIRED_PARAM_FIELDS = ("audio", "stt_config", "model_config", "language", "task_type")
TASK = "transcribe"


@dataclass(frozen=True)
class SpeechToTextApi:
    """The pinned slice of vLLM's speech-to-text API this adapter uses."""

    params_cls: Any  # vllm.config.speech_to_text.SpeechToTextParams
    version: str

    @classmethod
    def load(cls) -> SpeechToTextApi:
        import vllm
        from vllm.config.speech_to_text import SpeechToTextParams

        version = getattr(vllm, "__version__", "unknown")
        check_api(version, SpeechToTextParams)
        return cls(SpeechToTextParams, version)

    def stt_config(self, model_cls: Any, model_config: Any) -> Any:
        return model_cls.get_speech_to_text_config(model_config, TASK)

    def prompt(self, model_cls: Any, samples: Any, stt_config: Any, model_config: Any, language: str | None) -> Any:
        params = self.params_cls(
            audio=samples, stt_config=stt_config, model_config=model_config, language=language, task_type=TASK
        )
        return model_cls.get_generation_prompt(params)


def check_api(version: str, params_cls: Any, model_cls: Any = None) -> None:
    """Raise EngineError unless vLLM has the one-argument `SpeechToTextParams` API this module calls."""
    series = ".".join(version.split(".")[:2])
    hint = f"install a vLLM of series {' or '.join(SUPPORTED_VLLM_SERIES)} (found {version})"
    if series not in SUPPORTED_VLLM_SERIES:
        raise EngineError(f"the transcription family is pinned to vLLM {', '.join(SUPPORTED_VLLM_SERIES)}", hint=hint)
    fields = {f.name for f in dataclasses.fields(params_cls)} if dataclasses.is_dataclass(params_cls) else set()
    missing = [name for name in REQUIRED_PARAM_FIELDS if name not in fields]
    if missing:
        raise EngineError(f"vLLM {version}: SpeechToTextParams lacks {', '.join(missing)}", hint=hint)
    if model_cls is not None:
        params = list(inspect.signature(model_cls.get_generation_prompt).parameters)
        if len(params) != 1:
            raise EngineError(
                f"vLLM {version}: {model_cls.__name__}.get_generation_prompt takes ({', '.join(params)}), "
                "not one SpeechToTextParams",
                hint=hint,
            )


@dataclass(frozen=True)
class TranscriptionAdapter:
    family: ClassVar[str] = "transcription"
    api: SpeechToTextApi
    model_cls: Any
    model_config: Any
    stt_config: Any
    language: str | None
    max_model_len: int
    decode: DecodeSettings
    sample_rate: int
    max_piece_s: float | None

    @classmethod
    def from_model(cls, info: ModelInfo, decode: DecodeSettings) -> TranscriptionAdapter:
        model_cls = info.model_cls
        if model_cls is None or not getattr(model_cls, "supports_transcription", False):
            raise UsageError(
                f"{', '.join(info.architectures) or info.name} does not implement vLLM's SupportsTranscription",
                hint="choose another --family (chat-audio for chat-prompted audio LLMs)",
            )
        api = SpeechToTextApi.load()
        check_api(api.version, api.params_cls, model_cls)
        language = _language(model_cls, decode.language)
        stt = api.stt_config(model_cls, info.model_config)
        clip_s = stt.max_audio_clip_s
        return cls(
            api, model_cls, info.model_config, stt, language, info.max_model_len, decode,
            int(stt.sample_rate), float(clip_s) if clip_s else None,
        )

    def request(self, piece: AudioPiece) -> EngineRequest:
        prompt = dict(self.api.prompt(self.model_cls, piece.samples, self.stt_config, self.model_config, self.language))
        return EngineRequest(prompt, max_tokens_for(piece.duration_s, self.decode, self._ceiling(prompt, piece)))

    def postprocess(self, text: str) -> str:
        return self.model_cls.post_process_output(text).strip()

    def segments(self, text: str, token_ids: Sequence[int], duration_s: Seconds) -> tuple[Segment, ...]:
        return whole_piece(text, duration_s)  # no timestamp tokens: the piece is the finest span known

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model_class": self.model_cls.__name__,
            "vllm": self.api.version,
            "language": self.language,
            "sample_rate": self.sample_rate,
            "max_piece_s": self.max_piece_s,
            "prompt": "model's get_generation_prompt (task transcribe)",
        }

    def _ceiling(self, prompt: dict[str, Any], piece: AudioPiece) -> int:
        """Tokens left for output: the context minus the prompt text and, when the model says, the audio."""
        text_tokens = len(prompt.get("prompt_token_ids") or ())
        audio_tokens = self.model_cls.get_num_audio_tokens(piece.duration_s, self.stt_config, self.model_config)
        return self.max_model_len - text_tokens - (audio_tokens or 0)


def _language(model_cls: Any, language: str) -> str | None:
    """The model's own check: unknown codes are a usage error, not a silent wrong prompt."""
    try:
        return model_cls.validate_language(language)
    except ValueError as e:
        raise UsageError(str(e), hint="use --language with a code the model supports") from e
