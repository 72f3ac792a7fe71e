"""Word-count types, RTFx, the Open ASR Leaderboard's averaging rules and chunk joining. Pure logic, no I/O.

Which normalizer and aligner turn text into counts is `scoring` (scorers by name); `normalize` and
`corpus_wer` here are the default scorer's, for callers that do not pick one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from speechlm_batch.scoring import Scoring

IGNORE_REFERENCE = "ignore time segment in scoring"  # leaderboard data_utils drops these references
CHUNK_PARENT_KEY = "parent_id"
CHUNK_INDEX_KEY = "chunk_index"


def normalize(text: str) -> str:
    """The default scorer's normalizer for English (the leaderboard's 2026 English normalizer)."""
    from speechlm_batch.scoring import Scoring

    return Scoring().normalize(text)


@dataclass(frozen=True)
class WerStats:
    """Word alignment counts over a set of utterances; `+` sums sets (shards, datasets)."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    hits: int = 0
    reference_words: int = 0
    utterances: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """Corpus WER as a fraction; None when there are no reference words."""
        return self.errors / self.reference_words if self.reference_words else None

    def __add__(self, other: WerStats) -> WerStats:
        if not isinstance(other, WerStats):
            return NotImplemented
        return WerStats(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.hits + other.hits,
            self.reference_words + other.reference_words,
            self.utterances + other.utterances,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "hits": self.hits,
            "errors": self.errors,
            "reference_words": self.reference_words,
            "utterances": self.utterances,
            "wer": self.wer,
        }


@dataclass(frozen=True)
class ScoredSet:
    """Scores of one set of (reference, hypothesis) pairs; `+` sums sets.

    Attributes:
        words: word-level counts (corpus WER).
        char_errors: character edits (S + D + I) on normalized text, spaces included.
        reference_chars: characters of the normalized references, spaces included.
        utterance_wer_sum: sum of per-utterance WERs, so that sums of sets keep an exact mean.
        dropped_refs: pairs not scored: normalized reference empty or "ignore time segment in scoring".
    """

    words: WerStats = WerStats()
    char_errors: int = 0
    reference_chars: int = 0
    utterance_wer_sum: float = 0.0
    dropped_refs: int = 0

    @property
    def wer(self) -> float | None:
        return self.words.wer

    @property
    def cer(self) -> float | None:
        return self.char_errors / self.reference_chars if self.reference_chars else None

    @property
    def mean_utterance_wer(self) -> float | None:
        """Unweighted mean of per-utterance WERs. Not the leaderboard number; shown to explain differences."""
        return self.utterance_wer_sum / self.words.utterances if self.words.utterances else None

    def __add__(self, other: ScoredSet) -> ScoredSet:
        if not isinstance(other, ScoredSet):
            return NotImplemented
        return ScoredSet(
            self.words + other.words,
            self.char_errors + other.char_errors,
            self.reference_chars + other.reference_chars,
            self.utterance_wer_sum + other.utterance_wer_sum,
            self.dropped_refs + other.dropped_refs,
        )


def corpus_wer(refs: Sequence[str], hyps: Sequence[str], scoring: Scoring | None = None) -> ScoredSet:
    """`scoring.corpus_wer` with the default scorer unless one is given."""
    from speechlm_batch import scoring as scoring_mod

    return scoring_mod.corpus_wer(refs, hyps, scoring or scoring_mod.Scoring())


def rtfx(audio_s: float | None, time_s: float | None) -> float | None:
    """Inverse real-time factor: seconds of audio per second of compute. None when the time is unknown or 0."""
    if audio_s is None or time_s is None or time_s <= 0:
        return None
    return audio_s / time_s


def leaderboard_average(wers_percent: Sequence[float]) -> float:
    """The leaderboard's "Avg. WER": plain mean of per-dataset WER % each rounded to 2 decimals, rounded to 2."""
    if not wers_percent:
        raise ValueError("no per-dataset WERs to average")
    rounded = [round(w, 2) for w in wers_percent]
    return round(sum(rounded) / len(rounded), 2)


ReferenceMode = Literal["auto", "call", "chunks"]


def join_chunked(
    rows: Iterable[Mapping[str, Any]], reference: ReferenceMode = "auto"
) -> tuple[list[dict[str, Any]], list[str]]:
    """Merge chunk rows (`parent_id` and `chunk_index`) into one row per parent, as the 2026 scorer does.

    Chunk predictions are joined with " " in `chunk_index` order (empty / null ones skipped). The chunked
    Earnings22 set stores the whole call's reference on every chunk and the scorer uses it once; per-chunk
    references are joined like predictions instead. `duration`, `time` and `_audio_s` are summed (None when
    any chunk lacks them). Rows without both keys pass through unchanged.

    Args:
        rows: leaderboard or prediction rows.
        reference: "call" = every chunk carries the call reference (use the first chunk's); "chunks" = join
            the chunks' texts; "auto" = "call" when all chunks of a parent carry the same text, else "chunks".

    Returns:
        (rows with each parent at the place of its first chunk, warnings). A warning is given for every
        parent whose chunk indices are not 0..n-1 (missing chunks inflate deletions) and for "call" parents
        whose chunks disagree on the reference.
    """
    out: list[dict[str, Any] | _Placeholder] = []  # placeholders are filled once all chunks are seen
    parents: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get(CHUNK_PARENT_KEY) is None or row.get(CHUNK_INDEX_KEY) is None:
            out.append(dict(row))
            continue
        parent = row[CHUNK_PARENT_KEY]
        if parent not in parents:
            parents[parent] = []
            out.append(_Placeholder(parent))
        parents[parent].append(row)
    warnings: list[str] = []
    merged = {parent: _merge_parent(parent, chunks, reference, warnings) for parent, chunks in parents.items()}
    return [merged[item.parent] if isinstance(item, _Placeholder) else item for item in out], warnings


@dataclass(frozen=True)
class _Placeholder:
    parent: Any


def _merge_parent(
    parent: Any, chunks: list[Mapping[str, Any]], reference: ReferenceMode, warnings: list[str]
) -> dict[str, Any]:
    chunks = sorted(chunks, key=lambda c: int(c[CHUNK_INDEX_KEY]))
    indices = [int(c[CHUNK_INDEX_KEY]) for c in chunks]
    if indices != list(range(len(indices))):
        warnings.append(
            f"parent {parent}: chunk indices {indices} are not contiguous from 0; missing chunks count as deletions"
        )
    texts = [c.get("text") for c in chunks]
    same_text = all(t == texts[0] for t in texts)
    if reference == "call" or (reference == "auto" and same_text and len(chunks) > 1):
        if not same_text:
            warnings.append(f"parent {parent}: chunks carry different references; using chunk {indices[0]}'s")
        text = texts[0]
    else:
        text = None if all(t is None for t in texts) else _join(texts)
    merged: dict[str, Any] = {
        CHUNK_PARENT_KEY: parent,
        "audio_filepath": str(parent),
        "text": text,
        "pred_text": _join(c.get("pred_text") for c in chunks),
        "chunks": len(chunks),
    }
    for key in ("duration", "time", "_audio_s"):
        if any(key in c for c in chunks):
            merged[key] = _sum_or_none(c.get(key) for c in chunks)
    return merged


def _join(texts: Iterable[str | None]) -> str:
    return " ".join(s for t in texts if (s := (t or "").strip()))


def _sum_or_none(values: Iterable[float | None]) -> float | None:
    values = list(values)
    return None if any(v is None for v in values) else float(sum(values))
