"""`nemo-speechlm`: NVIDIA's NeMo Speech LM (Canary encoder + Nemotron-Nano / Qwen3 LLM) via its vLLM plugin.

The plugin is loaded with `--plugin nemo_speechlm` (VLLM_PLUGINS, set by the engine before vLLM is imported).
The prompt is the one NeMo-Skills' backend matched NeMo's own WER with (AMI 11.64 % vs 11.65 %): the task
prompt and the audio locator as one user turn, `"{prompt} <|audio|>"`, rendered by the checkpoint's chat
template with `add_generation_prompt=True`. For NemotronH that template opens the assistant turn with
`<think>\\n`, so the prompt ends `<|im_start|>assistant\\n<think>\\n` (without it WER was 11.44 % vs 11.65 %).
A leading `<think>...</think>` block is removed from the output, as the backend did.

Longest piece. The encoder emits 12.5 audio tokens per second (STFT hop 160 at 16 kHz = 100 frames/s, then
three stride-2 convolutions = /8), and prompt + audio tokens + output tokens must fit `max_model_len`:

    max_piece_s = (max_model_len - output_tokens - prompt_tokens) / 12.5

with output_tokens = --max-tokens if given, else 512 (the backend's cap). At 4096 and a ~30-token prompt:
(4096 - 512 - 30) / 12.5 = 284 s, i.e. about 280 s per piece; longer audio is split, never truncated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from speechlm_batch.adapters.base import EngineRequest, ModelInfo, max_tokens_for, whole_piece
from speechlm_batch.adapters.chat_audio import chat_prompt, count_tokens
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DEFAULT_AUDIO_PLACEHOLDER, DecodeSettings
from speechlm_batch.types import AudioPiece, Seconds, Segment

SAMPLE_RATE = 16000  # the plugin's data parser resamples to this; we hand it audio already at 16 kHz
AUDIO_TOKENS_PER_S = 12.5
OUTPUT_RESERVE_TOKENS = 512  # NeMo-Skills backend `sampling_max_tokens`
THINK_BLOCK = re.compile(r"^<think>.*?</think>", re.DOTALL)
# The prompt already opened the block: text up to the first </think> is the rest of it.
OPEN_THINK_TAIL = re.compile(r"^.*?</think>", re.DOTALL)


def strip_think(text: str, prompt_opens_think: bool = False) -> str:
    """Drop a leading `<think>...</think>` (and, when the prompt ends inside one, its closing part)."""
    text = THINK_BLOCK.sub("", text, count=1)
    if prompt_opens_think:
        text = OPEN_THINK_TAIL.sub("", text, count=1)
    return text.strip()


def max_piece_s(max_model_len: int, prompt_tokens: int, output_tokens: int) -> float:
    """Longest audio (s) whose tokens fit the context next to the prompt and the output budget."""
    room = max_model_len - output_tokens - prompt_tokens - 1  # -1: the last frame's token is rounded up
    if room < AUDIO_TOKENS_PER_S:
        raise UsageError(
            f"max_model_len {max_model_len} leaves no room for audio "
            f"({prompt_tokens} prompt + {output_tokens} output tokens)",
            hint="raise --max-model-len or lower --max-tokens",
        )
    return math.floor(room / AUDIO_TOKENS_PER_S * 10) / 10  # 0.1 s steps, rounded down


def audio_tag(info: ModelInfo, decode: DecodeSettings) -> str:
    """--audio-placeholder when set, else the checkpoint's `audio_locator_tag` (as the backend read it)."""
    if decode.audio_placeholder != DEFAULT_AUDIO_PLACEHOLDER:
        return decode.audio_placeholder
    return getattr(info.hf_config, "audio_locator_tag", None) or DEFAULT_AUDIO_PLACEHOLDER


def audio_tokens(duration_s: float) -> int:
    return math.ceil(duration_s * AUDIO_TOKENS_PER_S)


@dataclass(frozen=True)
class NeMoSpeechLMAdapter:
    family: ClassVar[str] = "nemo-speechlm"
    prompt_text: str
    prompt_tokens: int
    max_model_len: int
    decode: DecodeSettings
    max_piece_s: float | None
    sample_rate: int = SAMPLE_RATE

    @classmethod
    def from_model(cls, info: ModelInfo, decode: DecodeSettings) -> NeMoSpeechLMAdapter:
        prompt = chat_prompt(info.tokenizer, decode.prompt, audio_tag(info, decode))
        prompt_tokens = count_tokens(info.tokenizer, prompt) - 1  # the tag itself becomes audio tokens
        output_tokens = decode.max_tokens or OUTPUT_RESERVE_TOKENS
        return cls(prompt, prompt_tokens, info.max_model_len, decode, max_piece_s(info.max_model_len, prompt_tokens, output_tokens))

    @property
    def prompt_opens_think(self) -> bool:
        return self.prompt_text.rstrip().endswith("<think>")

    def request(self, piece: AudioPiece) -> EngineRequest:
        prompt = {"prompt": self.prompt_text, "multi_modal_data": {"audio": (piece.samples, piece.sample_rate)}}
        ceiling = self.max_model_len - self.prompt_tokens - audio_tokens(piece.duration_s)
        return EngineRequest(prompt, max_tokens_for(piece.duration_s, self.decode, ceiling))

    def postprocess(self, text: str) -> str:
        return strip_think(text, self.prompt_opens_think)

    def segments(self, text: str, token_ids: Sequence[int], duration_s: Seconds) -> tuple[Segment, ...]:
        return whole_piece(text, duration_s)  # no timestamp tokens: the piece is the finest span known

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "prompt": self.prompt_text,
            "prompt_tokens": self.prompt_tokens,
            "audio_tokens_per_s": AUDIO_TOKENS_PER_S,
            "sample_rate": self.sample_rate,
            "max_piece_s": self.max_piece_s,
        }
