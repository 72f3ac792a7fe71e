"""pipeline's row assembly and text guard, without an engine."""

from __future__ import annotations

import numpy as np

from speechlm_batch.engine import Completion
from speechlm_batch.pipeline import _Assembler
from speechlm_batch.textguard import collapse_loops
from speechlm_batch.types import Audio, ErrorKind, Segment, Utterance


class _Adapter:
    family = "fake"
    sample_rate = 16000
    max_piece_s = 30.0

    def postprocess(self, text: str) -> str:
        return text.strip()

    def segments(self, text, token_ids, duration_s):
        """Two halves of the piece, so the test sees times shifted by each piece's offset."""
        return (Segment(0.0, duration_s / 2, text), Segment(duration_s / 2, duration_s, f"{text}+"))


def _utt(uid="u"):
    return Utterance(id=uid, position=0, audio_filepath="a.wav", row={})


def test_pieces_are_joined_in_order_and_silent_pieces_skip_the_engine():
    rate = 16000
    speech = np.full(int(rate * 29.5), 0.1, dtype=np.float32)
    # 29.5 s speech, 30.5 s digital silence, 10 s speech = 70 s: three pieces, the middle one silent.
    samples = np.concatenate([speech, np.zeros(int(rate * 30.5), dtype=np.float32), speech[: rate * 10]])
    asm = _Assembler(_Adapter(), collapse=False)
    pieces = asm.open(_utt(), Audio(samples, rate))
    assert [p.index for p in pieces] == [0, 2]  # the silent middle piece is not sent
    asm.complete(Completion(("u", 2), " world ", prompt_tokens=140))
    assert not asm.finished
    asm.complete(Completion(("u", 0), "hello", prompt_tokens=390))
    [row] = asm.finished
    assert row.pred_text == "hello world" and row.pieces == 3 and row.audio_s == 70.0
    assert row.prompt_tokens == 530  # what the engine ran for the row, over its pieces


def test_engine_error_fails_the_row_after_all_pieces_return():
    samples = np.full(16000 * 50, 0.1, dtype=np.float32)
    asm = _Assembler(_Adapter(), collapse=False)
    assert len(asm.open(_utt(), Audio(samples, 16000))) == 2
    asm.complete(Completion(("u", 0), None, error="ValueError: too long"))
    assert not asm.finished  # piece 1 still in flight
    asm.complete(Completion(("u", 1), "text"))
    [row] = asm.finished
    assert row.pred_text is None and row.error.kind is ErrorKind.ENGINE and "too long" in row.error.message


def test_collapse_loops_counts_what_it_removed():
    text, fired = collapse_loops("thank you " * 10 + "bye")
    assert text == "thank you thank you bye" and fired == 1
    assert collapse_loops("no no no") == ("no no no", 0)


def test_windows_are_bounded_by_declared_audio_seconds_as_well_as_rows():
    import threading

    from speechlm_batch.pipeline import _windows
    from speechlm_batch.types import BadRow, RowError

    def utt(i, seconds):
        return Utterance(id=str(i), position=i, audio_filepath="a.wav", row={}, duration_s=seconds)

    items = [utt(0, 3000.0), utt(1, 3000.0), utt(2, 100.0), utt(3, None),
             BadRow("b", 4, "{", RowError(ErrorKind.BAD_ROW, "x")), utt(5, 4000.0), utt(6, 1.0)]
    sizes = [[item.position for item in w] for w in _windows(items, 4, 3600.0, threading.Event())]
    # A row longer than the bound gets a window of its own; rows without a duration count as 0 s.
    assert sizes == [[0], [1, 2, 3, 4], [5], [6]]
    by_rows = [len(w) for w in _windows(items, 2, 1e9, threading.Event())]
    assert by_rows == [2, 2, 2, 1]


def test_nothing_is_submitted_after_a_stop():
    import threading

    from fakes import FakeAdapter, FakeEngine

    from speechlm_batch.outputs import InMemoryWriter
    from speechlm_batch.pipeline import run
    from speechlm_batch.settings import RunSettings

    stop = threading.Event()
    utts = [Utterance(id=f"u{i}", position=i, audio_filepath="a.wav", row={},
                      audio=(np.full(1600, 0.1, dtype=np.float32), 16000)) for i in range(12)]

    class StoppingEngine(FakeEngine):
        def run(self, requests, max_in_flight):
            for completion in super().run(requests, max_in_flight):
                if self.completed == 3:
                    stop.set()  # as the SIGINT handler does, while window 1 is submitted and window 2 decoded
                yield completion

    engine, sink = StoppingEngine(lambda _id: "hi"), InMemoryWriter()
    stats = run(utts, engine=engine, adapter=FakeAdapter(), sink=sink, settings=RunSettings(window_rows=4), stop=stop)
    assert stats.interrupted and engine.completed == 3
    assert sorted(r["_id"] for r in sink.rows) == ["u0", "u1", "u2"]  # the rows in flight, written


def test_a_piece_cut_by_the_token_cap_marks_its_row_truncated():
    samples = np.full(16000 * 50, 0.1, dtype=np.float32)
    asm = _Assembler(_Adapter(), collapse=False)
    asm.open(_utt(), Audio(samples, 16000))
    asm.complete(Completion(("u", 0), "a", finish_reason="stop"))
    asm.complete(Completion(("u", 1), "b b b", finish_reason="length"))
    [row] = asm.finished
    assert row.truncated and row.pred_text == "a b b b"


def test_an_engine_dying_of_the_stop_signal_ends_the_run_as_interrupted_not_failed():
    import threading

    import pytest
    from fakes import FakeAdapter, FakeEngine

    from speechlm_batch.errors import EngineError
    from speechlm_batch.outputs import InMemoryWriter
    from speechlm_batch.pipeline import run
    from speechlm_batch.settings import RunSettings

    utts = [Utterance(id=f"u{i}", position=i, audio_filepath="a.wav", row={},
                      audio=(np.full(1600, 0.1, dtype=np.float32), 16000)) for i in range(6)]

    class DyingEngine(FakeEngine):
        stop_first = True

        def run(self, requests, max_in_flight):
            for completion in super().run(requests, max_in_flight):
                yield completion
                if self.completed == 2:
                    if self.stop_first:
                        stop.set()
                    raise EngineError("the vLLM engine stopped: EngineDeadError")

    stop = threading.Event()
    sink = InMemoryWriter()
    stats = run(utts, engine=DyingEngine(lambda _id: "hi"), adapter=FakeAdapter(), sink=sink,
                settings=RunSettings(window_rows=1), stop=stop)
    assert stats.interrupted and sorted(r["_id"] for r in sink.rows) == ["u0", "u1"]
    stop = threading.Event()
    with pytest.raises(EngineError):  # without a stop, an engine death is a failed run
        engine = DyingEngine(lambda _id: "hi")
        engine.stop_first = False
        run(utts, engine=engine, adapter=FakeAdapter(), sink=InMemoryWriter(), settings=RunSettings(window_rows=1),
            stop=stop)


def test_timestamps_shift_each_piece_by_its_offset_and_skip_silent_pieces():
    rate = 16000
    speech = np.full(int(rate * 29.5), 0.1, dtype=np.float32)
    samples = np.concatenate([speech, np.zeros(int(rate * 30.5), dtype=np.float32), speech[: rate * 10]])
    asm = _Assembler(_Adapter(), collapse=False, timestamps=True)
    pieces = asm.open(_utt(), Audio(samples, rate))
    offsets = [p.offset_s for p in pieces]
    assert offsets[0] == 0.0 and 55.0 < offsets[1] < 60.0  # the third piece, after the silent one
    for piece in pieces:
        asm.complete(Completion(("u", piece.index), f"p{piece.index}"))
    [row] = asm.finished
    last = pieces[1]
    assert row.segments == (
        Segment(0.0, pieces[0].duration_s / 2, "p0"), Segment(pieces[0].duration_s / 2, pieces[0].duration_s, "p0+"),
        Segment(last.offset_s, last.offset_s + last.duration_s / 2, "p2"),
        Segment(last.offset_s + last.duration_s / 2, last.offset_s + last.duration_s, "p2+"),
    )
    assert row.segments[-1].end_s == row.audio_s  # the last piece ends where the audio does
    assert row.pred_text == "p0 p2"


def test_no_segments_without_timestamps():
    asm = _Assembler(_Adapter(), collapse=False)
    [piece] = asm.open(_utt(), Audio(np.full(16000, 0.1, dtype=np.float32), 16000))
    asm.complete(Completion(("u", 0), "x"))
    assert asm.finished[0].segments is None


def test_collapse_loops_cleans_segment_texts_too():
    asm = _Assembler(_Adapter(), collapse=True, timestamps=True)
    [piece] = asm.open(_utt(), Audio(np.full(16000, 0.1, dtype=np.float32), 16000))
    asm.complete(Completion(("u", 0), "thank you " * 10))
    [row] = asm.finished
    assert row.segments[0].text == "thank you thank you" and row.loops_collapsed >= 1
