"""Stand-ins for the engine and the adapter in unit tests of the CLI and evaluation paths (no vLLM).

The end-to-end tests under tests/e2e use the real engine; these fakes only let option parsing, resume,
writing, scoring and exit codes run in a second.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from speechlm_batch.adapters.base import EngineRequest, ModelInfo, whole_piece
from speechlm_batch.engine import Completion
from speechlm_batch.types import AudioPiece


@dataclass(frozen=True)
class FakeAdapter:
    """Each piece becomes a request whose prompt names its utterance; text comes back stripped."""

    family: ClassVar[str] = "fake"
    sample_rate: int = 16000
    max_piece_s: float = 30.0

    def request(self, piece: AudioPiece) -> EngineRequest:
        return EngineRequest({"id": piece.utterance_id, "samples": len(piece.samples)}, max_tokens=8)

    def postprocess(self, text: str) -> str:
        return text.strip()

    def segments(self, text: str, token_ids, duration_s: float):
        return whole_piece(text, duration_s)

    def describe(self) -> dict[str, Any]:
        return {"family": self.family}


def fake_model_info(name: str = "fake-model") -> ModelInfo:
    return ModelInfo(name=name, architectures=("Fake",), hf_config=None, tokenizer=None, max_model_len=448)


@dataclass
class FakeEngine:
    """Answers each request with `answer(utterance id)`, charging `cost_s` of engine time per request.

    `signal_after`: send this process SIGINT after that many completions (the CLI's handler then stops).
    """

    answer: Callable[[str], str] = lambda utterance_id: ""
    info: ModelInfo = field(default_factory=fake_model_info)
    kwargs: dict[str, Any] = field(default_factory=dict)
    load_s: float = 0.0
    cost_s: float = 0.0
    signal_after: int | None = None
    busy_s: float = 0.0
    max_num_seqs: int = 0
    completed: int = 0
    shutdowns: int = 0

    def run(self, requests, max_in_flight: int) -> Iterator[Completion]:
        for key, request in requests:
            self.busy_s += self.cost_s
            self.completed += 1
            if self.signal_after is not None and self.completed == self.signal_after:
                os.kill(os.getpid(), signal.SIGINT)
            yield Completion(key, self.answer(request.prompt["id"]), 1)

    def shutdown(self) -> None:
        self.shutdowns += 1
