"""speechlm_batch.scoring: the two scorers, failed rows, chunk stitching, and the sclite cross-check.

Alignment counts are worked out by hand in the comments.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess

import kaldialign
import pytest

from speechlm_batch.scoring import Scorer, Scoring, compound_pairs, corpus_wer, score_rows

NEW, OLD = Scoring(Scorer.v2026), Scoring(Scorer.classic)


def _sdi(scored) -> tuple[int, int, int]:
    w = scored.words
    return w.substitutions, w.deletions, w.insertions


# ------------------------------------------------------------------------------------------ compound merging


def test_compound_merge_split_reference_joined_hypothesis() -> None:
    # ref "a white paper today" / hyp "a whitepaper today": 2026 merges "white paper" -> 0 errors;
    # classic: "white" -> "whitepaper" (S) and "paper" deleted (D) -> 2 errors over 4 words
    refs, hyps = ["a white paper today"], ["a whitepaper today"]
    assert corpus_wer(refs, hyps, NEW).words.errors == 0
    assert _sdi(corpus_wer(refs, hyps, OLD)) == (1, 1, 0)
    assert corpus_wer(refs, hyps, NEW).words.reference_words == 4  # the reference keeps its own length


def test_compound_merge_joined_reference_split_hypothesis() -> None:
    # the other way: ref "the database is up" / hyp "the data base is up": 0 errors in 2026; classic S + I
    refs, hyps = ["the database is up"], ["the data base is up"]
    assert corpus_wer(refs, hyps, NEW).words.errors == 0
    assert _sdi(corpus_wer(refs, hyps, OLD)) == (1, 0, 1)


def test_per_pair_counts_sum_to_kaldialign_batch_error_rate() -> None:
    refs = ["the cat sat on the mat", "hello there", "a white paper", "one two three four"]
    hyps = ["the cat sit on mat", "", "a whitepaper", "one too three for five"]
    ours = corpus_wer(refs, hyps, NEW).words
    split = [tuple(NEW.normalize(t).split()) for t in refs], [tuple(NEW.normalize(t).split()) for t in hyps]
    board = kaldialign.batch_error_rate(*split, merge_compounds=True)
    assert (ours.substitutions, ours.deletions, ours.insertions) == (board["sub"], board["del"], board["ins"])
    assert ours.reference_words == board["ref_len"] and ours.wer == pytest.approx(board["err_rate"])


# ------------------------------------------------------------------------------------------ languages


def test_language_picks_the_normalizer() -> None:
    assert Scoring(language="de").normalize("Mr. Müller hat 3 Hunde.") == "mr müller hat drei hunde"
    assert NEW.normalize("Mr. Müller hat 3 Hunde.") == "mister muller hat 3 hunde"  # English rules would be wrong
    assert "multilingual" in Scoring(language="de").describe()["normalizer"]
    assert Scoring(Scorer.classic).describe()["normalizer"].startswith("whisper-english")


def test_multilingual_sentence_with_compound_pairs() -> None:
    # German: "Die Haus Tür ist 2 Meter breit." vs "die Haustür ist zwei Meter breit"
    # normalized: "die haus tür ist zwei meter breit" / "die haustür ist zwei meter breit"
    # compound pairs: the differing stretch "haus tür" / "haustür" spells the same letters -> both "haustür"
    # -> 0 errors over the joined reference's 6 words
    de = Scoring(language="de")
    scored = corpus_wer(["Die Haus Tür ist 2 Meter breit."], ["die Haustür ist zwei Meter breit"], de)
    assert scored.words.errors == 0 and scored.words.reference_words == 6
    # a real error stays one: "breit" -> "hoch" is 1 substitution
    assert _sdi(corpus_wer(["Die Tür ist breit"], ["die Tür ist hoch"], de)) == (1, 0, 0)


def test_compound_pairs_leave_real_differences() -> None:
    assert compound_pairs(["haus tür schlüssel"], ["haustürschlüssel"]) == (["haustürschlüssel"], ["haustürschlüssel"])
    assert compound_pairs(["rot blau"], ["rotgrün"]) == (["rot blau"], ["rotgrün"])


# ------------------------------------------------------------------------------------------ rows


def _ok(i, text, pred, audio_s=1.0, **extra):
    row = {"audio_filepath": f"a{i}.wav", "_id": str(i), "_position": i, "pred_text": pred, "_audio_s": audio_s}
    return {**row, **({"text": text} if text is not None else {}), **extra}


def _failed(i, kind, text="never heard words", **extra):
    row = {"audio_filepath": f"a{i}.wav", "_id": str(i), "_position": i, "pred_text": None, "_audio_s": 0.0}
    return {**row, "text": text, "error": {"kind": kind, "message": "..."}, **extra}


def test_failed_rows_are_scored_as_empty_and_reported_apart() -> None:
    rows = [
        _ok(0, "the cat sat on the mat", "the cat sit on mat", 3.0, _loops_collapsed=2),  # S=1 D=1 over 6
        _ok(1, "hello world", "hello big world", 2.0),  # I=1 over 2
        _failed(2, "missing_file"),  # 3 words deleted
        _failed(3, "engine", text="two words"),  # 2 deleted
        {"_raw": "{x", "_id": "4", "_position": 4, "pred_text": None, "error": {"kind": "bad_row"}},  # no reference
        _ok(5, None, "no reference here", 1.5),
    ]
    score = score_rows(rows, NEW)
    assert (score.rows_total, score.rows_ok, score.rows_failed, score.rows_unscored) == (6, 3, 3, 2)
    assert score.rows_failed_by_kind == {"missing_file": 1, "engine": 1, "bad_row": 1}
    assert score.failed_scored == 2
    assert score.audio_s == pytest.approx(6.5) and score.loops_collapsed == 2
    # leaderboard number: S=1, D=1+3+2, I=1 over 6+2+3+2 = 13 words
    assert _sdi(score.scored) == (1, 6, 1) and score.scored.words.reference_words == 13
    assert score.scored.wer == pytest.approx(8 / 13)
    # ok rows only: 3 errors over 8 words
    assert score.scored_ok_only.wer == pytest.approx(3 / 8)


def test_without_failures_the_ok_only_score_is_the_score() -> None:
    score = score_rows([_ok(0, "hello world", "hello")], NEW)
    assert score.failed_scored == 0 and score.scored_ok_only == score.scored


def _chunk(parent, index, ref, pred, failed=False):
    row = _failed(index, "decode", text=ref) if failed else _ok(index, ref, pred)
    return {**row, "parent_id": parent, "chunk_index": index, "audio_filepath": f"{parent}/{index}.wav"}


def test_earnings22_chunks_are_stitched_per_call_before_scoring() -> None:
    # Every chunk carries its call's whole reference (as the chunked set is prepared); rows arrive out of order.
    call_a = "Good morning everyone and welcome to the call."  # 8 words
    call_b = "Revenue grew ten percent this quarter."  # normalized "revenue grew 10% this quarter": 5 words
    rows = [
        _chunk("B", 2, call_b, "quarter"),
        _chunk("A", 1, call_a, "and welcome to the call"),
        _chunk("B", 0, call_b, "Revenue grew 10 percent"),
        _chunk("A", 0, call_a, "good morning everyone"),
        _chunk("B", 1, call_b, None, failed=True),  # would have said "this"
    ]
    score = score_rows(rows, NEW)
    # A: "good morning everyone" + "and welcome to the call" = the reference: 0 errors
    # B: "revenue grew 10%" + "" + "quarter" vs "revenue grew 10% this quarter": "this" deleted
    assert score.scored.words.utterances == 2  # two calls, not five chunks
    assert score.scored.words.reference_words == 13
    assert _sdi(score.scored) == (0, 1, 0)
    assert score.warnings == ()
    # ok rows only: the same joined text (the failed chunk had none), so the same WER
    assert score.scored_ok_only.wer == pytest.approx(1 / 13)


# ------------------------------------------------------------------------------------------ sclite cross-check


def _sclite_command() -> list[str] | None:
    if shutil.which("sclite"):
        return ["sclite"]
    if shutil.which("sctk"):  # Debian's sctk package puts only this dispatcher on PATH
        return ["sctk", "sclite"]
    if os.environ.get("CI") == "true":
        pytest.fail("CI must install sclite (Debian package sctk, .ci/run does): the cross-check may not skip")
    return None


def _random_pairs(count: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    vocab = "the cat sat on mat dog ran far away hello world good morning market price rose fell".split()
    refs, hyps = [], []
    for _ in range(count):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 20))]
        hyp = []
        for word in ref:
            r = rng.random()
            if r < 0.08:
                continue  # deletion
            hyp.append(rng.choice(vocab) if r < 0.16 else word)  # substitution or hit
            if rng.random() < 0.05:
                hyp.append(rng.choice(vocab))  # insertion
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    return refs, hyps


def sclite_counts(refs: list[str], hyps: list[str], workdir) -> dict[str, int]:
    """sclite's Sum line on already normalized text: sentences, words, sub, del, ins, errors."""
    command = _sclite_command()
    if command is None:
        pytest.skip("sclite (Debian package sctk) is not installed")
    ref_trn, hyp_trn = workdir / "ref.trn", workdir / "hyp.trn"
    ref_trn.write_text("".join(f"{r} (spk-{i:06d})\n" for i, r in enumerate(refs)))
    hyp_trn.write_text("".join(f"{h} (spk-{i:06d})\n" for i, h in enumerate(hyps)))
    args = ["-r", str(ref_trn), "trn", "-h", str(hyp_trn), "trn", "-i", "rm", "-o", "rsum", "stdout"]
    out = subprocess.run(command + args, capture_output=True, text=True, check=True).stdout
    sum_line = next(line for line in out.splitlines() if line.strip().startswith("| Sum"))
    sentences, words, _corr, sub, dele, ins, err, _serr = (int(x) for x in re.findall(r"\d+", sum_line))
    return {"sentences": sentences, "words": words, "sub": sub, "del": dele, "ins": ins, "errors": err}


def merged_for_sclite(refs: list[str], hyps: list[str]) -> tuple[list[str], list[str], int]:
    """Normalized pairs with the compounds kaldialign merged written joined on both sides, for sclite (which
    has no compound rule). Returns the texts and the reference words the joining removed (kaldialign keeps
    the reference's own length)."""
    out_refs, out_hyps, joined_words = [], [], 0
    for ref, hyp in zip(refs, hyps):
        r_words, h_words = [], []
        for r, h in kaldialign.align(ref.split(), hyp.split(), "*", merge_compounds=True):
            if " " in r or " " in h:
                assert r.replace(" ", "") == h.replace(" ", ""), (r, h)
                joined_words += r.count(" ")
                r, h = r.replace(" ", ""), h.replace(" ", "")
            r_words += [] if r == "*" else [r]
            h_words += [] if h == "*" else [h]
        out_refs.append(" ".join(r_words))
        out_hyps.append(" ".join(h_words))
    return out_refs, out_hyps, joined_words


def _cross_check_pairs() -> tuple[list[str], list[str]]:
    literal_refs = ["the cat sat on the mat", "hello there", "a b c", "Mr. Smith paid twenty five dollars", "a b",
                    "a white paper today", "the database is up"]
    literal_hyps = ["the cat sit on mat", "", "a c d", "mister smith paid 25 dollars today", "b c",
                    "a whitepaper to day", "the data base is down"]
    rand_refs, rand_hyps = _random_pairs(500, seed=0)
    return literal_refs + rand_refs, literal_hyps + rand_hyps


def test_2026_scorer_matches_sclite_substitutions_deletions_insertions(tmp_path) -> None:
    """kaldialign breaks ties as sclite does (sub 4, ins / del 3: "a b" -> "b c" is D + I, not S + S)."""
    refs, hyps = _cross_check_pairs()
    words = corpus_wer(refs, hyps, NEW).words
    merged_refs, merged_hyps, joined = merged_for_sclite([NEW.normalize(r) for r in refs], [NEW.normalize(h) for h in hyps])
    assert joined == 1  # "white paper" is one reference word fewer for sclite; "data base" is in the hypothesis
    counts = sclite_counts(merged_refs, merged_hyps, tmp_path)
    assert counts["sentences"] == len(refs) and counts["words"] + joined == words.reference_words
    assert (counts["sub"], counts["del"], counts["ins"]) == (words.substitutions, words.deletions, words.insertions)


def test_classic_scorer_matches_sclite_errors(tmp_path) -> None:
    """jiwer's Levenshtein gives the same total; of equal-cost alignments it may pick S + S where sclite picks D + I."""
    refs, hyps = _cross_check_pairs()
    words = corpus_wer(refs, hyps, OLD).words
    counts = sclite_counts([OLD.normalize(r) for r in refs], [OLD.normalize(h) for h in hyps], tmp_path)
    assert counts["words"] == words.reference_words
    assert counts["errors"] == words.errors


def test_a_row_that_failed_before_it_was_read_keeps_its_reference() -> None:
    # An undecodable dataset row is written with only `_raw` (its fields as JSON): its reference still counts.
    raw_failed = {"_id": "7", "_raw": '{"text": "three lost words", "id": "7"}', "pred_text": None,
                  "error": {"kind": "decode"}}
    unparsed = {"_id": "8", "_raw": "{not json", "pred_text": None, "error": {"kind": "bad_row"}}
    score = score_rows([_ok(0, "hello there", "hello there"), raw_failed, unparsed], NEW)
    assert score.failed_scored == 1 and score.rows_unscored == 1
    assert _sdi(score.scored) == (0, 3, 0) and score.scored.words.reference_words == 5


def test_a_lone_surrogate_is_scored_not_a_crash():
    from speechlm_batch.scoring import Scorer, Scoring, corpus_wer

    scored = corpus_wer(["lone surrogate \ud800 here"], ["lone surrogate \ud800 there"], Scoring(Scorer.v2026))
    assert scored.words.substitutions == 1 and scored.words.deletions == scored.words.insertions == 0
