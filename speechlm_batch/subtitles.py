"""Subtitles from predictions: the rows of each audio file become timed cues, written as SRT or WebVTT.

A row's cues are its `segments` (from `--timestamps`) shifted by the row's manifest `offset`, so rows that are
stretches of one long recording (NeMo manifests with offsets) land on that recording's timeline. A row without
segments gives one cue over its own audio (`offset` to `offset + _audio_s`). Failed rows give none.

SRT is composed by the `srt` package; WebVTT differs from it only in its header, the `.` before the
milliseconds and the escaping of `&`, `<`, `>` in cue text, which is done here.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Any

import srt

from speechlm_batch.errors import SpeechlmBatchError, UsageError
from speechlm_batch.fsutil import atomic_write_text
from speechlm_batch.outputs import read_predictions
from speechlm_batch.types import Seconds

NAME_JOIN = "__"  # between the parent folders and the stem of a subtitle file's name
BLANK_LINES = re.compile(r"\n\s*\n")  # would end a cue early in both formats
VTT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


class SubtitleFormat(StrEnum):
    srt = "srt"
    vtt = "vtt"


@dataclass(frozen=True, slots=True)
class Cue:
    start_s: Seconds
    end_s: Seconds
    text: str


@dataclass(frozen=True, slots=True)
class Track:
    """The cues of one audio file, in time order."""

    audio: str  # the audio path as the rows give it (or the row id when they give none)
    cues: tuple[Cue, ...]


@dataclass(frozen=True, slots=True)
class Exported:
    """What `export` wrote: one file per audio file, and the row counts behind them."""

    files: tuple[Path, ...]
    grouped: Grouped


@dataclass(frozen=True, slots=True)
class Grouped:
    """Tracks in first-seen order, and how many rows were used, untimed (no segments) or skipped (failed)."""

    tracks: tuple[Track, ...]
    rows_timed: int
    rows_untimed: int
    rows_failed: int


def export(source: Path, out_dir: Path, fmt: SubtitleFormat, audio_key: str = "audio_filepath") -> Exported:
    """Write one subtitle file per audio file of the predictions in `source` (a run's folder or a .jsonl)."""
    rows = (row for path in prediction_files(source) for row in read_predictions(path))
    grouped = group_rows(rows, audio_key)
    stems = file_stems([track.audio for track in grouped.tracks])
    files = []
    for track in grouped.tracks:
        path = out_dir / f"{stems[track.audio]}.{fmt.value}"
        try:
            atomic_write_text(path, render(track.cues, fmt))
        except OSError as e:
            raise SpeechlmBatchError(f"cannot write {path}: {e.strerror or e}", hint="choose another -o folder") from e
        files.append(path)
    return Exported(tuple(files), grouped)


def prediction_files(source: Path) -> list[Path]:
    """`source` itself, or the folder's predictions.jsonl, or (an unmerged array run) its chunk files."""
    if source.is_file():
        return [source]
    merged = source / "predictions.jsonl"
    if merged.is_file():
        return [merged]
    chunks = sorted(source.glob("predictions.chunk-*-of-*.jsonl"))
    if not chunks:
        raise UsageError(
            f"no predictions.jsonl (or predictions.chunk-*.jsonl) in {source}",
            hint="pass the --output-dir of a transcribe run (with --timestamps for timed cues), or a predictions file",
        )
    return chunks


def group_rows(rows: Iterable[Mapping[str, Any]], audio_key: str = "audio_filepath") -> Grouped:
    """The tracks of a predictions file's rows: grouped by audio path, each row's cues on the file's timeline."""
    cues: dict[str, list[Cue]] = {}
    timed = untimed = failed = 0
    for row in rows:
        if row.get("pred_text") is None or "error" in row:
            failed += 1
            continue
        audio = str(row.get(audio_key) or row.get("_id", ""))
        row_cues = _row_cues(row)
        if "segments" in row:
            timed += 1
        else:
            untimed += 1
        cues.setdefault(audio, []).extend(row_cues)
    tracks = tuple(Track(audio, tuple(sorted(c, key=lambda cue: (cue.start_s, cue.end_s)))) for audio, c in cues.items())
    return Grouped(tracks, timed, untimed, failed)


def _row_cues(row: Mapping[str, Any]) -> list[Cue]:
    offset_s = float(row.get("offset") or 0.0)
    segments = row.get("segments")
    if segments is None:  # a run without --timestamps: the row is the finest span known
        end_s = row.get("_audio_s") or row.get("duration") or 0.0
        segments = [{"start_s": 0.0, "end_s": end_s, "text": row["pred_text"]}]
    return [
        Cue(offset_s + float(s["start_s"]), offset_s + float(s["end_s"]), str(s["text"]).strip())
        for s in segments
        if str(s.get("text", "")).strip()
    ]


def file_stems(audio_paths: Sequence[str]) -> dict[str, str]:
    """A distinct file stem per audio path: its stem, with as many parent folders as tell it apart.

    `a/x.wav`, `b/x.wav` -> `a__x`, `b__x`; `a/x.wav`, `a/x.flac` -> `x.wav`, `x.flac`; whatever still collides
    (paths equal but for `..` or case) gets `-2`, `-3`... in first-seen order. Names never hold a separator.
    """
    parts = {p: [x for x in PurePath(p).parts if x not in (PurePath(p).anchor, "..", ".")] or ["audio"] for p in audio_paths}
    depth = dict.fromkeys(audio_paths, 1)

    def name(path: str, keep_suffix: bool = False) -> str:
        folders, file_name = parts[path][-depth[path] : -1], parts[path][-1]
        return NAME_JOIN.join([*folders, file_name if keep_suffix else (PurePath(file_name).stem or file_name)])

    while True:  # widen every colliding name by one folder until unique or out of folders
        widened = False
        for group in _collisions({p: name(p) for p in audio_paths}):
            for path in group:
                if depth[path] < len(parts[path]):
                    depth[path] += 1
                    widened = True
        if not widened:
            break
    names = {p: name(p) for p in audio_paths}
    for group in _collisions(names):
        names.update({p: name(p, keep_suffix=True) for p in group})
    for group in _collisions(names):
        names.update({p: f"{names[p]}-{k}" for k, p in enumerate(group[1:], start=2)})
    return names


def _collisions(names: Mapping[str, str]) -> list[list[str]]:
    by_name: dict[str, list[str]] = {}
    for path, stem in names.items():
        by_name.setdefault(stem.casefold(), []).append(path)  # case-insensitive file systems too
    return [group for group in by_name.values() if len(group) > 1]


def render(cues: Sequence[Cue], fmt: SubtitleFormat) -> str:
    """The whole subtitle file for one track."""
    if fmt is SubtitleFormat.srt:
        subtitles = [srt.Subtitle(i, _delta(c.start_s), _delta(c.end_s), c.text) for i, c in enumerate(cues, 1)]
        return srt.compose(subtitles)
    blocks = [
        f"{i}\n{timestamp(c.start_s, fmt)} --> {timestamp(c.end_s, fmt)}\n{_vtt_text(c.text)}\n"
        for i, c in enumerate(cues, 1)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def timestamp(seconds: Seconds, fmt: SubtitleFormat) -> str:
    """`00:00:01,230` (SRT) or `00:00:01.230` (WebVTT), rounded to the millisecond."""
    text = srt.timedelta_to_srt_timestamp(_delta(seconds))
    return text if fmt is SubtitleFormat.srt else text.replace(",", ".")


def _delta(seconds: Seconds) -> datetime.timedelta:
    # whole milliseconds first: timedelta_to_srt_timestamp truncates, and 1.2299999 s must read 00:00:01,230
    return datetime.timedelta(milliseconds=max(0, round(seconds * 1000)))


def _vtt_text(text: str) -> str:
    text = BLANK_LINES.sub("\n", text.strip())
    return "".join(VTT_ESCAPES.get(ch, ch) for ch in text)
