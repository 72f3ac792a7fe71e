"""Whisper's timestamp rules, as the Whisper paper's decoder applies them while sampling (no vLLM here).

vLLM samples Whisper without them; then a timestamp can follow text anywhere, times can run backwards and a
piece can loop until the token cap. The rules, per request, on the tokens sampled so far:

1. `<|notimestamps|>` is never sampled.
2. Timestamps come in pairs: after a timestamp that opened a segment (or a pair) comes text, never another
   timestamp; after one that closed a segment comes another timestamp (the next segment's start) or the end.
   One departure from the paper: after a pair (close + open) the end of text is banned too. OpenAI's long-form
   loop re-decodes from the last timestamp, so "pair, end" there only moves the window; pieces here are decoded
   once, and whisper-base ended a 29 s piece that way at 20 s, dropping its last 9 s of speech.
3. Timestamps never decrease; a new segment may start where the last one ended, a close is after its start.
4. The first sampled token is a timestamp no later than `max_initial_index` steps.
5. When the timestamps together are likelier than the single likeliest text token, a timestamp is sampled.

The prompt's own trailing timestamps (a decoder prompt ending `<|0.00|>`) count as sampled: `opening`.
`TimestampRules` travels to the engine in `SamplingParams.extra_args[EXTRA_ARGS_KEY]`, which switches the
processor on for that request only (speechlm_batch/timestamp_processor.py).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXTRA_ARGS_KEY = "speechlm_batch.whisper_timestamps"


class TextRule(enum.IntEnum):
    """Which non-timestamp tokens the next step may sample."""

    ANY = 0
    END_ONLY = 1  # after a closing timestamp: the end of text (or a timestamp)
    NONE = 2  # before the first timestamp: timestamps only
    WORDS = 3  # after a pair: text, not its end


@dataclass(frozen=True, slots=True)
class TimestampRules:
    """The token ids the rules need, for one checkpoint (timestamps are every id from `timestamp_begin` on)."""

    no_timestamps_id: int
    eos_id: int
    max_initial_index: int | None = None  # rule 4: 50 steps (1.00 s) in the Whisper checkpoints
    opening: tuple[int, ...] = ()  # timestamp ids the decoder prompt ends with

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps_id + 1  # the same layout in every Whisper vocabulary

    def to_extra_args(self) -> dict[str, Any]:
        """Plain values: extra_args cross to vLLM's engine-core process serialized."""
        return {"no_timestamps_id": self.no_timestamps_id, "eos_id": self.eos_id,
                "max_initial_index": self.max_initial_index, "opening": list(self.opening)}

    @classmethod
    def from_extra_args(cls, extra_args: Mapping[str, Any] | None) -> TimestampRules | None:
        """The rules a request asks for, or None when it asks for none (timestamps off)."""
        raw = (extra_args or {}).get(EXTRA_ARGS_KEY)
        if raw is None:
            return None
        if not isinstance(raw, Mapping):
            raise ValueError(f"extra_args[{EXTRA_ARGS_KEY!r}] must be a mapping, got {type(raw).__name__}")
        initial = raw.get("max_initial_index")
        return cls(int(raw["no_timestamps_id"]), int(raw["eos_id"]), None if initial is None else int(initial),
                   tuple(int(t) for t in raw.get("opening", ())))


@dataclass(frozen=True, slots=True)
class StepLimits:
    """What one request may sample next: a text rule and the allowed timestamp ids [first, last]
    (first > last: none)."""

    text: TextRule
    first_timestamp: int
    last_timestamp: int


def step_limits(rules: TimestampRules, sampled: Sequence[int], last_timestamp: int | None, vocab_size: int) -> StepLimits:
    """Rules 2-4 for the next token after `sampled` (opening included); `last_timestamp` is the latest
    timestamp id in `sampled` (None if none), passed in so a caller can track it without rescanning."""
    begin = rules.timestamp_begin
    top = vocab_size - 1
    if not sampled:
        cap = top if rules.max_initial_index is None else min(top, begin + rules.max_initial_index)
        return StepLimits(TextRule.NONE, begin, cap)
    last_was_timestamp = sampled[-1] >= begin
    before_was_timestamp = len(sampled) < 2 or sampled[-2] >= begin  # the start counts as a timestamp
    if last_was_timestamp and before_was_timestamp:  # an opening timestamp: text must follow
        pair = len(sampled) >= 2  # not the first opening: a piece with nothing said may end at once
        return StepLimits(TextRule.WORDS if pair else TextRule.ANY, top + 1, top)
    text = TextRule.END_ONLY if last_was_timestamp else TextRule.ANY
    if last_timestamp is None:
        return StepLimits(text, begin, top)
    # A closing timestamp may be repeated as the next start; otherwise time moves forward.
    first = last_timestamp if last_was_timestamp else last_timestamp + 1
    return StepLimits(text, first, top)


def apply_rules(logits: Any, rows: Sequence[int], limits: Sequence[StepLimits], rules: TimestampRules) -> Any:
    """Mask `logits` (batch x vocab, in place) for the given rows: rules 1-4 from `limits`, then rule 5.

    Every request in `rows` shares `rules` (one checkpoint per engine); the work is a few tensor ops on the
    selected rows whatever the batch size.
    """
    import torch

    if not rows:
        return logits
    device = logits.device
    begin = rules.timestamp_begin
    index = torch.tensor(list(rows), dtype=torch.long, device=device)
    text = torch.tensor([int(lim.text) for lim in limits], device=device)
    lows = torch.tensor([lim.first_timestamp for lim in limits], device=device).unsqueeze(1)
    highs = torch.tensor([lim.last_timestamp for lim in limits], device=device).unsqueeze(1)
    picked = logits[index]
    # Timestamps: only the timestamp columns are compared, a small slice of the vocabulary.
    stamps = torch.arange(begin, logits.shape[-1], device=device).unsqueeze(0)
    picked[:, begin:].masked_fill_((stamps < lows) | (stamps > highs), float("-inf"))
    # Text: whole rows banned (NONE, END_ONLY), then the end of text put back (END_ONLY) or banned (WORDS).
    eos = picked[:, rules.eos_id].clone()
    picked[:, :begin].masked_fill_(((text == TextRule.NONE) | (text == TextRule.END_ONLY)).unsqueeze(1), float("-inf"))
    picked[:, rules.eos_id] = torch.where(text == TextRule.END_ONLY, eos, picked[:, rules.eos_id])
    picked[:, rules.eos_id].masked_fill_(text == TextRule.WORDS, float("-inf"))
    picked[:, rules.no_timestamps_id] = float("-inf")
    # Rule 5 in logit space: log-softmax subtracts the same normalizer from both sides of the comparison.
    timestamps_mass = torch.logsumexp(picked[:, begin:].float(), dim=-1)
    best_text = picked[:, :begin].float().max(dim=-1).values
    picked[:, :begin].masked_fill_((timestamps_mass > best_text).unsqueeze(1), float("-inf"))
    logits[index] = picked
    return logits
