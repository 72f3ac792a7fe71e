"""The vLLM logits processor: it follows the batch (added, removed, moved rows) and touches only requests that
carry the rules; a batch without them comes back unchanged."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm.v1.sample.logits_processor")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality  # noqa: E402

from speechlm_batch.timestamp_processor import WhisperTimestampProcessor  # noqa: E402
from speechlm_batch.timestamp_rules import EXTRA_ARGS_KEY, TimestampRules  # noqa: E402

VOCAB = 10  # as tests/test_timestamp_rules.py: 3 end of text, 5 <|notimestamps|>, 6-9 timestamps
RULES = TimestampRules(no_timestamps_id=5, eos_id=3, max_initial_index=1, opening=(6,))
TIMED = SamplingParams(max_tokens=8, extra_args={EXTRA_ARGS_KEY: RULES.to_extra_args()})
PLAIN = SamplingParams(max_tokens=8)


def _processor():
    return WhisperTimestampProcessor(None, torch.device("cpu"), False)


def _update(size, added=(), removed=(), moved=()):
    return BatchUpdate(batch_size=size, removed=list(removed), added=list(added), moved=list(moved))


def _logits(rows):
    return torch.linspace(-1.0, 1.0, rows * VOCAB).reshape(rows, VOCAB)


def test_requests_without_the_rules_are_left_exactly_as_they_are():
    proc = _processor()
    proc.update_state(_update(2, added=[(0, PLAIN, [1, 2], []), (1, PLAIN, [1, 2], [0, 7])]))
    logits = _logits(2)
    before = logits.clone()
    assert proc.apply(logits) is logits and torch.equal(logits, before)
    proc.update_state(None)  # a step with no batch change
    assert torch.equal(proc.apply(logits), before)


def test_only_the_timed_row_of_a_mixed_batch_is_masked():
    proc = _processor()
    timed_outputs: list[int] = []
    proc.update_state(_update(2, added=[(0, PLAIN, None, []), (1, TIMED, None, timed_outputs)]))
    before = _logits(2)
    out = proc.apply(before.clone())
    assert torch.equal(out[0], before[0])
    assert torch.all(torch.isneginf(out[1, 5:]))  # after the opening <|0.00|>: text only
    timed_outputs.append(1)  # vLLM appends to the same list: the processor sees the new token
    out = proc.apply(before.clone())
    assert torch.isneginf(out[1, 6]) and not torch.isneginf(out[1, 7])  # no second <|0.00|>, later ones open


def test_state_follows_removed_and_moved_rows():
    proc = _processor()
    proc.update_state(_update(3, added=[(0, TIMED, None, []), (1, PLAIN, None, []), (2, TIMED, None, [1, 8])]))
    proc.update_state(_update(2, removed=[0], moved=[(2, 0, MoveDirectionality.UNIDIRECTIONAL)]))
    assert sorted(proc.requests) == [0]  # the closed-segment request now sits at row 0
    logits = _logits(2)
    logits[0, 3] = 5.0  # the end of text likeliest, so rule 5 keeps it
    out = proc.apply(logits)
    assert [i for i in range(VOCAB) if out[0, i] > float("-inf")] == [3, 8, 9]
    proc.update_state(_update(2, moved=[(0, 1, MoveDirectionality.SWAP)]))
    assert sorted(proc.requests) == [1]
    proc.update_state(_update(2, added=[(1, PLAIN, None, [])]))  # a new request reusing the index
    assert proc.requests == {}


def test_malformed_rules_are_refused_when_the_request_is_made():
    with pytest.raises(ValueError):
        WhisperTimestampProcessor.validate_params(SamplingParams(extra_args={EXTRA_ARGS_KEY: "yes"}))
    WhisperTimestampProcessor.validate_params(PLAIN)
