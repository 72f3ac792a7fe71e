"""Hand-computed checks of speechlm_batch.metrics with the default scorer (alignment counts in the comments).

The sclite cross-check and the scorer-specific rules are in test_scoring.py."""

from __future__ import annotations

import pytest

from speechlm_batch.metrics import WerStats, corpus_wer, join_chunked, leaderboard_average, normalize, rtfx

# ------------------------------------------------------------------------------------------ normalization


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mr. Smith said HELLO, world!", "mister smith said hello world"),  # title, casing, punctuation
        ("I have twenty five dollars", "i have $25"),  # spoken number + currency -> "$25"
        ("It costs $1,000.50", "it costs $1000.50"),  # comma between digits removed, decimal point kept
        ("Um, the colour is grey [noise]", "the color is gray"),  # filler, British spelling, bracketed
        ("  ", ""),
    ],
)
def test_normalize(raw: str, expected: str) -> None:
    assert normalize(raw) == expected


def test_normalization_removes_errors_that_raw_text_would_have() -> None:
    # Raw: "Mr." vs "mister", "twenty five" vs "25" would be errors; normalized both sides are identical.
    scored = corpus_wer(["Mr. Smith paid twenty five dollars."], ["mister smith paid $25"])
    assert scored.words.errors == 0
    assert scored.words.reference_words == 4  # "mister smith paid $25"


# ------------------------------------------------------------------------------------------ S / D / I


def test_substitution_and_deletion_counts() -> None:
    # ref: the cat sat on the mat   (6 words)
    # hyp: the cat sit on     mat
    #      =   =   S   =  D   =     -> S=1, D=1, I=0, hits=4, WER = 2/6
    w = corpus_wer(["the cat sat on the mat"], ["the cat sit on mat"]).words
    assert (w.substitutions, w.deletions, w.insertions, w.hits) == (1, 1, 0, 4)
    assert w.reference_words == 6
    assert w.wer == pytest.approx(2 / 6)


def test_insertion_counts() -> None:
    # ref: hello     world
    # hyp: hello big world  -> I=1, hits=2, WER = 1/2
    w = corpus_wer(["hello world"], ["hello big world"]).words
    assert (w.substitutions, w.deletions, w.insertions, w.hits) == (0, 0, 1, 2)
    assert w.wer == pytest.approx(0.5)


def test_empty_hypothesis_is_all_deletions() -> None:
    w = corpus_wer(["good morning"], [""]).words
    assert (w.substitutions, w.deletions, w.insertions) == (0, 2, 0)
    assert w.wer == 1.0


def test_corpus_wer_differs_from_mean_utterance_wer() -> None:
    # utt 1: 10 words, exact              -> 0 errors, utterance WER 0
    # utt 2: "hello there" -> "hello"     -> 1 deletion, utterance WER 1/2
    # corpus: 1 / 12 = 0.0833;  mean per utterance: (0 + 0.5) / 2 = 0.25
    ref1 = "the quick brown fox jumps over the lazy dog today"
    scored = corpus_wer([ref1, "hello there"], [ref1, "hello"])
    assert scored.words.reference_words == 12
    assert scored.wer == pytest.approx(1 / 12)
    assert scored.mean_utterance_wer == pytest.approx(0.25)


def test_dropped_references() -> None:
    refs = ["", "ignore time segment in scoring", "Ignore time segment in scoring.", "[noise]", "real words here"]
    hyps = ["x", "y", "z", "w", "real words here"]
    scored = corpus_wer(refs, hyps)
    assert scored.dropped_refs == 4  # the [noise] reference normalizes to empty as well
    assert scored.words.utterances == 1
    assert scored.words.reference_words == 3
    assert scored.wer == 0.0


def test_all_references_dropped_gives_no_wer() -> None:
    scored = corpus_wer([""], ["anything"])
    assert scored.dropped_refs == 1
    assert scored.wer is None and scored.cer is None and scored.mean_utterance_wer is None


def test_cer_is_corpus_level_on_normalized_text() -> None:
    # "abc" -> "abd": 1 substitution over 3 characters
    # "hello world" -> "hello word": 1 deletion ("l") over 11 characters (the space counts)
    # corpus CER = 2 / 14 (not the mean 1/3, 1/11)
    scored = corpus_wer(["ABC", "Hello, world!"], ["abd", "hello word"])
    assert scored.char_errors == 2
    assert scored.reference_chars == 14
    assert scored.cer == pytest.approx(2 / 14)


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError):
        corpus_wer(["a"], [])


def test_wer_stats_add_and_properties() -> None:
    a = WerStats(substitutions=1, deletions=2, insertions=0, hits=7, reference_words=10, utterances=2)
    b = WerStats(substitutions=0, deletions=0, insertions=3, hits=5, reference_words=5, utterances=1)
    total = a + b
    assert total == WerStats(1, 2, 3, 12, 15, 3)
    assert total.errors == 6
    assert total.wer == pytest.approx(6 / 15)
    assert WerStats().wer is None


def test_scored_sets_sum_to_the_same_as_one_call() -> None:
    refs, hyps = ["the cat sat on the mat", "hello there"], ["the cat sit on mat", "hello"]
    whole = corpus_wer(refs, hyps)
    parts = corpus_wer(refs[:1], hyps[:1]) + corpus_wer(refs[1:], hyps[1:])
    assert parts.words == whole.words
    assert parts.mean_utterance_wer == pytest.approx(whole.mean_utterance_wer)
    assert parts.cer == pytest.approx(whole.cer)


# ------------------------------------------------------------------------------------------ RTFx / averages


def test_rtfx() -> None:
    assert rtfx(100.0, 4.0) == 25.0
    assert rtfx(100.0, 0.0) is None
    assert rtfx(100.0, None) is None


def test_leaderboard_average_matches_published_canary_qwen() -> None:
    # en_shortform.csv: canary-qwen-2.5b per-set WERs -> 45.05 / 8 = 5.63125 -> 5.63
    assert leaderboard_average([10.19, 10.45, 9.43, 1.61, 3.10, 1.90, 2.71, 5.66]) == 5.63


def test_leaderboard_average_rounds_each_dataset_first() -> None:
    # rounded first: 0.01, 0.01, 0.00 -> 0.00667 -> 0.01; unrounded mean 0.004 would give 0.0
    assert leaderboard_average([0.006, 0.006, 0.0]) == 0.01
    with pytest.raises(ValueError):
        leaderboard_average([])


# ------------------------------------------------------------------------------------------ chunked sets


def _chunk(parent: str, index: int, text: str, pred: str | None, duration: float = 1.0) -> dict:
    return {"parent_id": parent, "chunk_index": index, "text": text, "pred_text": pred, "duration": duration}


def test_join_chunked_orders_by_index_and_uses_call_reference() -> None:
    call_ref = "good morning and welcome"
    rows = [
        {"audio_filepath": "solo.wav", "text": "x", "pred_text": "x"},
        _chunk("call1", 1, call_ref, " and welcome "),
        _chunk("call1", 0, call_ref, "good morning", duration=2.5),
    ]
    joined, warnings = join_chunked(rows)
    assert warnings == []
    assert joined[0] == rows[0]  # non-chunk rows pass through
    merged = joined[1]
    assert merged["pred_text"] == "good morning and welcome"  # chunk 0 first, stripped, " "-joined
    assert merged["text"] == call_ref  # the call-level reference is used once, not repeated
    assert merged["duration"] == 3.5
    assert merged["chunks"] == 2


def test_join_chunked_joins_per_chunk_references_and_skips_failed_predictions() -> None:
    rows = [_chunk("p", 2, "three", "three"), _chunk("p", 0, "one", "one"), _chunk("p", 1, "two", None)]
    (merged,), warnings = join_chunked(rows)
    assert merged["text"] == "one two three"
    assert merged["pred_text"] == "one three"
    assert warnings == []


def test_join_chunked_warns_on_gaps() -> None:
    rows = [_chunk("call9", 0, "a", "a"), _chunk("call9", 2, "b", "b")]
    _, warnings = join_chunked(rows)
    assert len(warnings) == 1
    assert "call9" in warnings[0] and "[0, 2]" in warnings[0]


def test_join_chunked_call_mode_warns_on_disagreeing_references() -> None:
    rows = [_chunk("c", 0, "first", "first"), _chunk("c", 1, "second", "second")]
    (merged,), warnings = join_chunked(rows, reference="call")
    assert merged["text"] == "first"
    assert any("different references" in w for w in warnings)
