"""Split one input into N chunks for a Slurm array: which input positions chunk i transcribes.

Chunks are contiguous ranges of input positions, as in NeMo-Skills, because:
    * merge is then a concatenation in chunk order (it still sorts by `_position`, but the ranges make
      a missing chunk show up as one gap that names the chunk to rerun);
    * array task i needs nothing but i, N and the input to find its rows: every task computes the same plan
      independently (the plan is a pure function of the input), with no coordinator;
    * a rerun of some array indices (`sbatch --array=0,3,7-9`) redoes exactly those chunks.

When every row's duration is known, the boundaries follow cumulative audio time, so one long recording does
not make its chunk the straggler of the whole array; otherwise rows are split into equal counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from speechlm_batch.errors import UsageError
from speechlm_batch.types import BadRow, Utterance

T = TypeVar("T", Utterance, BadRow)

_SPEC_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_LABEL_RE = re.compile(r"^chunk-(\d{4,})-of-(\d{4,})$")
_CHUNK_HINT = "write the chunk as i/N with 0 <= i < N, e.g. --chunk 0/16"


@dataclass(frozen=True)
class ChunkSpec:
    """Chunk `index` (0-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise UsageError(f"chunk count must be at least 1, got {self.count}", hint=_CHUNK_HINT)
        if not 0 <= self.index < self.count:
            raise UsageError(
                f"chunk index {self.index} is out of range for {self.count} chunks "
                f"(valid: 0..{self.count - 1}, 0-based)",
                hint=_CHUNK_HINT,
            )

    @classmethod
    def parse(cls, text: str) -> ChunkSpec:
        """Parse "i/N", e.g. "3/16"; raises `errors.UsageError` for anything else."""
        match = _SPEC_RE.match(text)
        if match is None:
            raise UsageError(f"cannot read chunk {text!r}: expected i/N with whole numbers", hint=_CHUNK_HINT)
        return cls(int(match.group(1)), int(match.group(2)))

    @property
    def label(self) -> str:
        """File-name part, e.g. "chunk-0003-of-0016": 4 digits, or as many as N has, so names sort in order."""
        width = max(4, len(str(self.count)))
        return f"chunk-{self.index:0{width}d}-of-{self.count:0{width}d}"

    @classmethod
    def from_label(cls, label: str) -> ChunkSpec | None:
        """Inverse of `label`; None when `label` is not one."""
        match = _LABEL_RE.match(label)
        if match is None:
            return None
        index, count = int(match.group(1)), int(match.group(2))
        return cls(index, count) if 0 <= index < count else None

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def chunk_from_env(environ: Mapping[str, str], count: int | None = None) -> ChunkSpec | None:
    """The chunk of this Slurm array task, or None outside an array job.

    Without `count`: index = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN (divided by SLURM_ARRAY_TASK_STEP),
    count = SLURM_ARRAY_TASK_COUNT; right for a full array such as `--array=0-15` or `--array=1-16`.
    With `count` (the script passes the number of chunks): index = SLURM_ARRAY_TASK_ID, which keeps a partial
    rerun such as `--array=0,3,7-9` (where Slurm's COUNT is 5 and MIN is 0) pointing at the right chunks.

    Raises:
        errors.UsageError: the variables are not whole numbers or give an index outside 0..count-1.
    """
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return None
    task_id = _env_int(environ, "SLURM_ARRAY_TASK_ID")
    if count is not None:
        return ChunkSpec(task_id, count)
    if "SLURM_ARRAY_TASK_COUNT" not in environ:
        raise UsageError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not", hint=_CHUNK_HINT)
    first = _env_int(environ, "SLURM_ARRAY_TASK_MIN", default=0)
    step = max(1, _env_int(environ, "SLURM_ARRAY_TASK_STEP", default=1))
    return ChunkSpec((task_id - first) // step, _env_int(environ, "SLURM_ARRAY_TASK_COUNT"))


def _env_int(environ: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = environ.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(value or "")
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number") from None


def plan(durations: Sequence[float | None], count: int) -> list[range]:
    """Split input positions 0..len(durations)-1 into `count` contiguous ranges, deterministically.

    Args:
        durations: seconds per row in input order; None where unknown (a bad row can be passed as 0.0).
        count: number of chunks.

    Returns:
        `count` ranges that cover every position exactly once, in order. When every duration is known
        (finite, >= 0, positive total), chunk k ends where the cumulative duration comes closest to
        k/count of the total; otherwise the first `n % count` chunks get one row more than the rest
        (NeMo-Skills). Each chunk is non-empty when there are at least `count` rows.
    """
    if count < 1:
        raise UsageError(f"chunk count must be at least 1, got {count}")
    n = len(durations)
    if n > count and _all_known(durations):
        bounds = _duration_bounds(cast(Sequence[float], durations), count)
    else:
        bounds = _equal_bounds(n, count)
    return [range(bounds[k], bounds[k + 1]) for k in range(count)]


def select(items: Iterable[T], spec: ChunkSpec, ranges: Sequence[range]) -> Iterator[T]:
    """Yield the items (in input order) whose `position` falls in chunk `spec` of `ranges` (from `plan`).

    Stops reading once past the chunk, so chunk 0 of a large manifest does not scan the rest of it.
    """
    if len(ranges) != spec.count:
        raise ValueError(f"plan has {len(ranges)} chunks but the chunk spec says {spec.count}")
    rows = ranges[spec.index]
    for item in items:
        if item.position >= rows.stop:
            return
        if item.position >= rows.start:
            yield item


def durations_of(items: Iterable[Utterance | BadRow]) -> list[float | None]:
    """Per-position durations for `plan`: a bad row costs no audio time (0.0), an unknown one is None."""
    return [item.duration_s if isinstance(item, Utterance) else 0.0 for item in items]


def _all_known(durations: Sequence[float | None]) -> bool:
    total = 0.0
    for d in durations:
        if d is None or not math.isfinite(d) or d < 0:
            return False
        total += d
    return total > 0


def _equal_bounds(n: int, count: int) -> list[int]:
    base, extra = divmod(n, count)
    bounds = [0]
    for k in range(count):
        bounds.append(bounds[-1] + base + (1 if k < extra else 0))
    return bounds


def _duration_bounds(durations: Sequence[float], count: int) -> list[int]:
    """Boundaries at the cumulative duration nearest to each k/count of the total, kept non-empty."""
    total = math.fsum(durations)
    bounds = [0]
    k, before = 1, 0.0
    for i, d in enumerate(durations):
        after = before + d
        # One long row can cross several targets at once: each gets the nearer side of this row.
        while k < count and after >= total * k / count:
            target = total * k / count
            bounds.append(i + 1 if after - target <= target - before else i)
            k += 1
        before = after
    bounds.extend([len(durations)] * (count - len(bounds)))  # float rounding can leave the last target unmet
    bounds.append(len(durations))
    return _make_non_empty(bounds, len(durations))


def _make_non_empty(bounds: list[int], n: int) -> list[int]:
    """Shift inner boundaries so each chunk has a row (needs n >= count); keeps the order."""
    count = len(bounds) - 1
    for k in range(1, count):
        bounds[k] = max(bounds[k - 1] + 1, min(bounds[k], n - (count - k)))
    return bounds
