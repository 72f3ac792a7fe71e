"""Scorers by name: how (reference, hypothesis) pairs and prediction rows become WER. Pure logic, no I/O.

Two scorers (docs: leaderboard-and-peers.md §0-1; upstream `normalizer/eval_utils.py`):

* `2026` (default, the board since 2026-07): raw text normalized at scoring time, the English 2026
  normalizer (or, for another `--language`, the multilingual one plus the compound-pair step), and
  `kaldialign` edit distance with `merge_compounds=True` ("white paper" == "whitepaper", both ways).
* `classic` (the board July 2024 - July 2026): Whisper's EnglishTextNormalizer and jiwer (what
  `evaluate.load("wer")` runs). Another `--language` gets the multilingual normalizer here too: the
  English one would rewrite words it does not know.

Both: WER is corpus level (errors summed over the set / reference words summed); pairs whose normalized
reference is empty or "ignore time segment in scoring" are dropped, as the board drops them before inference;
a failed row is scored as an empty hypothesis (all its reference words deleted), as the board's files score
it, and the WER over successful rows only is reported beside it.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from speechlm_batch import normalizers
from speechlm_batch.metrics import IGNORE_REFERENCE, ReferenceMode, ScoredSet, WerStats, join_chunked
from speechlm_batch.settings import DEFAULT_LANGUAGE, DEFAULT_SCORER, RunSettings


class Scorer(StrEnum):
    v2026 = "2026"
    classic = "classic"


@dataclass(frozen=True)
class Scoring:
    """Which scorer, for which language: everything that decides how text is scored."""

    scorer: Scorer = Scorer(DEFAULT_SCORER)
    language: str = DEFAULT_LANGUAGE

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorer", Scorer(self.scorer))
        object.__setattr__(self, "language", (self.language or DEFAULT_LANGUAGE).lower())

    @property
    def english(self) -> bool:
        return self.language == "en"

    @property
    def normalizer_name(self) -> str:
        if not self.english:
            return f"{normalizers.MULTILINGUAL} [{self.language}]"
        return normalizers.ENGLISH_2026 if self.scorer is Scorer.v2026 else normalizers.CLASSIC

    def normalize(self, text: str) -> str:
        if not self.english:
            return normalizers.multilingual(self.language)(text)
        return (normalizers.english_2026() if self.scorer is Scorer.v2026 else normalizers.classic_english())(text)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | RunSettings) -> Scoring:
        """The scoring a run's settings ask for (a `RunSettings`, or its `to_dict()` as report.json holds it)."""
        d = settings.to_dict() if isinstance(settings, RunSettings) else settings
        return cls(Scorer(d.get("scorer") or DEFAULT_SCORER), (d.get("decode") or {}).get("language") or DEFAULT_LANGUAGE)

    def describe(self) -> dict[str, Any]:
        """What results files say about the scoring."""
        aligner = "kaldialign 0.12 batch_error_rate(merge_compounds=True)" if self.scorer is Scorer.v2026 else "jiwer"
        steps = "compound pairs aligned, then " if self.scorer is Scorer.v2026 and not self.english else ""
        return {
            "scorer": self.scorer.value,
            "language": self.language,
            "normalizer": self.normalizer_name,
            "wer": f"{steps}{aligner}, corpus level",
        }


def note(scoring: Scoring) -> str:
    """One sentence for results files."""
    d = scoring.describe()
    return (
        f"Scorer {d['scorer']} (language {d['language']}): normalizer {d['normalizer']}; WER {d['wer']}. "
        "References that normalize to empty or 'ignore time segment in scoring' are dropped. Failed rows are "
        "scored as empty hypotheses (as the leaderboard scores its files); WER over ok rows only is shown beside."
    )


# ---------------------------------------------------------------------------------------------- pairs


def compound_pairs(refs: Sequence[str], hyps: Sequence[str]) -> tuple[list[str], list[str]]:
    """Where a differing stretch of words spells the same letters on both sides, write both joined.

    "die haus tür" vs "die haustür" -> both "die haustür": the multilingual track's step so that split and
    joined compounds are no error.
    """
    out_refs, out_hyps = [], []
    for ref, hyp in zip(refs, hyps):
        r, h = ref.split(), hyp.split()
        new_r: list[str] = []
        new_h: list[str] = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, r, h, autojunk=False).get_opcodes():
            joined_r, joined_h = "".join(r[i1:i2]), "".join(h[j1:j2])
            if tag != "equal" and joined_r == joined_h:
                new_r.append(joined_r)
                new_h.append(joined_h)
            else:
                new_r.extend(r[i1:i2])
                new_h.extend(h[j1:j2])
        out_refs.append(" ".join(new_r))
        out_hyps.append(" ".join(new_h))
    return out_refs, out_hyps


def corpus_wer(refs: Sequence[str], hyps: Sequence[str], scoring: Scoring = Scoring()) -> ScoredSet:
    """Normalize both sides and score the pairs at corpus level with `scoring`'s rules.

    Args:
        refs: raw reference transcripts.
        hyps: raw hypotheses, same length. An empty hypothesis counts every reference word as deleted.

    Returns:
        Word counts, CER and mean per-utterance WER over the kept pairs, and how many pairs were dropped.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    kept_refs: list[str] = []
    kept_hyps: list[str] = []
    for ref, hyp in zip(refs, hyps):
        norm_ref = scoring.normalize(ref).strip()
        if not norm_ref or norm_ref == IGNORE_REFERENCE:
            continue
        kept_refs.append(norm_ref)
        kept_hyps.append(scoring.normalize(hyp).strip())
    dropped = len(refs) - len(kept_refs)
    if not kept_refs:
        return ScoredSet(dropped_refs=dropped)
    if scoring.scorer is Scorer.v2026 and not scoring.english:
        kept_refs, kept_hyps = compound_pairs(kept_refs, kept_hyps)
    count = _kaldialign_counts if scoring.scorer is Scorer.v2026 else _jiwer_counts
    words, utterance_wer_sum = count(kept_refs, kept_hyps)
    char_errors, reference_chars = _char_counts(kept_refs, kept_hyps)
    return ScoredSet(words, char_errors, reference_chars, utterance_wer_sum, dropped)


def _kaldialign_counts(refs: list[str], hyps: list[str]) -> tuple[WerStats, float]:
    """Per-pair kaldialign counts summed: the same totals as `batch_error_rate`, plus per-utterance WERs."""
    import kaldialign

    sub = dele = ins = ref_words = 0
    utterance_wer_sum = 0.0
    for ref, hyp in zip(refs, hyps):
        r = kaldialign.edit_distance(_utf8_words(ref), _utf8_words(hyp), merge_compounds=True)
        sub, dele, ins, ref_words = sub + r["sub"], dele + r["del"], ins + r["ins"], ref_words + r["ref_len"]
        utterance_wer_sum += r["total"] / r["ref_len"]
    hits = ref_words - sub - dele
    return WerStats(sub, dele, ins, hits, ref_words, len(refs)), utterance_wer_sum


def _utf8_words(text: str) -> list[str]:
    """Words kaldialign's C++ side can take: a lone surrogate (text decoded with surrogateescape, or a bad
    `\\ud800` escape in a manifest) has no UTF-8 form, so it is written as its escape, on both sides alike."""
    return [w.encode("utf-8", "backslashreplace").decode("utf-8") for w in text.split()]


def _jiwer_counts(refs: list[str], hyps: list[str]) -> tuple[WerStats, float]:
    """Corpus counts, plus the sum of per-utterance WERs read off jiwer's per-pair alignments."""
    import jiwer

    out = jiwer.process_words(refs, hyps)
    utterance_wer_sum = 0.0
    for ref_words, chunks in zip(out.references, out.alignments):
        edits = sum(
            max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx) for c in chunks if c.type != "equal"
        )
        utterance_wer_sum += edits / len(ref_words)
    stats = WerStats(
        substitutions=out.substitutions,
        deletions=out.deletions,
        insertions=out.insertions,
        hits=out.hits,
        reference_words=sum(len(r) for r in out.references),
        utterances=len(refs),
    )
    return stats, utterance_wer_sum


def _char_counts(refs: list[str], hyps: list[str]) -> tuple[int, int]:
    import jiwer

    out = jiwer.process_characters(refs, hyps)
    return out.substitutions + out.deletions + out.insertions, sum(len(r) for r in out.references)


# ---------------------------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class DatasetScore:
    """What one predictions (or leaderboard) file scores.

    Attributes:
        rows_total: every row, failed ones included.
        rows_ok: rows with a prediction.
        rows_failed_by_kind: ErrorKind value -> count ("unknown" when a failed row names none).
        rows_unscored: rows without a `text` reference (ok or failed).
        audio_s: decoded audio of ok rows (`_audio_s`, else `duration`).
        scored: WER / CER over every row with a reference, failed rows as empty hypotheses (chunk rows joined
            per parent): the leaderboard's number.
        scored_ok_only: the same over ok rows only: what the model scored where it produced text.
        failed_scored: failed rows that carry a reference, so count in `scored` as all-deleted.
        scoring: the scorer and language used.
        loops_collapsed: repetition loops removed by the runaway guard.
        warnings: chunk-joining problems (missing chunks, disagreeing references).
        rows_truncated: ok rows whose text the token cap cut (`_truncated`, finish_reason "length").
    """

    rows_total: int
    rows_ok: int
    rows_failed_by_kind: Mapping[str, int]
    rows_unscored: int
    audio_s: float
    scored: ScoredSet
    scored_ok_only: ScoredSet = ScoredSet()
    failed_scored: int = 0
    scoring: Scoring = field(default_factory=Scoring)
    loops_collapsed: int = 0
    warnings: tuple[str, ...] = ()
    rows_truncated: int = 0

    @property
    def rows_failed(self) -> int:
        return sum(self.rows_failed_by_kind.values())


def is_ok(row: Mapping[str, Any]) -> bool:
    return isinstance(row.get("pred_text"), str) and not row.get("error")


def failure_kind(row: Mapping[str, Any]) -> str:
    error = row.get("error")
    if isinstance(error, str) and error:
        return error  # leaderboard files written here carry the kind as a string
    return str(error.get("kind") or "unknown") if isinstance(error, Mapping) else "unknown"


def reference_text(row: Mapping[str, Any]) -> str | None:
    """A row's reference: `text`, or for a row that failed before it was read (only `_raw` kept, as for an
    undecodable dataset row) the `text` inside `_raw` when that is a JSON object."""
    text = row.get("text")
    if isinstance(text, str):
        return text
    raw = row.get("_raw")
    if isinstance(raw, str) and raw.lstrip().startswith("{"):
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return None
        if isinstance(parsed, dict) and isinstance(parsed.get("text"), str):
            return parsed["text"]
    return None


def row_audio_s(row: Mapping[str, Any]) -> float:
    value = row.get("_audio_s", row.get("duration"))
    return float(value) if isinstance(value, (int, float)) else 0.0


def score_rows(
    rows: Iterable[Mapping[str, Any]], scoring: Scoring = Scoring(), reference: ReferenceMode = "auto"
) -> DatasetScore:
    """Count and score prediction (or leaderboard) rows.

    Args:
        rows: rows of a predictions JSONL (see outputs) or of a leaderboard manifest.
        scoring: scorer and language.
        reference: how chunk rows' references are joined (see `metrics.join_chunked`).
    """
    total = ok = unscored = loops = truncated = 0
    failed: Counter[str] = Counter()
    audio_s = 0.0
    with_ref: list[dict[str, Any]] = []
    for row in rows:
        total += 1
        loops += int(row.get("_loops_collapsed") or 0)
        truncated += row.get("_truncated") is True
        good = is_ok(row)
        if good:
            ok += 1
            audio_s += row_audio_s(row)
        else:
            failed[failure_kind(row)] += 1
        text = reference_text(row)
        if text is None:
            unscored += 1
            continue
        with_ref.append({**row, "text": text, "pred_text": row["pred_text"] if good else "", "_ok": good})
    scored, warnings = _score_joined(with_ref, scoring, reference)
    failed_scored = sum(1 for r in with_ref if not r["_ok"])
    scored_ok = _score_joined([r for r in with_ref if r["_ok"]], scoring, reference)[0] if failed_scored else scored
    return DatasetScore(
        total, ok, dict(failed), unscored, audio_s, scored, scored_ok, failed_scored, scoring, loops, tuple(warnings),
        truncated,
    )


def _score_joined(rows: list[dict[str, Any]], scoring: Scoring, reference: ReferenceMode) -> tuple[ScoredSet, list[str]]:
    joined, warnings = join_chunked(rows, reference)
    return corpus_wer([r["text"] for r in joined], [r["pred_text"] for r in joined], scoring), warnings
