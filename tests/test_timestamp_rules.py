"""Whisper's timestamp rules on a 10-token vocabulary, every expected mask worked out by hand.

ids 0-2: text, 3: end of text, 4: another special, 5: <|notimestamps|>, 6-9: timestamps <|0.00|> .. <|0.06|>.
"""

from __future__ import annotations

import math

import pytest
import torch

from speechlm_batch.timestamp_rules import (
    EXTRA_ARGS_KEY, StepLimits, TextRule, TimestampRules, apply_rules, step_limits,
)

VOCAB = 10
RULES = TimestampRules(no_timestamps_id=5, eos_id=3, max_initial_index=1, opening=(6,))
NEG = float("-inf")


def _last_timestamp(sampled):
    return max((t for t in sampled if t >= RULES.timestamp_begin), default=None)


def _allowed(sampled, logits=None):
    """Ids left sampleable after the rules, for one request whose tokens so far are `sampled`."""
    row = torch.zeros(1, VOCAB) if logits is None else torch.tensor([logits])
    limits = step_limits(RULES, sampled, _last_timestamp(sampled), VOCAB)
    out = apply_rules(row, [0], [limits], RULES)
    return [i for i in range(VOCAB) if out[0, i] > NEG]


# Text logits high enough that rule 5 (timestamps likelier than any text) stays out of the way.
TEXT_WINS = [5.0, 5.0, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0, 0.0]


def test_no_timestamps_token_is_never_sampled():
    assert 5 not in _allowed([6, 1], TEXT_WINS)
    assert 5 not in _allowed([6, 1, 2], TEXT_WINS)


def test_an_opening_timestamp_is_followed_by_text():
    # the prompt's <|0.00|> opened: every timestamp banned, all text (and the specials) allowed
    assert step_limits(RULES, [6], 6, VOCAB) == StepLimits(TextRule.ANY, VOCAB, VOCAB - 1)
    assert _allowed([6], TEXT_WINS) == [0, 1, 2, 3, 4]
    # a closing timestamp repeated as the next start (a pair) is an opening too, and its text may not be empty:
    # the end of text (3) is banned after a pair (the one departure from the paper, see the module docstring)
    assert step_limits(RULES, [6, 1, 8, 8], 8, VOCAB).text == TextRule.WORDS
    assert _allowed([6, 1, 8, 8], TEXT_WINS) == [0, 1, 2, 4]
    assert _allowed([6, 1, 7, 8], TEXT_WINS) == [0, 1, 2, 4]


def test_a_closing_timestamp_is_followed_by_a_timestamp_or_the_end():
    # [<|0.00|>, text, <|0.04|>]: the segment closed at 8; the next one starts at 8 or later, or text ends
    assert _allowed([6, 1, 8], TEXT_WINS) == [3, 8, 9]


def test_timestamps_never_decrease():
    # after text, the next timestamp is strictly later than the last one (8): only 9
    assert _allowed([6, 1, 8, 8, 2], TEXT_WINS) == [0, 1, 2, 3, 4, 9]
    # the opening alone: no second <|0.00|>
    assert _allowed([6, 1], TEXT_WINS) == [0, 1, 2, 3, 4, 7, 8, 9]


def test_the_first_timestamp_is_capped():
    # nothing sampled and no opening: timestamps only, at most max_initial_index (1) steps in: 6 and 7
    assert step_limits(RULES, [], None, VOCAB) == StepLimits(TextRule.NONE, 6, 7)
    assert _allowed([]) == [6, 7]
    uncapped = TimestampRules(5, 3, max_initial_index=None)
    assert step_limits(uncapped, [], None, VOCAB) == StepLimits(TextRule.NONE, 6, 9)


def test_timestamps_win_when_together_likelier_than_the_best_text_token():
    # After [<|0.00|>, text] the timestamps 7, 8, 9 are allowed. Each at logit 1: together log(3 e^1) = 2.0986.
    # Best text at 2.0: 2.0986 > 2.0, so only timestamps remain; at 2.2 text stays.
    close = [2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert 1.0 + math.log(3) > 2.0
    assert _allowed([6, 1], close) == [7, 8, 9]
    close[0] = 2.2
    assert _allowed([6, 1], close) == [0, 1, 2, 3, 4, 7, 8, 9]


def test_allowed_logits_keep_their_values_and_other_rows_are_untouched():
    logits = torch.arange(2 * VOCAB, dtype=torch.float32).reshape(2, VOCAB) * -0.1
    before = logits.clone()
    limits = step_limits(RULES, [6], 6, VOCAB)
    apply_rules(logits, [1], [limits], RULES)
    assert torch.equal(logits[0], before[0])
    assert torch.equal(logits[1, :5], before[1, :5])  # text allowed, unchanged
    assert torch.all(torch.isneginf(logits[1, 5:]))


def test_rules_travel_as_plain_extra_args():
    args = {EXTRA_ARGS_KEY: RULES.to_extra_args()}
    assert TimestampRules.from_extra_args(args) == RULES
    assert TimestampRules.from_extra_args(None) is None and TimestampRules.from_extra_args({"other": 1}) is None
    with pytest.raises(ValueError, match="must be a mapping"):
        TimestampRules.from_extra_args({EXTRA_ARGS_KEY: 3})
