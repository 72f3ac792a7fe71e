"""PredictionWriter: append-only JSONL that resumes by id, repairs a torn tail and refuses mixed settings."""

from __future__ import annotations

import json

import pytest

from speechlm_batch.errors import ResumeMismatchError, SpeechlmBatchError
from speechlm_batch.outputs import (
    InMemoryWriter,
    OutputPaths,
    PredictionWriter,
    file_digest,
    read_predictions,
    result_to_dict,
)
from speechlm_batch.sharding import ChunkSpec
from speechlm_batch.types import BadRow, ErrorKind, RowError, RowResult, Segment, Utterance

META = {"settings": {"window_rows": 4}, "model": "whisper-base", "input": {"path": "m.jsonl", "size": 10, "rows": 3}}


def ok(position: int, text: str = "hello", row: dict | None = None) -> RowResult:
    row = {"audio_filepath": f"{position}.wav", "text": "ref"} if row is None else row
    utt = Utterance(id=f"u{position}", position=position, audio_filepath=f"/d/{position}.wav", row=row)
    return RowResult(utt, pred_text=text, error=None, audio_s=1.5, pieces=1)


def failed(position: int) -> RowResult:
    utt = Utterance(id=f"u{position}", position=position, audio_filepath="/d/x.wav", row={"audio_filepath": "x.wav"})
    return RowResult(utt, None, RowError(ErrorKind.MISSING_FILE, "/d/x.wav: no such file"))


def open_writer(folder, fingerprint="fp1", overwrite=False, chunk=None) -> PredictionWriter:
    return PredictionWriter.open(folder, chunk, fingerprint, META, overwrite)


def test_paths():
    plain = OutputPaths.of("out", None)
    assert plain.predictions.name == "predictions.jsonl"
    assert plain.meta.name == "predictions.meta.json" and plain.done.name == "predictions.done.json"
    chunked = OutputPaths.of("out", ChunkSpec(3, 16))
    assert chunked.predictions.name == "predictions.chunk-0003-of-0016.jsonl"
    assert chunked.done.name == "predictions.chunk-0003-of-0016.done.json"


def test_row_layout():
    row = result_to_dict(ok(4, row={"audio_filepath": "4.wav", "pred_text": "old", "error": "old", "x": 1}))
    assert list(row) == ["audio_filepath", "x", "pred_text", "_id", "_position", "_audio_s", "_pieces"]
    assert row["pred_text"] == "hello" and row["_id"] == "u4" and row["_position"] == 4
    bad = BadRow("L2", 1, "{oops", RowError(ErrorKind.BAD_ROW, "m.jsonl:2: not valid JSON"))
    row = result_to_dict(RowResult(bad, None, bad.error))
    assert row["_raw"] == "{oops" and row["pred_text"] is None
    assert row["error"] == {"kind": "bad_row", "message": "m.jsonl:2: not valid JSON"}
    collapsed = RowResult(ok(0).utterance, "a", None, loops_collapsed=2)
    assert result_to_dict(collapsed)["_loops_collapsed"] == 2
    timed = result_to_dict(RowResult(ok(0).utterance, "a b", None, segments=(Segment(0.0, 1.23456, "a b"),)))
    assert list(timed)[:4] == ["audio_filepath", "text", "pred_text", "segments"]
    assert timed["segments"] == [{"start_s": 0.0, "end_s": 1.235, "text": "a b"}]  # milliseconds
    assert "segments" not in result_to_dict(ok(0))  # only with --timestamps
    counted = RowResult(ok(0).utterance, "a", None, prompt_tokens=165)
    assert list(result_to_dict(counted))[-1:] == ["_prompt_tokens"] and result_to_dict(counted)["_prompt_tokens"] == 165


def test_write_meta_and_done(tmp_path):
    chunk = ChunkSpec(1, 4)
    with open_writer(tmp_path, chunk=chunk) as writer:
        assert json.loads(writer.paths.meta.read_text())["chunk"] == {"index": 1, "count": 4, "label": chunk.label}
        assert writer.write_window([ok(0, "héllo 🎉"), failed(1)]) == 2
        assert not writer.is_done
        marker = writer.finish()
    text = writer.paths.predictions.read_text(encoding="utf-8")
    assert "héllo 🎉" in text  # ensure_ascii=False
    rows = list(read_predictions(writer.paths.predictions))
    assert [r["_id"] for r in rows] == ["u0", "u1"]
    assert rows[1]["error"]["kind"] == "missing_file" and "error" not in rows[0]
    meta = json.loads(writer.paths.meta.read_text())
    assert meta["fingerprint"] == "fp1" and meta["model"] == "whisper-base" and meta["created"]
    done = json.loads(writer.paths.done.read_text())
    assert done == marker
    assert (done["rows_written"], done["rows_ok"], done["rows_failed"]) == (2, 1, 1)
    assert (done["bytes"], done["sha256"]) == file_digest(writer.paths.predictions)
    assert open_writer(tmp_path, chunk=chunk).is_done


def test_resume_skips_done_ids(tmp_path):
    writer = open_writer(tmp_path)
    writer.write_window([ok(0), ok(1)])
    writer.close()  # killed before finish
    resumed = open_writer(tmp_path)
    assert resumed.done_ids == {"u0", "u1"} and resumed.contains("u1")
    assert not resumed.is_done
    assert resumed.write_window([ok(1), ok(2)]) == 1
    assert resumed.duplicates_prevented == 1
    assert resumed.finish()["rows_written"] == 3
    assert [r["_id"] for r in read_predictions(resumed.paths.predictions)] == ["u0", "u1", "u2"]


def test_duplicate_within_one_window_is_prevented(tmp_path):
    with open_writer(tmp_path) as writer:
        assert writer.write_window([ok(0), ok(0)]) == 1
        assert writer.duplicates_prevented == 1


@pytest.mark.parametrize(
    "tail",
    [b'{"_id": "u9", "pred_te', b'{"_id": "u9"}', b"\x00\x00\x00", b"not json\n", b"garbage\n\x00\x00"],
)
def test_torn_tail_is_cut_on_resume(tmp_path, tail):
    writer = open_writer(tmp_path)
    writer.write_window([ok(0), ok(1)])
    writer.close()
    good = writer.paths.predictions.read_bytes()
    with writer.paths.predictions.open("ab") as f:
        f.write(tail)
    assert [r["_id"] for r in read_predictions(writer.paths.predictions)] == ["u0", "u1"]
    resumed = open_writer(tmp_path)
    assert resumed.dropped_tail_bytes == len(tail)
    assert resumed.done_ids == {"u0", "u1"}
    assert writer.paths.predictions.read_bytes() == good
    resumed.write_window([ok(2)])
    resumed.finish()
    assert [r["_id"] for r in read_predictions(writer.paths.predictions)] == ["u0", "u1", "u2"]


def test_corrupt_line_inside_file_is_reported(tmp_path):
    writer = open_writer(tmp_path)
    writer.write_window([ok(0)])
    writer.close()
    with writer.paths.predictions.open("ab") as f:
        f.write(b"garbage\n" + json.dumps(result_to_dict(ok(1))).encode() + b"\n")
    with pytest.raises(SpeechlmBatchError, match=":2: corrupt line"):
        list(read_predictions(writer.paths.predictions))
    with pytest.raises(SpeechlmBatchError, match="corrupt line"):
        open_writer(tmp_path)


def test_fingerprint_mismatch_refused(tmp_path):
    writer = open_writer(tmp_path, fingerprint="aaaa")
    writer.write_window([ok(0)])
    writer.close()
    before = writer.paths.predictions.read_bytes()
    with pytest.raises(ResumeMismatchError) as info:
        open_writer(tmp_path, fingerprint="bbbb")
    assert "aaaa" in str(info.value) and "bbbb" in str(info.value)
    assert "use --overwrite to start over" in info.value.hint
    assert writer.paths.predictions.read_bytes() == before  # untouched


def test_overwrite_starts_over(tmp_path):
    writer = open_writer(tmp_path, fingerprint="aaaa")
    writer.write_window([ok(0), ok(1)])
    writer.finish()
    fresh = open_writer(tmp_path, fingerprint="bbbb", overwrite=True)
    assert fresh.done_ids == set() and not fresh.paths.done.exists()
    fresh.write_window([ok(5)])
    fresh.finish()
    assert [r["_id"] for r in read_predictions(fresh.paths.predictions)] == ["u5"]
    assert json.loads(fresh.paths.meta.read_text())["fingerprint"] == "bbbb"


def test_stale_done_marker_is_not_done(tmp_path):
    writer = open_writer(tmp_path)
    writer.write_window([ok(0)])
    writer.finish()
    with writer.paths.predictions.open("ab") as f:  # changed after the marker was written
        f.write(json.dumps(result_to_dict(ok(1))).encode() + b"\n")
    resumed = open_writer(tmp_path)
    assert not resumed.is_done
    assert not resumed.paths.done.exists()


def test_lone_surrogate_in_input_row_still_written(tmp_path):
    with open_writer(tmp_path) as writer:
        writer.write_window([ok(0, row={"audio_filepath": "a.wav", "text": "\ud800"})])
    (row,) = read_predictions(writer.paths.predictions)
    assert row["text"] == "\ud800"


def test_in_memory_writer_same_interface():
    writer = InMemoryWriter()
    assert writer.write_window([ok(0), failed(1), ok(0)]) == 2
    assert (writer.rows_ok, writer.rows_failed, writer.duplicates_prevented) == (1, 1, 1)
    assert writer.contains("u1") and not writer.is_done
    assert writer.finish()["rows_written"] == 2 and writer.is_done
    assert writer.rows[1]["error"]["kind"] == "missing_file"


def test_empty_file_under_other_fingerprint_restarts(tmp_path):
    open_writer(tmp_path, fingerprint="aaaa").close()  # killed before its first window
    writer = open_writer(tmp_path, fingerprint="bbbb")
    assert json.loads(writer.paths.meta.read_text())["fingerprint"] == "bbbb"
    writer.close()


def test_finished_empty_chunk_stays_done(tmp_path):
    open_writer(tmp_path).finish()  # a chunk with no rows (fewer rows than chunks)
    assert open_writer(tmp_path).is_done


# -- lock, input identity, retry, order ------------------------------------------------------------------

KEY_A = {"source": {"path": "/d/a.jsonl", "bytes": 10}, "rows": 3, "row_ids_sha256": "aaa"}
KEY_B = {"source": {"path": "/d/b.jsonl", "bytes": 12}, "rows": 4, "row_ids_sha256": "bbb"}


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    import os
    import socket

    from speechlm_batch.errors import EXIT_BUSY, OutputBusyError

    first = open_writer(tmp_path)
    with pytest.raises(OutputBusyError) as caught:
        open_writer(tmp_path)
    assert f"pid {os.getpid()}" in str(caught.value) and socket.gethostname() in str(caught.value)
    assert caught.value.exit_code == EXIT_BUSY
    first.write_window([ok(0)])
    first.finish()  # releases
    open_writer(tmp_path).close()


def test_the_lock_goes_with_its_process(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from speechlm_batch.outputs import PredictionWriter as W; "
        f"w = W.open({str(tmp_path)!r}, None, 'fp1', {{}}, False); print('locked', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        from speechlm_batch.errors import OutputBusyError

        with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):
            open_writer(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    open_writer(tmp_path).close()  # killed holder: its lock is gone


def _open_keyed(folder, key, retry=None, fingerprint="fp1"):
    return PredictionWriter.open(folder, None, fingerprint, META, False, input_key=key, retry_kinds=retry)


def test_other_input_is_refused_even_when_complete_and_the_same_input_resumes(tmp_path):
    writer = _open_keyed(tmp_path, KEY_A)
    writer.write_window([ok(0)])
    writer.close()  # unfinished
    with pytest.raises(ResumeMismatchError, match="another input") as caught:
        _open_keyed(tmp_path, KEY_B)
    assert "rows: 3 -> 4" in str(caught.value) and "--overwrite" in caught.value.hint
    writer = _open_keyed(tmp_path, KEY_A)
    assert writer.done_ids == {"u0"}
    writer.write_window([ok(1), ok(2)])
    writer.finish()
    with pytest.raises(ResumeMismatchError):  # "complete already" must not hide another input
        _open_keyed(tmp_path, KEY_B)
    with pytest.raises(ResumeMismatchError):
        PredictionWriter.check(tmp_path, None, "fp1", KEY_B)
    PredictionWriter.check(tmp_path, None, "fp1", KEY_A)
    assert _open_keyed(tmp_path, KEY_A).is_done


def test_retry_failed_removes_only_failed_rows_of_the_kinds_asked(tmp_path):
    engine_failed = RowResult(ok(3).utterance, None, RowError(ErrorKind.ENGINE, "x: engine"))
    writer = _open_keyed(tmp_path, KEY_A)
    writer.write_window([ok(0), failed(1), ok(2), engine_failed])
    writer.finish()
    writer = _open_keyed(tmp_path, KEY_A, retry={"engine"})
    assert writer.retried_rows == 1 and writer.done_ids == {"u0", "u1", "u2"} and not writer.is_done
    writer.close()
    writer = _open_keyed(tmp_path, KEY_A, retry=set())  # every kind
    assert writer.retried_rows == 1 and writer.done_ids == {"u0", "u2"}
    writer.write_window([ok(1), ok(3)])
    writer.finish()
    rows = list(read_predictions(tmp_path / "predictions.jsonl"))
    assert [r["_id"] for r in rows] == ["u0", "u1", "u2", "u3"] and not any("error" in r for r in rows)


def test_finish_puts_rows_in_input_order(tmp_path):
    writer = open_writer(tmp_path)
    writer.write_window([ok(2), ok(0)])
    writer.write_window([failed(1)])
    before = sorted((tmp_path / "predictions.jsonl").read_bytes().splitlines(keepends=True))
    marker = writer.finish()
    data = (tmp_path / "predictions.jsonl").read_bytes()
    assert [r["_position"] for r in read_predictions(tmp_path / "predictions.jsonl")] == [0, 1, 2]
    assert sorted(data.splitlines(keepends=True)) == before  # the same lines, only reordered
    assert file_digest(tmp_path / "predictions.jsonl") == (marker["bytes"], marker["sha256"])


def test_a_whole_run_is_byte_identical_to_the_merge_of_its_chunks(tmp_path):
    from speechlm_batch.merge import merge
    from speechlm_batch.sharding import plan

    results = [ok(p, text=f"t{p}") if p % 3 else failed(p) for p in range(7)]
    whole = open_writer(tmp_path / "whole")
    whole.write_window(results[::-1])
    whole.finish()
    for k, positions in enumerate(plan([None] * 7, 3)):
        writer = open_writer(tmp_path / "chunks", chunk=ChunkSpec(k, 3))
        writer.write_window([results[p] for p in reversed(positions)])
        writer.finish()
    merged = merge(tmp_path / "chunks", expected_count=7)
    assert merged.ok
    assert merged.merged.read_bytes() == (tmp_path / "whole" / "predictions.jsonl").read_bytes()


def test_truncated_rows_are_marked():
    row = result_to_dict(RowResult(ok(0).utterance, "cut off", None, 1.0, 1, truncated=True))
    assert row["_truncated"] is True
    assert "_truncated" not in result_to_dict(ok(1))
