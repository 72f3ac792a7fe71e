"""Whisper's timestamp rules as a vLLM V1 logits processor (the rules: speechlm_batch/timestamp_rules.py).

vLLM builds one instance per engine core and calls `update_state` when the batch changes and `apply` on every
step's logits. Only requests whose `SamplingParams.extra_args` carry `timestamp_rules.EXTRA_ARGS_KEY` are
touched; with none in the batch `apply` returns at once, so outputs without --timestamps cannot change.
This module imports vLLM: only engine.py imports it, after the environment vLLM reads at import is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

from speechlm_batch.timestamp_rules import TimestampRules, apply_rules, step_limits

QUALNAME = f"{__name__}:WhisperTimestampProcessor"  # what LLM(logits_processors=[...]) is given


@dataclass
class _Request:
    """One request that asked for the rules: its running output ids (vLLM's own list, updated in place)."""

    rules: TimestampRules
    output_ids: list[int]
    scanned: int = 0  # output ids already looked at for the latest timestamp
    last_timestamp: int | None = None

    def __post_init__(self) -> None:
        begin = self.rules.timestamp_begin
        self.last_timestamp = max((t for t in self.rules.opening if t >= begin), default=None)

    def tail(self) -> list[int]:
        """The last two sampled ids, opening included (all `step_limits` reads), and the latest timestamp."""
        outputs = self.output_ids
        begin = self.rules.timestamp_begin
        for token in outputs[self.scanned:]:
            if token < 0:  # an async-scheduling placeholder, resolved before sampling: never counted
                break
            if token >= begin:
                self.last_timestamp = token
            self.scanned += 1
        return [*self.rules.opening[-2:], *outputs[-2:]][-2:]


class WhisperTimestampProcessor(LogitsProcessor):
    """Applies the timestamp rules to the batch rows of requests that ask for them."""

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.requests: dict[int, _Request] = {}  # batch index -> request

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        TimestampRules.from_extra_args(sampling_params.extra_args)  # raises ValueError on a malformed entry

    def is_argmax_invariant(self) -> bool:
        return False  # it bans tokens: greedy decoding changes

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self.requests.pop(index, None)
        for added in batch_update.added:
            index, params, output_ids = _unpack_added(added)
            rules = TimestampRules.from_extra_args(getattr(params, "extra_args", None))
            if rules is None:
                self.requests.pop(index, None)  # a new request at a reused index that does not ask
            else:
                self.requests[index] = _Request(rules, output_ids)
        for source, target, direction in batch_update.moved:
            moving = self.requests.pop(source, None)
            if direction == MoveDirectionality.SWAP:
                if (other := self.requests.pop(target, None)) is not None:
                    self.requests[source] = other
            else:
                self.requests.pop(target, None)
            if moving is not None:
                self.requests[target] = moving

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.requests:
            return logits
        vocab = logits.shape[-1]
        rows = sorted(self.requests)
        limits = []
        for row in rows:
            request = self.requests[row]
            limits.append(step_limits(request.rules, request.tail(), request.last_timestamp, vocab))
        # One checkpoint per engine, so every request carries the same rules.
        return apply_rules(logits, rows, limits, self.requests[rows[0]].rules)


def _unpack_added(added: tuple) -> tuple[int, Any, list[int]]:
    """(index, params, output ids) of a `BatchUpdate.added` entry: (index, params, prompt ids, output ids)
    since vLLM 0.10.2; before, the prompt ids came first."""
    if isinstance(added[0], int):
        index, params, _, output_ids = added
    else:
        _, index, params, output_ids = added
    return index, params, output_ids
