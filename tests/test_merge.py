"""Merge of chunk files: only when complete and consistent, in input order, byte-identical on rerun."""

from __future__ import annotations

import json

import pytest

from speechlm_batch.errors import UsageError
from speechlm_batch.merge import compress_indices, merge
from speechlm_batch.outputs import OutputPaths, PredictionWriter, read_predictions, result_to_dict
from speechlm_batch.sharding import ChunkSpec, plan
from speechlm_batch.types import ErrorKind, RowError, RowResult, Utterance

N_ROWS = 10


def result(position: int) -> RowResult:
    utt = Utterance(id=f"u{position}", position=position, audio_filepath="a.wav", row={"audio_filepath": "a.wav"})
    if position == 4:
        return RowResult(utt, None, RowError(ErrorKind.UNREADABLE, "a.wav: cannot decode"))
    return RowResult(utt, f"text {position}", None, audio_s=1.0, pieces=1)


def write_chunks(folder, count=3, skip=(), unfinished=(), fingerprint="fp", n_rows=N_ROWS):
    for k, rows in enumerate(plan([None] * n_rows, count)):
        if k in skip:
            continue
        writer = PredictionWriter.open(folder, ChunkSpec(k, count), fingerprint, {"model": "m"}, False)
        # Reverse order inside a chunk, as a duration-sorted window would write them.
        writer.write_window([result(p) for p in reversed(rows)])
        if k in unfinished:
            writer.close()
        else:
            writer.finish()


def test_complete_merge_restores_input_order(tmp_path):
    write_chunks(tmp_path)
    res = merge(tmp_path, expected_count=N_ROWS)
    assert res.ok and res.problems() == []
    assert (res.rows, res.rows_failed) == (N_ROWS, 1)
    rows = list(read_predictions(res.merged))
    assert [r["_position"] for r in rows] == list(range(N_ROWS))
    assert rows[4]["error"]["kind"] == "unreadable"
    merged = OutputPaths.of(tmp_path, None)
    done = json.loads(merged.done.read_text())
    assert (done["rows_written"], done["rows_ok"], done["rows_failed"], done["fingerprint"]) == (10, 9, 1, "fp")
    meta = json.loads(merged.meta.read_text())
    assert meta["chunk"] is None and meta["merged_from_chunks"] == 3 and meta["input"]["rows"] == N_ROWS
    assert all(OutputPaths.of(tmp_path, ChunkSpec(k, 3)).predictions.exists() for k in range(3))  # kept
    # The merged file is a finished plain run: a rerun without --chunk has nothing to do.
    assert PredictionWriter.open(tmp_path, None, "fp", {}, False).is_done


def test_merge_is_idempotent(tmp_path):
    write_chunks(tmp_path)
    merge(tmp_path)
    merged = OutputPaths.of(tmp_path, None)
    first = [p.read_bytes() for p in (merged.predictions, merged.done, merged.meta)]
    assert merge(tmp_path).ok
    assert [p.read_bytes() for p in (merged.predictions, merged.done, merged.meta)] == first


def test_missing_and_unfinished_chunks_give_rerun_array(tmp_path):
    write_chunks(tmp_path, count=10, n_rows=20, skip=(0, 7, 8), unfinished=(3, 9))
    res = merge(tmp_path)
    assert not res.ok and res.merged is None
    assert res.missing == (0, 7, 8) and res.unfinished == (3, 9)
    assert res.rerun_array == "0,3,7-9"
    assert not OutputPaths.of(tmp_path, None).predictions.exists()
    assert any("missing chunks: 0,7-8" in p for p in res.problems())


def test_duplicate_position_detected(tmp_path):
    write_chunks(tmp_path)
    chunk2 = OutputPaths.of(tmp_path, ChunkSpec(2, 3))
    # Chunk 2 also claims position 0 (e.g. a plan computed from another manifest): rewrite it consistently.
    writer = PredictionWriter.open(tmp_path, ChunkSpec(2, 3), "fp", {}, True)
    dup = RowResult(Utterance("zz", 0, "a.wav", {}), "x", None)
    writer.write_window([result(p) for p in range(7, 10)] + [dup])
    writer.finish()
    res = merge(tmp_path)
    assert not res.ok and res.duplicate_positions == (0,)
    assert any("written more than once" in p for p in res.problems())
    assert chunk2.predictions.exists()


def test_gap_detected(tmp_path):
    write_chunks(tmp_path)
    writer = PredictionWriter.open(tmp_path, ChunkSpec(1, 3), "fp", {}, True)
    writer.write_window([result(4), result(6)])  # position 5 missing
    writer.finish()
    res = merge(tmp_path)
    assert not res.ok and res.gaps == (range(5, 6),)
    # Rows missing at the end are only noticed with the expected count.
    write_chunks(tmp_path / "b", n_rows=10)
    assert merge(tmp_path / "b", expected_count=12).gaps == (range(10, 12),)
    assert merge(tmp_path / "b", expected_count=9).out_of_range == (9,)


def test_fingerprint_mismatch_between_chunks(tmp_path):
    write_chunks(tmp_path, fingerprint="fp")
    PredictionWriter.open(tmp_path, ChunkSpec(1, 3), "other", {}, True).finish()
    res = merge(tmp_path)
    assert not res.ok and res.fingerprint_mismatch
    assert any("different settings" in p and "other (chunks 1)" in p for p in res.problems())


def test_changed_chunk_file_counts_as_unfinished(tmp_path):
    write_chunks(tmp_path)
    chunk1 = OutputPaths.of(tmp_path, ChunkSpec(1, 3))
    with chunk1.predictions.open("ab") as f:
        f.write(json.dumps(result_to_dict(result(99))).encode() + b"\n")
    assert merge(tmp_path).unfinished == (1,)


def test_no_chunks_or_mixed_counts(tmp_path):
    with pytest.raises(UsageError, match="no chunk files"):
        merge(tmp_path)
    write_chunks(tmp_path, count=2)
    write_chunks(tmp_path, count=3)
    with pytest.raises(UsageError, match="different chunk counts"):
        merge(tmp_path)


@pytest.mark.parametrize(
    ("indices", "text"),
    [([], ""), ([5], "5"), ([0, 3, 7, 8, 9], "0,3,7-9"), ([2, 1, 0, 1], "0-2"), ([1, 3, 4, 6], "1,3-4,6")],
)
def test_compress_indices(indices, text):
    assert compress_indices(indices) == text


def test_chunks_of_different_inputs_are_not_merged(tmp_path):
    keys = [{"source": {"path": "/d/a.jsonl"}, "rows": N_ROWS, "row_ids_sha256": "a"}] * 2
    keys.append({"source": {"path": "/d/b.jsonl"}, "rows": N_ROWS, "row_ids_sha256": "b"})
    for k, rows in enumerate(plan([None] * N_ROWS, 3)):
        writer = PredictionWriter.open(tmp_path, ChunkSpec(k, 3), "fp", {}, False, input_key=keys[k])
        writer.write_window([result(p) for p in rows])
        writer.finish()
    res = merge(tmp_path, expected_count=N_ROWS)
    assert not res.ok and res.input_mismatch and res.rerun_array == ""
    assert any("different inputs" in p and "chunks 0-1" in p and "chunks 2" in p for p in res.problems())
    assert not OutputPaths.of(tmp_path, None).predictions.exists()
