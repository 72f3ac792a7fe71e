"""NeMo JSONL manifests, read lazily: one line in memory at a time, every bad line a value.

Each non-blank line becomes an `Utterance` or a `BadRow`. The reader never raises for a bad line, so a
manifest with a few broken rows still runs and the broken rows reach the output with their `error`;
`--strict` makes them fatal through `validate_manifest`. Lines are read as bytes and decoded one at a time,
so a single non-UTF-8 line cannot stop the run.

Numbering:
    * line numbers are 1-based and count every line of the file, blank ones included (what an editor shows);
      messages say `<manifest>:<line>`.
    * positions are 0-based and count only non-blank lines: the input order that merge restores.
    * a line is blank when it holds only ASCII whitespace (space, tab, CR, LF, VT, FF).

Ids: the row's `id` (a string, or an integer turned into a string) when present and not null; otherwise
`"L<line number>"`, e.g. `"L12"` for the 12th line of the file. An id seen earlier in the file turns the later
row into a `BadRow` of kind DUPLICATE_ID. Bad rows get the id `"L<line number>"` too (with a `.k` suffix in
the rare case that string is already taken), so every item the reader yields has a unique id: the writer's
resume logic relies on that.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from speechlm_batch.errors import ManifestError
from speechlm_batch.types import BadRow, ErrorKind, RowError, Utterance

_MAX_SHOWN_CHARS = 60  # how much of a wrong value an error message quotes


class _RowProblem(Exception):
    """A field problem found while parsing one row; caught in `_parse_line`, never leaves this module."""


DEFAULT_KEYS = ("audio_filepath", "text")


def read_manifest(path: Path, keys: tuple[str, str] = DEFAULT_KEYS) -> Iterator[Utterance | BadRow]:
    """Yield one `Utterance` or `BadRow` per non-blank line of a NeMo JSONL manifest, lazily.

    Args:
        path: the manifest. Relative `audio_filepath` values are resolved against its folder.

    Yields:
        Items in file order with positions 0, 1, 2, ... and unique ids.

    Raises:
        OSError: only when the file itself cannot be opened or read (`open_manifest` checks that first).
    """
    path = Path(path)
    base_dir = path.absolute().parent
    # Every id seen so far: O(rows) memory of short strings, the price of catching duplicates in a stream.
    seen: set[str] = set()
    position = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            item = _parse_line(raw, path, line_no, position, base_dir, seen, keys)
            seen.add(item.id)
            yield item
            position += 1


def count_rows(path: Path) -> int:
    """Count the non-blank lines without parsing JSON (about 0.4 s per million lines): a progress total."""
    with Path(path).open("rb") as f:
        return sum(1 for raw in f if raw.strip())


def validate_manifest(path: Path, keys: tuple[str, str] = DEFAULT_KEYS) -> list[BadRow]:
    """Return every bad row of the manifest, in file order (empty when all rows are usable).

    `--strict` calls this before the engine starts and raises `errors.ManifestError` for the first one.
    """
    return [item for item in read_manifest(path, keys) if isinstance(item, BadRow)]


class ManifestSource:
    """A NeMo manifest as a `sources.Source`: re-iterable, with a cheap, cached `len()`."""

    def __init__(self, path: Path, name: str | None = None, keys: tuple[str, str] = DEFAULT_KEYS) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.keys = keys  # (audio key, text key): NeMo's audio_filepath / text unless --audio-key / --text-key
        self._len: int | None = None

    def __iter__(self) -> Iterator[Utterance | BadRow]:
        return read_manifest(self.path, self.keys)

    def __len__(self) -> int:
        if self._len is None:
            self._len = count_rows(self.path)
        return self._len

    def identity(self) -> dict[str, object]:
        """What the input was, recorded beside the predictions (path, size, modification time)."""
        stat = self.path.stat()
        return {"path": str(self.path.resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime}

    def __repr__(self) -> str:
        return f"ManifestSource({str(self.path)!r})"


def open_manifest_source(path: Path, keys: tuple[str, str] = DEFAULT_KEYS) -> ManifestSource:
    """Check that the manifest can be opened and wrap it; raises `errors.ManifestError` otherwise."""
    path = Path(path)
    if not path.exists():
        raise ManifestError(str(path), None, "no such file")
    if path.is_dir():
        raise ManifestError(str(path), None, "is a folder, expected a JSONL manifest file")
    try:
        with path.open("rb"):
            pass
    except OSError as e:
        raise ManifestError(str(path), None, f"cannot be opened: {e.strerror or e}") from e
    return ManifestSource(path, keys=keys)


def _parse_line(
    raw: bytes, path: Path, line_no: int, position: int, base_dir: Path, seen: set[str], keys: tuple[str, str]
) -> Utterance | BadRow:
    where = f"{path}:{line_no}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        shown = raw.rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")
        message = f"{where}: not valid UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})"
        return _bad_row(ErrorKind.BAD_ROW, message, shown, line_no, position, seen)
    line = text.rstrip("\r\n")
    if line_no == 1:
        line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark written by some Windows tools
    try:
        row = _load_object(line)
        fields = _fields(row, base_dir, keys)
        row_id = _row_id(row, line_no)
    except _RowProblem as e:
        return _bad_row(ErrorKind.BAD_ROW, f"{where}: {e}", line, line_no, position, seen)
    if row_id in seen:
        message = f"{where}: id {row_id!r} was already used by an earlier row"
        return _bad_row(ErrorKind.DUPLICATE_ID, message, line, line_no, position, seen)
    if keys[1] != "text" and fields["text"] is not None:
        row = {**row, "text": fields["text"]}  # scoring reads `text` from the output rows
    return Utterance(id=row_id, position=position, row=row, **fields)


def _load_object(line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except RecursionError:
        raise _RowProblem("not valid JSON: nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError, or an integer too long to convert
        raise _RowProblem(f"not valid JSON: {e}") from None
    if not isinstance(row, dict):
        raise _RowProblem(f"expected a JSON object, got {_json_type(row)}")
    return row


def _fields(row: Mapping[str, Any], base_dir: Path, keys: tuple[str, str] = DEFAULT_KEYS) -> dict[str, Any]:
    """The typed Utterance fields of a row; raises `_RowProblem` naming the first wrong field."""
    audio_key, text_key = keys
    if audio_key not in row:
        raise _RowProblem(f"field {audio_key!r} is missing")
    audio = row[audio_key]
    if not isinstance(audio, str) or not audio:
        raise _RowProblem(f"field {audio_key!r} must be a non-empty string, got {_shown(audio)}")
    offset_s = _number(row, "offset")
    if offset_s is not None and offset_s < 0:
        raise _RowProblem(f"field 'offset' must be a number >= 0, got {_shown(row['offset'])}")
    duration_s = _number(row, "duration")
    if duration_s is not None and duration_s <= 0:
        raise _RowProblem(f"field 'duration' must be a number > 0, got {_shown(row['duration'])}")
    text = row.get(text_key)
    if text is not None and not isinstance(text, str):
        raise _RowProblem(f"field {text_key!r} must be a string, got {_shown(text)}")
    resolved = audio if os.path.isabs(audio) else str(base_dir / audio)
    return {
        "audio_filepath": resolved,
        "offset_s": offset_s or 0.0,
        "duration_s": duration_s,
        "text": text,
    }


def _number(row: Mapping[str, Any], key: str) -> float | None:
    """A finite number field as float; None when absent or null."""
    value = row.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _RowProblem(f"field {key!r} must be a finite number, got {_shown(value)}")
    return float(value)


def _row_id(row: Mapping[str, Any], line_no: int) -> str:
    value = row.get("id")
    if value is None:
        return f"L{line_no}"
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _RowProblem(f"field 'id' must be a string or an integer, got {_shown(value)}")
    return str(value)


def _bad_row(kind: ErrorKind, message: str, raw: str, line_no: int, position: int, seen: set[str]) -> BadRow:
    row_id, k = f"L{line_no}", 0
    while row_id in seen:  # only when a row chose an "L<n>" id itself
        k += 1
        row_id = f"L{line_no}.{k}"
    return BadRow(id=row_id, position=position, raw=raw, error=RowError(kind, message))


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _shown(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > _MAX_SHOWN_CHARS:
        text = text[: _MAX_SHOWN_CHARS - 3] + "..."
    return f"{_json_type(value)} {text}"
