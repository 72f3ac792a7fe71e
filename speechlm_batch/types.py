"""Values that cross module boundaries.

Data only: no I/O, no third-party imports beyond numpy. Every stage hands the next one of these frozen
dataclasses, never a dict with magic keys; dicts appear only at the JSON edge (`outputs`, `reports`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

Seconds = float


class ErrorKind(StrEnum):
    """Why a row could not be transcribed. Counted per kind in the report."""

    BAD_ROW = "bad_row"  # manifest / dataset row that is not valid (not JSON, missing or mistyped fields)
    DUPLICATE_ID = "duplicate_id"  # the same id appeared earlier in the input
    MISSING_FILE = "missing_file"
    UNREADABLE = "unreadable"  # libsndfile could not decode it
    EMPTY_AUDIO = "empty_audio"  # zero samples after offset/duration
    BAD_SAMPLES = "bad_samples"  # NaN or inf samples
    SILENT_AUDIO = "silent_audio"  # digital silence: Whisper-style decoders hallucinate ("you") on it
    OUT_OF_RANGE = "out_of_range"  # offset / duration outside the file
    ENGINE = "engine"  # vLLM rejected or failed the request
    SERVER = "server"  # server mode: no answer after every retry (server down, timeouts, 5xx); a rerun redoes it
    FRONTEND = "frontend"  # the front-end worker process holding the row died or hung


@dataclass(frozen=True, slots=True)
class RowError:
    """A row-level failure: a value, never raised across module boundaries."""

    kind: ErrorKind
    message: str  # names the file and, for manifests, the line number

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind.value, "message": self.message}


@dataclass(frozen=True, slots=True)
class Utterance:
    """One input row: where its audio is, which part of it, and the row to write back."""

    id: str  # manifest "id", else "<line number>" / dataset index: stable across reruns
    position: int  # 0-based order in the input; merge restores it
    audio_filepath: str  # resolved path (HF rows: the dataset's path or a synthetic name)
    row: Mapping[str, Any]  # the input row, written back unchanged
    offset_s: Seconds = 0.0
    duration_s: Seconds | None = None
    text: str | None = None
    # In-memory audio for sources that decode it themselves (HF datasets): (samples, sample_rate).
    audio: tuple[np.ndarray, int] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class BadRow:
    """An input row that could not be parsed into an Utterance. It is written out with its error."""

    id: str
    position: int
    raw: str  # the line as read
    error: RowError


@dataclass(frozen=True, slots=True)
class Audio:
    """Decoded audio: mono float32 at `sample_rate`."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> Seconds:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class AudioPiece:
    """Piece `index` of `count` of one utterance's audio, at most the model's longest piece."""

    utterance_id: str
    index: int
    count: int
    samples: np.ndarray
    sample_rate: int
    offset_s: Seconds = 0.0  # where the piece starts inside the utterance's audio (pieces are contiguous)

    @property
    def duration_s(self) -> Seconds:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class Segment:
    """A timed stretch of a transcript, in seconds from the start of the row's audio (after its `offset`)."""

    start_s: Seconds
    end_s: Seconds
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "text": self.text}

    def shifted(self, by_s: Seconds) -> Segment:
        return Segment(self.start_s + by_s, self.end_s + by_s, self.text)


@dataclass(frozen=True, slots=True)
class RowResult:
    """The outcome for one input row: a prediction or an error, never both."""

    utterance: Utterance | BadRow
    pred_text: str | None
    error: RowError | None
    audio_s: Seconds = 0.0
    pieces: int = 0
    loops_collapsed: int = 0  # repetition loops removed from pred_text by the runaway guard
    prompt_tokens: int = 0  # prompt tokens the engine ran, summed over pieces (audio placeholders expanded)
    truncated: bool = False  # a piece stopped at the token cap (finish_reason "length"): text may be cut
    segments: tuple[Segment, ...] | None = None  # --timestamps only: the row's timed segments, in order

    @property
    def ok(self) -> bool:
        return self.error is None
