"""Join the chunk files of a Slurm array run into one `predictions.jsonl`, in input order.

Merge writes nothing unless every chunk 0..N-1 is finished (its done marker describes its file), all chunks
share one settings fingerprint and one input (the meta's `input_key`), and the `_position`s form exactly
0..total-1. Otherwise the `MergeResult`
says what is wrong and, for missing or unfinished chunks, the `--array=` value that reruns just those.
Unlike NeMo-Skills' merge, chunk files are kept, so merge can be rerun and gives the same bytes each time
(the merged done marker takes its time from the chunks, not the clock).

Memory: the merged rows are held as raw lines (bytes), keyed by position, until they are written: about the
size of the merged file. Fine for manifests of a few million rows; an external sort would lift the limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechlm_batch.errors import SpeechlmBatchError, UsageError
from speechlm_batch.fsutil import atomic_write_chunks, atomic_write_text
from speechlm_batch.outputs import OutputPaths, done_marker, done_marker_matches, read_json
from speechlm_batch.sharding import ChunkSpec


@dataclass(frozen=True)
class MergeResult:
    """What merge found, and the merged file when it wrote one."""

    output_dir: Path
    chunk_count: int
    missing: tuple[int, ...] = ()  # chunks without a predictions file
    unfinished: tuple[int, ...] = ()  # chunks without a matching done marker (killed, still running)
    fingerprints: dict[int, str] = field(default_factory=dict)  # chunk -> settings fingerprint (from meta)
    inputs: dict[int, str] = field(default_factory=dict)  # chunk -> hash of the input key its meta records
    duplicate_positions: tuple[int, ...] = ()
    gaps: tuple[range, ...] = ()  # positions in 0..total-1 that no chunk wrote
    out_of_range: tuple[int, ...] = ()  # positions >= expected_count
    rows: int = 0
    rows_failed: int = 0
    merged: Path | None = None  # predictions.jsonl, set only when everything checked out

    @property
    def ok(self) -> bool:
        return self.merged is not None

    @property
    def fingerprint_mismatch(self) -> bool:
        return len(set(self.fingerprints.values())) > 1

    @property
    def input_mismatch(self) -> bool:
        return len(set(self.inputs.values())) > 1

    @property
    def rerun_chunks(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.missing) | set(self.unfinished)))

    @property
    def rerun_array(self) -> str:
        """The chunks to rerun as a `sbatch --array=` value, e.g. "0,3,7-9" ("" when none)."""
        return compress_indices(self.rerun_chunks)

    def problems(self) -> list[str]:
        """One sentence per problem, for the CLI."""
        found = []
        if self.missing:
            found.append(f"missing chunks: {compress_indices(self.missing)}")
        if self.unfinished:
            found.append(f"unfinished chunks (no matching done marker): {compress_indices(self.unfinished)}")
        if self.fingerprint_mismatch:
            by_fp: dict[str, list[int]] = {}
            for index, fp in sorted(self.fingerprints.items()):
                by_fp.setdefault(fp, []).append(index)
            parts = [f"{fp} (chunks {compress_indices(ix)})" for fp, ix in sorted(by_fp.items())]
            found.append("chunks were made with different settings: " + ", ".join(parts))
        if self.input_mismatch:
            groups: dict[str, list[int]] = {}
            for index, key in sorted(self.inputs.items()):
                groups.setdefault(key, []).append(index)
            parts = [f"chunks {compress_indices(ix)}" for _key, ix in sorted(groups.items(), key=lambda kv: kv[1])]
            found.append("chunks were made from different inputs: " + " vs ".join(parts))
        if self.duplicate_positions:
            first = self.duplicate_positions[0]
            found.append(f"{len(self.duplicate_positions)} positions written more than once, first {first}")
        if self.gaps:
            shown = ", ".join(f"{r.start}..{r.stop - 1}" for r in self.gaps[:5])
            found.append(f"{sum(len(r) for r in self.gaps)} positions missing: {shown}")
        if self.out_of_range:
            found.append(f"{len(self.out_of_range)} positions beyond the expected row count")
        return found


def merge(output_dir: Path, *, expected_count: int | None = None) -> MergeResult:
    """Merge `predictions.chunk-XXXX-of-NNNN.jsonl` files into `predictions.jsonl` (+ done marker + meta).

    Args:
        output_dir: the folder the array tasks wrote to.
        expected_count: number of input rows; without it the total is the largest position + 1, so rows
            missing at the very end cannot be noticed.

    Raises:
        errors.UsageError: no chunk files, or chunk files of different chunk counts.
        errors.SpeechlmBatchError: a chunk line that is not JSON or has no integer `_position`.
    """
    output_dir = Path(output_dir)
    count = _chunk_count(output_dir)
    chunks = [OutputPaths.of(output_dir, ChunkSpec(k, count)) for k in range(count)]
    fingerprints = {k: fp for k, paths in enumerate(chunks) if (fp := _fingerprint(paths)) is not None}
    missing = tuple(k for k, paths in enumerate(chunks) if not paths.predictions.is_file())
    # A chunk without a meta fingerprint cannot be vouched for: it counts as unfinished.
    unfinished = tuple(
        k
        for k, paths in enumerate(chunks)
        if k not in missing and (k not in fingerprints or not done_marker_matches(paths, fingerprints[k]))
    )
    inputs = {k: key for k, paths in enumerate(chunks) if (key := _input_hash(paths)) is not None}
    result = MergeResult(output_dir, count, missing, unfinished, fingerprints, inputs)
    if missing or unfinished or result.fingerprint_mismatch or result.input_mismatch:
        return result
    lines, duplicates, rows_failed = _collect(chunk.predictions for chunk in chunks)
    total = expected_count if expected_count is not None else (max(lines) + 1 if lines else 0)
    gaps = _gaps(lines, total)
    out_of_range = tuple(sorted(p for p in lines if p >= total))
    checked = MergeResult(
        output_dir,
        count,
        fingerprints=fingerprints,
        inputs=inputs,
        duplicate_positions=duplicates,
        gaps=gaps,
        out_of_range=out_of_range,
        rows=len(lines),
        rows_failed=rows_failed,
    )
    if duplicates or gaps or out_of_range:
        return checked
    merged = OutputPaths.of(output_dir, None)
    _write_merged(merged, lines, chunks, fingerprints[0], rows_failed)
    return dataclasses.replace(checked, merged=merged.predictions)


def compress_indices(indices: Iterable[int]) -> str:
    """Sorted, unique indices as Slurm's array syntax: [0, 3, 7, 8, 9] -> "0,3,7-9"."""
    parts: list[str] = []
    run: list[int] = []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            parts.append(_run_text(run))
        run = [i]
    if run:
        parts.append(_run_text(run))
    return ",".join(parts)


def _run_text(run: Sequence[int]) -> str:
    return str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}"


def _chunk_count(output_dir: Path) -> int:
    """N from the chunk files' names; all files must agree on it."""
    counts = set()
    for path in output_dir.glob("predictions.chunk-*"):
        label = path.name.removeprefix("predictions.").split(".", 1)[0]
        spec = ChunkSpec.from_label(label)
        if spec is not None:
            counts.add(spec.count)
    if not counts:
        raise UsageError(f"no chunk files (predictions.chunk-XXXX-of-NNNN.jsonl) in {output_dir}")
    if len(counts) > 1:
        raise UsageError(
            f"{output_dir} holds chunk files of different chunk counts: {sorted(counts)}",
            hint="keep the files of one array run per output folder",
        )
    return counts.pop()


def _fingerprint(paths: OutputPaths) -> str | None:
    meta = read_json(paths.meta)
    value = None if meta is None else meta.get("fingerprint")
    return value if isinstance(value, str) else None


def _input_hash(paths: OutputPaths) -> str | None:
    meta = read_json(paths.meta)
    key = None if meta is None else meta.get("input_key")
    if not isinstance(key, dict):
        return None
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _collect(files: Iterable[Path]) -> tuple[dict[int, bytes], tuple[int, ...], int]:
    """Raw lines keyed by `_position` (first one kept), duplicate positions, and the count of failed rows."""
    lines: dict[int, bytes] = {}
    duplicates: list[int] = []
    rows_failed = 0
    for path in files:
        with path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                row = _row(raw, path, line_no)
                position = row["_position"]
                if position in lines:
                    duplicates.append(position)
                    continue
                lines[position] = raw
                rows_failed += "error" in row
    return lines, tuple(sorted(duplicates)), rows_failed


def _row(raw: bytes, path: Path, line_no: int) -> dict[str, Any]:
    try:
        row = json.loads(raw)
    except ValueError:
        row = None
    position = row.get("_position") if isinstance(row, dict) else None
    if not raw.endswith(b"\n") or isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise SpeechlmBatchError(f"{path}:{line_no}: not a predictions row with a valid _position")
    return row


def _gaps(lines: dict[int, bytes], total: int) -> tuple[range, ...]:
    gaps: list[range] = []
    start = None
    for position in range(total):
        if position not in lines:
            start = position if start is None else start
        elif start is not None:
            gaps.append(range(start, position))
            start = None
    if start is not None:
        gaps.append(range(start, total))
    return tuple(gaps)


def _write_merged(
    merged: OutputPaths, lines: dict[int, bytes], chunks: Sequence[OutputPaths], fingerprint: str, rows_failed: int
) -> None:
    """predictions.jsonl (temp + rename), then its done marker and meta, all deterministic."""
    atomic_write_chunks(merged.predictions, (lines[p] for p in sorted(lines)))
    chunk_dones = [read_json(paths.done) or {} for paths in chunks]
    finished = max(str(done.get("finished", "")) for done in chunk_dones)
    marker = done_marker(fingerprint, merged.predictions, len(lines) - rows_failed, rows_failed, finished)
    meta = dict(read_json(chunks[0].meta) or {})
    source = meta.get("input")
    source = source if isinstance(source, dict) else {}
    meta.update(chunk=None, input={**source, "rows": len(lines)}, merged_from_chunks=len(chunks))
    atomic_write_text(merged.meta, json.dumps(meta, indent=2, ensure_ascii=False))
    atomic_write_text(merged.done, json.dumps(marker, indent=2))
