"""What one audio piece becomes on the wire in server mode, per model family, and how the reply is read.

Whisper and `transcription` models go to `/v1/audio/transcriptions` (multipart: the piece as a WAV file plus
model, language, temperature, max_completion_tokens), as the `openai` client sends them; the server then builds
the model's own prompt (`get_generation_prompt`). `chat-audio` and `nemo-speechlm` go to `/v1/chat/completions`
with one user turn: the offline adapter's text `"{--prompt} {placeholder}"` and the audio inlined as
`input_audio` (base64 WAV); the server applies the model's chat template. vLLM leaves a placeholder that is
already in the text where it is (`renderers/chat_utils.py`), so a nemo-speechlm prompt (tag `<|audio|>`) is the
offline one exactly. For chat-audio the model's own placeholder is not known without the model: with
`--audio-placeholder` the text carries it, else the text is the task prompt alone and the server puts its
placeholder where its chat code puts it (before the text).

`ServerAdapter` has the offline adapters' shape (`request`, `postprocess`, `sample_rate`, `max_piece_s`), so
the pipeline splits audio and joins texts exactly as it does offline; pieces are at most 30 s (Whisper's
window) for every family but nemo-speechlm, so the server never splits again.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soundfile

from speechlm_batch.adapters import nemo_speechlm
from speechlm_batch.adapters.base import EngineRequest, max_tokens_for
from speechlm_batch.adapters.chat_audio import strip_leading_think
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DEFAULT_AUDIO_PLACEHOLDER, DecodeSettings
from speechlm_batch.types import AudioPiece

TRANSCRIPTION_PATH = "/v1/audio/transcriptions"
CHAT_PATH = "/v1/chat/completions"
SAMPLE_RATE = 16000
MAX_PIECE_S = 30.0  # Whisper's window; also the clip length of most audio LLMs' encoders
# Prompt tokens assumed for a nemo-speechlm piece size (the client has no tokenizer); generous on purpose.
NEMO_PROMPT_TOKENS_ESTIMATE = 64
ENDPOINTS = {
    "whisper": TRANSCRIPTION_PATH,
    "transcription": TRANSCRIPTION_PATH,
    "chat-audio": CHAT_PATH,
    "nemo-speechlm": CHAT_PATH,
}


@dataclass(frozen=True)
class HttpRequest:
    """One POST: the path under the server's base URL and either a JSON body or multipart fields + files."""

    path: str
    json: Mapping[str, Any] | None = None
    data: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, tuple[str, bytes, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """The text of a successful response and the prompt tokens the server says it ran (0 when it does not)."""

    text: str
    prompt_tokens: int = 0


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """32-bit float WAV: the server decodes exactly the samples the offline path would have used."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.asarray(samples, dtype=np.float32), sample_rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def parse_reply(path: str, body: Any) -> Reply:
    """Read a transcription or chat-completion response body; ValueError when it is neither."""
    if not isinstance(body, Mapping):
        raise ValueError(f"response is not a JSON object: {str(body)[:200]}")
    if path == TRANSCRIPTION_PATH:
        if not isinstance(body.get("text"), str):
            raise ValueError(f"transcription response without text: {str(body)[:200]}")
        return Reply(body["text"])
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise ValueError(f"chat response without choices[0].message.content: {str(body)[:200]}") from e
    usage = body.get("usage") or {}
    return Reply(text or "", int(usage.get("prompt_tokens") or 0))


def chat_text(family: str, decode: DecodeSettings) -> str:
    """The user turn's text: the offline adapter's `"{prompt} {placeholder}"` where the placeholder is known."""
    placeholder_known = family == "nemo-speechlm" or decode.audio_placeholder != DEFAULT_AUDIO_PLACEHOLDER
    if not placeholder_known:
        return decode.prompt
    return f"{decode.prompt} {decode.audio_placeholder}" if decode.prompt else decode.audio_placeholder


@dataclass(frozen=True)
class ServerAdapter:
    """A model family as the server takes it: one HTTP request per audio piece."""

    family: str
    model: str  # the served model name (`--model`)
    decode: DecodeSettings
    max_model_len: int
    max_piece_s: float | None
    sample_rate: int = SAMPLE_RATE

    @classmethod
    def create(cls, family: str, model: str, decode: DecodeSettings, max_model_len: int) -> ServerAdapter:
        if family not in ENDPOINTS:
            raise UsageError(f"unknown model family {family!r}", hint=f"choose --family from: {', '.join(ENDPOINTS)}")
        max_piece = MAX_PIECE_S
        if family == "nemo-speechlm":
            output_tokens = decode.max_tokens or nemo_speechlm.OUTPUT_RESERVE_TOKENS
            max_piece = nemo_speechlm.max_piece_s(max_model_len, NEMO_PROMPT_TOKENS_ESTIMATE, output_tokens)
        return cls(family, model, decode, max_model_len, max_piece)

    @property
    def path(self) -> str:
        return ENDPOINTS[self.family]

    def request(self, piece: AudioPiece) -> EngineRequest:
        # The server clamps max tokens to what fits its context; this is the same runaway guard as offline.
        max_tokens = max_tokens_for(piece.duration_s, self.decode, self.max_model_len)
        audio = wav_bytes(piece.samples, piece.sample_rate)
        if self.path == TRANSCRIPTION_PATH:
            http = self._transcription(audio, max_tokens)
        else:
            http = self._chat(audio, max_tokens)
        return EngineRequest({"http": http}, max_tokens)

    def postprocess(self, text: str) -> str:
        if self.family == "nemo-speechlm":
            # The template may open a <think> block in the prompt; the reply then holds only its end.
            return nemo_speechlm.strip_think(text, prompt_opens_think="</think>" in text and "<think>" not in text)
        if self.family == "chat-audio":
            return strip_leading_think(text)
        return text.strip()

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "family": self.family,
            "endpoint": self.path,
            "sample_rate": self.sample_rate,
            "max_piece_s": self.max_piece_s,
        }
        if self.path == CHAT_PATH:
            described["user_text"] = chat_text(self.family, self.decode)
        else:
            described["language"] = self.decode.language
        return described

    def _transcription(self, audio: bytes, max_tokens: int) -> HttpRequest:
        data = {
            "model": self.model,
            "language": self.decode.language,
            "temperature": "0.0",  # greedy, as the offline engine decodes
            "response_format": "json",
            "max_completion_tokens": str(max_tokens),
        }
        return HttpRequest(TRANSCRIPTION_PATH, data=data, files={"file": ("audio.wav", audio, "audio/wav")})

    def _chat(self, audio: bytes, max_tokens: int) -> HttpRequest:
        content = [
            {"type": "text", "text": chat_text(self.family, self.decode)},
            {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode("ascii"), "format": "wav"}},
        ]
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0.0,  # greedy, as the offline engine decodes
            "max_tokens": max_tokens,
        }
        return HttpRequest(CHAT_PATH, json=body)
