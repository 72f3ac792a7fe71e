"""Predictions on disk: one append-only JSONL file per run or chunk that survives kills and reruns.

Files in the output folder (stem = "predictions" or "predictions.chunk-0003-of-0016"):
    {stem}.jsonl      one line per input row, appended a window at a time, fsync'ed after each window
    {stem}.meta.json  written (atomically) when a fresh file is started: settings fingerprint, settings,
                      model, input identity, chunk, created time
    {stem}.done.json  written (atomically) by `finish()`: row counts, size and sha256 of the .jsonl
    {stem}.lock       flock'ed while a writer has the file open; holds the writer's pid and host

Resume (lhotse `SequentialJsonlWriter`, plus what it lacks): opening takes the lock (a second writer is refused
at once), checks the meta fingerprint and input identity and refuses to mix settings or inputs, cuts off a torn
last line left by a kill, then collects the `_id` of every row already written so the pipeline can skip them.
`finish()` rewrites the file in input order (atomically), so a finished run's file is byte-identical to the
merge of the same input's chunks; during a run rows are appended in completion order.

Row layout: the input row's fields as given (a bad row: `_raw`, the line as read), then `pred_text`
(null for failed rows), `segments` (--timestamps only: `[{"start_s", "end_s", "text"}]`, seconds from the start
of the row's audio), `error` ({"kind", "message"}, failed rows only), `_id`, `_position`, `_audio_s`,
`_pieces`, `_loops_collapsed` (only when > 0), `_truncated` (true only when the token cap cut a piece's text) and `_prompt_tokens` (prompt tokens the engine ran over all pieces, audio
placeholders expanded: what a model's audio token count can be checked against; only when known). Input fields with these names are replaced by ours; an input
`error` field is dropped from rows that succeeded, so `error` in the output always means this run failed it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Self

from speechlm_batch.errors import OutputBusyError, ResumeMismatchError, SpeechlmBatchError
from speechlm_batch.fsutil import atomic_write_chunks, atomic_write_text
from speechlm_batch.sharding import ChunkSpec
from speechlm_batch.types import BadRow, RowResult

_OUR_KEYS = (
    "pred_text", "segments", "error", "_id", "_position", "_audio_s", "_pieces", "_loops_collapsed", "_prompt_tokens",
    "_truncated",
)
_OVERWRITE_HINT = "use --overwrite to start over (or choose another --output-dir)"


@dataclass(frozen=True)
class OutputPaths:
    """The files of one predictions stem."""

    predictions: Path
    meta: Path
    done: Path

    @classmethod
    def of(cls, output_dir: Path, chunk: ChunkSpec | None) -> OutputPaths:
        stem = "predictions" if chunk is None else f"predictions.{chunk.label}"
        output_dir = Path(output_dir)
        return cls(output_dir / f"{stem}.jsonl", output_dir / f"{stem}.meta.json", output_dir / f"{stem}.done.json")

    @property
    def lock(self) -> Path:
        return self.predictions.with_suffix(".lock")


class OutputLock:
    """An exclusive `flock` on a `.lock` file beside the predictions, held while one writer owns them.

    The lock file is never deleted (deleting it would let two writers lock two different files); it holds
    the holder's pid, host and start time so that a refused writer can name it. The kernel drops the lock
    when the holder exits, however it exits.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, target: Path) -> OutputLock:
        """Lock `path` now or raise `errors.OutputBusyError` naming the holder of `target`'s lock."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise OutputBusyError(
                f"{target} is being written by another process ({holder})",
                hint="wait for it to finish, or write to another --output-dir; a stale lock cannot exist: "
                "it goes with its process",
            ) from None
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _lock_holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        record = {}
    if not isinstance(record, dict) or "pid" not in record:
        return "holder unknown"
    return f"pid {record.get('pid')} on host {record.get('host')}, since {record.get('since')}"


def result_to_dict(result: RowResult) -> dict[str, Any]:
    """The output row for one result (see the module docstring for the layout)."""
    item = result.utterance
    row: dict[str, Any] = {"_raw": item.raw} if isinstance(item, BadRow) else dict(item.row)
    for key in _OUR_KEYS:
        row.pop(key, None)  # ours win, and go last in a fixed order
    row["pred_text"] = result.pred_text
    if result.segments is not None:
        row["segments"] = [segment.to_dict() for segment in result.segments]
    if result.error is not None:
        row["error"] = result.error.to_dict()
    row.update(_id=item.id, _position=item.position, _audio_s=result.audio_s, _pieces=result.pieces)
    if result.loops_collapsed > 0:
        row["_loops_collapsed"] = result.loops_collapsed
    if result.prompt_tokens > 0:
        row["_prompt_tokens"] = result.prompt_tokens
    if result.truncated:
        row["_truncated"] = True
    return row


def encode_row(row: dict[str, Any]) -> bytes:
    """One JSON line. Lone surrogates (legal in JSON input, not encodable as UTF-8) fall back to \\u escapes."""
    try:
        return (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(row, ensure_ascii=True) + "\n").encode("ascii")


def read_predictions(path: Path) -> Iterator[dict[str, Any]]:
    """Yield the rows of a predictions file, skipping a torn tail (a kill mid-write).

    Raises:
        errors.SpeechlmBatchError: a bad line followed by good ones (corruption, not a torn tail).
    """
    for _end, row in _scan(Path(path)):
        yield row


def file_digest(path: Path) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a file, read in 1 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def done_marker(fingerprint: str, path: Path, rows_ok: int, rows_failed: int, finished: str) -> dict[str, Any]:
    """The content of a `.done.json` for `path` (also used by merge)."""
    size, sha256 = file_digest(path)
    return {
        "fingerprint": fingerprint,
        "rows_written": rows_ok + rows_failed,
        "rows_ok": rows_ok,
        "rows_failed": rows_failed,
        "bytes": size,
        "sha256": sha256,
        "finished": finished,
    }


def done_marker_matches(paths: OutputPaths, fingerprint: str | None = None) -> bool:
    """True when the done marker exists, its fingerprint agrees (if given) and it describes the file as is."""
    done = read_json(paths.done)
    if done is None or not paths.predictions.is_file():
        return False
    if fingerprint is not None and done.get("fingerprint") != fingerprint:
        return False
    if paths.predictions.stat().st_size != done.get("bytes"):
        return False  # cheap check first: hashing a large file takes a while
    return file_digest(paths.predictions) == (done.get("bytes"), done.get("sha256"))


def read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON object file (meta, done marker), or None when absent or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PredictionWriter:
    """Append-only writer of one predictions file; build it with `PredictionWriter.open`."""

    def __init__(self, paths: OutputPaths, fingerprint: str, input_key: Mapping[str, Any] | None = None) -> None:
        self.paths = paths
        self.fingerprint = fingerprint
        self.input_key = None if input_key is None else dict(input_key)
        self.retried_rows = 0  # failed rows removed by --retry-failed, to be redone
        self.done_ids: set[str] = set()  # ids in the file: one short string per row already written
        self.rows_ok = 0
        self.rows_failed = 0
        self.duplicates_prevented = 0  # results skipped because their id was already written
        self.dropped_tail_bytes = 0  # torn tail cut off when resuming
        self.previous_meta: dict[str, Any] | None = None  # meta of the run being resumed
        self._file: BinaryIO | None = None
        self._lock: OutputLock | None = None

    @classmethod
    def open(
        cls,
        output_dir: Path,
        chunk: ChunkSpec | None,
        fingerprint: str,
        meta: dict[str, Any],
        overwrite: bool,
        *,
        input_key: Mapping[str, Any] | None = None,
        retry_kinds: Collection[str] | None = None,
    ) -> PredictionWriter:
        """Start or resume the predictions file of `chunk` (None: the whole input) in `output_dir`.

        Args:
            meta: what the meta file records besides fingerprint, input key, chunk and created time (settings
                dict, model, input description, rows of the shard).
            overwrite: remove earlier predictions, meta and done files first.
            input_key: what the rows come from (source identity, row count, hash of the row ids); a file made
                from another input is not resumed. None: not checked (benchmarks, tests).
            retry_kinds: error kinds whose rows are removed (atomically) so that this run redoes them; an
                empty collection means every failed row.

        Raises:
            errors.OutputBusyError: another writer holds this file's lock.
            errors.ResumeMismatchError: the existing rows were made under another fingerprint or input.
        """
        writer = cls(OutputPaths.of(output_dir, chunk), fingerprint, input_key)
        writer.paths.predictions.parent.mkdir(parents=True, exist_ok=True)
        writer._lock = OutputLock.acquire(writer.paths.lock, writer.paths.predictions)
        try:
            writer._open(chunk, meta, overwrite, retry_kinds)
        except BaseException:
            writer.close()
            raise
        return writer

    @classmethod
    def check(
        cls, output_dir: Path, chunk: ChunkSpec | None, fingerprint: str, input_key: Mapping[str, Any] | None
    ) -> None:
        """Raise what `open` would raise (busy, other settings or input) without changing any file."""
        writer = cls(OutputPaths.of(output_dir, chunk), fingerprint, input_key)
        if not writer.paths.predictions.exists():
            return
        writer._lock = OutputLock.acquire(writer.paths.lock, writer.paths.predictions)
        try:
            writer._resumable()
        finally:
            writer.close()

    def _open(self, chunk: ChunkSpec | None, meta: dict[str, Any], overwrite: bool, retry_kinds) -> None:
        if overwrite:
            for path in (self.paths.predictions, self.paths.meta, self.paths.done):
                path.unlink(missing_ok=True)
        if self._resumable():
            if retry_kinds is not None:
                self._drop_failed(retry_kinds)
            self._resume()
        else:
            self.paths.done.unlink(missing_ok=True)  # a marker without its rows describes nothing
            record = {"fingerprint": self.fingerprint, "input_key": self.input_key, "chunk": _chunk_dict(chunk),
                      "created": now_iso(), **meta}
            atomic_write_text(self.paths.meta, json.dumps(record, indent=2, ensure_ascii=False, default=str))
        self._file = self.paths.predictions.open("ab")

    @property
    def rows_written(self) -> int:
        return self.rows_ok + self.rows_failed

    @property
    def is_done(self) -> bool:
        """The done marker is present and describes this file under this fingerprint: nothing left to do."""
        return done_marker_matches(self.paths, self.fingerprint)

    def contains(self, row_id: str) -> bool:
        return row_id in self.done_ids

    def write_window(self, results: Sequence[RowResult]) -> int:
        """Append one window of results with a single write + fsync; returns the number of rows written.

        A kill therefore loses at most the window in flight. Results whose id is already in the file are
        skipped and counted in `duplicates_prevented`.
        """
        if self._file is None:
            raise RuntimeError("write_window after close()")
        lines: list[bytes] = []
        for result in results:
            if result.utterance.id in self.done_ids:
                self.duplicates_prevented += 1
                continue
            lines.append(encode_row(result_to_dict(result)))
            self._count(result.utterance.id, failed=not result.ok)
        if lines:
            self._file.write(b"".join(lines))
            self._file.flush()
            os.fsync(self._file.fileno())
        return len(lines)

    def finish(self) -> dict[str, Any]:
        """Put the rows in input order, write the done marker (both atomically), release; returns the marker."""
        if self._file is not None:
            self._file.close()
            self._file = None
        try:
            sort_by_position(self.paths.predictions)
            marker = done_marker(self.fingerprint, self.paths.predictions, self.rows_ok, self.rows_failed, now_iso())
            atomic_write_text(self.paths.done, json.dumps(marker, indent=2))
        finally:
            self.close()
        return marker

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _count(self, row_id: str, failed: bool) -> None:
        self.done_ids.add(row_id)
        if failed:
            self.rows_failed += 1
        else:
            self.rows_ok += 1

    def _resumable(self) -> bool:
        """True when earlier rows exist under this fingerprint; raises when they exist under another one.

        An empty file under another fingerprint (killed before its first window) holds nothing to protect.
        """
        if not self.paths.predictions.exists():
            return False
        self.previous_meta = read_json(self.paths.meta)
        previous = None if self.previous_meta is None else self.previous_meta.get("fingerprint")
        changed = input_changes(self.previous_meta, self.input_key)
        if previous == self.fingerprint and not changed:
            return True
        if self.paths.predictions.stat().st_size == 0:
            return False
        if previous != self.fingerprint:
            raise ResumeMismatchError(
                f"{self.paths.predictions} was written with settings fingerprint {previous or '(unknown)'}, "
                f"this run has {self.fingerprint}",
                hint=_OVERWRITE_HINT,
            )
        raise ResumeMismatchError(
            f"{self.paths.predictions} was made from another input ({'; '.join(changed)}): resuming would mix "
            "the two",
            hint=_OVERWRITE_HINT,
        )

    def _drop_failed(self, kinds: Collection[str]) -> None:
        """Rewrite the file without the failed rows of `kinds` (all when empty): this run redoes them."""
        kept: list[bytes] = []
        dropped = 0
        for _end, row, raw in _scan_raw(self.paths.predictions):
            error = row.get("error")
            if isinstance(error, dict) and (not kinds or error.get("kind") in kinds):
                dropped += 1
            else:
                kept.append(raw)
        if dropped:
            atomic_write_chunks(self.paths.predictions, kept)  # a kill leaves the old file or the new one
            self.paths.done.unlink(missing_ok=True)
        self.retried_rows = dropped

    def _resume(self) -> None:
        """Cut a torn tail and collect done ids; a stale done marker is removed."""
        good_end = 0
        for good_end, row in _scan(self.paths.predictions):
            self._count(row["_id"], failed="error" in row)
        size = self.paths.predictions.stat().st_size
        if size > good_end:
            os.truncate(self.paths.predictions, good_end)
            self.dropped_tail_bytes = size - good_end
        if not done_marker_matches(self.paths, self.fingerprint):
            self.paths.done.unlink(missing_ok=True)


class InMemoryWriter:
    """`PredictionWriter`'s interface without files, for tests (lhotse's `InMemoryWriter`)."""

    def __init__(self, fingerprint: str = "in-memory") -> None:
        self.fingerprint = fingerprint
        self.rows: list[dict[str, Any]] = []
        self.done_ids: set[str] = set()
        self.rows_ok = 0
        self.rows_failed = 0
        self.duplicates_prevented = 0
        self.dropped_tail_bytes = 0
        self.retried_rows = 0
        self.finished = False

    @property
    def rows_written(self) -> int:
        return self.rows_ok + self.rows_failed

    @property
    def is_done(self) -> bool:
        return self.finished

    def contains(self, row_id: str) -> bool:
        return row_id in self.done_ids

    def write_window(self, results: Sequence[RowResult]) -> int:
        written = 0
        for result in results:
            if result.utterance.id in self.done_ids:
                self.duplicates_prevented += 1
                continue
            self.rows.append(result_to_dict(result))
            self.done_ids.add(result.utterance.id)
            if result.ok:
                self.rows_ok += 1
            else:
                self.rows_failed += 1
            written += 1
        return written

    def finish(self) -> dict[str, Any]:
        self.finished = True
        return {
            "fingerprint": self.fingerprint,
            "rows_written": self.rows_written,
            "rows_ok": self.rows_ok,
            "rows_failed": self.rows_failed,
        }

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def input_changes(previous_meta: Mapping[str, Any] | None, input_key: Mapping[str, Any] | None) -> list[str]:
    """What differs between the input a meta file recorded and `input_key` ("rows: 200 -> 208"); [] if same.

    A meta without a key (written before keys were recorded) or no key to check counts as the same input.
    """
    previous = None if previous_meta is None else previous_meta.get("input_key")
    if not isinstance(previous, Mapping) or input_key is None:
        return []
    flat_old, flat_new = _flatten(previous), _flatten(input_key)
    changes = []
    for key in sorted(set(flat_old) | set(flat_new)):
        old, new = flat_old.get(key), flat_new.get(key)
        if old != new:
            changes.append(f"{key}: {_short(old)} -> {_short(new)}")
    return changes


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping):
            flat.update(_flatten(item, name + "."))
        else:
            flat[name] = json.loads(json.dumps(item, default=str))  # as a meta file reads it back
    return flat


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:16] + "..." + text[-16:]


def sort_by_position(path: Path) -> None:
    """Rewrite a predictions file in `_position` order (atomically); a file already in order is left alone.

    Holds the raw lines in memory, about the size of the file, like merge.
    """
    lines = [(row.get("_position"), raw) for _end, row, raw in _scan_raw(path)]
    keys = [p if isinstance(p, int) and not isinstance(p, bool) else -1 for p, _raw in lines]
    if all(a <= b for a, b in zip(keys, keys[1:])):
        return
    order = sorted(range(len(lines)), key=keys.__getitem__)
    atomic_write_chunks(path, (lines[i][1] for i in order))


def _chunk_dict(chunk: ChunkSpec | None) -> dict[str, Any] | None:
    return None if chunk is None else {"index": chunk.index, "count": chunk.count, "label": chunk.label}


def _scan(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (end offset, row) for each good line; bad lines at the end (a torn tail) are left out.

    A good line ends with a newline and holds a JSON object with a string `_id`. A bad line followed by a good
    one cannot come from an interrupted append, so it is reported instead of skipped.
    """
    for end, row, _raw in _scan_raw(path):
        yield end, row


def _scan_raw(path: Path) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    """`_scan` with each good line's bytes."""
    end, first_bad = 0, None
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            end += len(raw)
            row = _decode(raw)
            if row is None:
                first_bad = first_bad or line_no
                continue
            if first_bad is not None:
                raise SpeechlmBatchError(f"{path}:{first_bad}: corrupt line inside the file", hint=_OVERWRITE_HINT)
            yield end, row, raw


def _decode(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        row = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return row if isinstance(row, dict) and isinstance(row.get("_id"), str) else None
