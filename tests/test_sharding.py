"""Chunk specs, Slurm array variables, and the contiguous, duration-balanced chunk plan."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechlm_batch.errors import UsageError
from speechlm_batch.sharding import ChunkSpec, chunk_from_env, durations_of, plan, select
from speechlm_batch.types import BadRow, ErrorKind, RowError, Utterance


def test_parse_and_label():
    spec = ChunkSpec.parse("3/16")
    assert spec == ChunkSpec(3, 16)
    assert spec.label == "chunk-0003-of-0016"
    assert str(spec) == "3/16"
    assert ChunkSpec.parse(" 0 / 1 ") == ChunkSpec(0, 1)
    assert ChunkSpec(12, 10000).label == "chunk-00012-of-10000"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/3", "chunk index 3 is out of range for 3 chunks"),
        ("-1/2", "expected i/N"),
        ("a/b", "expected i/N"),
        ("1", "expected i/N"),
        ("0/0", "chunk count must be at least 1"),
        ("1.5/4", "expected i/N"),
    ],
)
def test_parse_rejects_bad_input(text, message):
    with pytest.raises(UsageError, match=message) as info:
        ChunkSpec.parse(text)
    assert info.value.hint and "i/N" in info.value.hint


def test_from_label_roundtrip():
    assert ChunkSpec.from_label("chunk-0003-of-0016") == ChunkSpec(3, 16)
    assert ChunkSpec.from_label("chunk-0016-of-0016") is None
    assert ChunkSpec.from_label("chunk-3-of-16") is None


def test_chunk_from_env():
    assert chunk_from_env({}) is None
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_ARRAY_TASK_MIN": "1"}
    assert chunk_from_env(env) == ChunkSpec(4, 8)
    assert chunk_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == ChunkSpec(3, 4)
    stepped = {
        "SLURM_ARRAY_TASK_ID": "6",
        "SLURM_ARRAY_TASK_COUNT": "4",
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_STEP": "2",
    }
    assert chunk_from_env(stepped) == ChunkSpec(3, 4)


def test_chunk_from_env_partial_rerun_needs_explicit_count():
    # sbatch --array=0,3,7-9: Slurm says COUNT=5, MIN=0; task 7 is chunk 7 of the original 16.
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_MIN": "0"}
    assert chunk_from_env(env, count=16) == ChunkSpec(7, 16)
    with pytest.raises(UsageError, match="out of range"):
        chunk_from_env(env)


@pytest.mark.parametrize(
    "env",
    [
        {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"},
        {"SLURM_ARRAY_TASK_ID": "1"},
        {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": ""},
    ],
)
def test_chunk_from_env_errors(env):
    with pytest.raises(UsageError):
        chunk_from_env(env)


def test_plan_equal_counts_nemo_skills_style():
    assert plan([None] * 10, 3) == [range(4), range(4, 7), range(7, 10)]
    assert plan([1.0, None, 1.0], 1) == [range(3)]
    assert plan([None] * 2, 4) == [range(1), range(1, 2), range(2, 2), range(2, 2)]
    assert plan([], 2) == [range(0), range(0)]


def test_plan_long_row_gets_its_own_chunk():
    ranges = plan([100.0] + [1.0] * 99, 2)
    assert ranges == [range(1), range(1, 100)]


def test_plan_balances_by_duration():
    durations = [1.0] * 50 + [10.0] * 5  # 50 s + 50 s
    assert plan(durations, 2) == [range(50), range(50, 55)]
    # Equal counts would have given 28 + 27 rows regardless of duration.
    assert plan([None] + durations[1:], 2) == [range(28), range(28, 55)]


def test_plan_keeps_chunks_non_empty_when_one_row_dominates():
    ranges = plan([1.0, 1000.0, 1.0, 1.0], 4)
    assert all(len(r) == 1 for r in ranges)


def test_plan_rejects_zero_chunks():
    with pytest.raises(UsageError):
        plan([1.0], 0)


@settings(max_examples=300, deadline=None)
@given(
    durations=st.lists(st.one_of(st.none(), st.floats(0, 1e4), st.just(0.0)), max_size=60),
    count=st.integers(1, 12),
)
def test_plan_covers_every_position_once_deterministically(durations, count):
    ranges = plan(durations, count)
    assert len(ranges) == count
    assert [p for r in ranges for p in r] == list(range(len(durations)))  # contiguous, in order, once each
    assert all(r.step == 1 for r in ranges)
    if len(durations) >= count:
        assert all(len(r) > 0 for r in ranges)
    assert plan(list(durations), count) == ranges


def _utt(position: int, duration_s: float | None = 1.0) -> Utterance:
    return Utterance(id=f"u{position}", position=position, audio_filepath="a.wav", row={}, duration_s=duration_s)


def test_select_and_durations_of():
    bad = BadRow(id="L3", position=2, raw="{", error=RowError(ErrorKind.BAD_ROW, "m:3: bad"))
    items = [_utt(0, 2.0), _utt(1, None), bad, _utt(3, 4.0)]
    assert durations_of(items) == [2.0, None, 0.0, 4.0]
    ranges = plan(durations_of(items), 2)
    chosen = [list(select(items, ChunkSpec(k, 2), ranges)) for k in range(2)]
    assert [i.position for c in chosen for i in c] == [0, 1, 2, 3]
    assert [i.position for i in chosen[1]] == [2, 3]
    with pytest.raises(ValueError):
        list(select(items, ChunkSpec(0, 3), ranges))


def test_select_stops_reading_after_its_chunk():
    read = []

    def stream():
        for p in range(1000):
            read.append(p)
            yield _utt(p)

    ranges = plan([1.0] * 1000, 10)
    assert [u.position for u in select(stream(), ChunkSpec(0, 10), ranges)] == list(range(100))
    assert len(read) == 101
