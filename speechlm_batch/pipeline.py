"""One transcription loop shared by `transcribe`, `eval` and the benchmark.

Flow per row: audio.read -> audio.split -> adapter.request -> engine.run -> adapter.postprocess -> join the
pieces -> writer. With --timestamps each piece's `adapter.segments` are shifted by the piece's offset and joined. Audio for the next window is decoded on worker threads while the engine works on the
current one (soundfile and soxr release the GIL); the engine itself is fed continuously (see engine.run).
With front-end workers (`frontend_workers` > 0) reading, splitting and rendering happen in worker
processes instead (speechlm_batch.frontend); the pieces of a window are submitted in the same order.
Finished rows are written once per window, so a kill loses at most the rows in flight. Never prints.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from speechlm_batch import audio as audio_io
from speechlm_batch import frontend
from speechlm_batch.adapters.base import EngineRequest, ModelAdapter
from speechlm_batch.engine import Completion, Engine
from speechlm_batch.errors import EngineError
from speechlm_batch.settings import RunSettings
from speechlm_batch.textguard import collapse_loops
from speechlm_batch.types import Audio, AudioPiece, BadRow, ErrorKind, RowError, RowResult, Seconds, Segment, Utterance

WARMUP_AUDIO_S = 1.0


class RowSink:
    """Where finished rows go (outputs.PredictionWriter and outputs.InMemoryWriter both fit)."""

    def write_window(self, results: Sequence[RowResult]) -> None: ...


@dataclass
class LoopStats:
    """What the loop measured. Times are seconds; `engine_s` is time inside vLLM calls only."""

    rows: int = 0
    rows_failed: int = 0
    audio_s: float = 0.0
    decode_s: float = 0.0  # summed over decode threads (overlaps the engine)
    render_s: float = 0.0  # summed over front-end workers (0 in-process: rendering is inside engine_s)
    frontend_workers: int = 0
    frontend_replaced: int = 0  # front-end workers that died or hung (their rows failed) and were replaced
    frontend_wait_s: float = 0.0  # this process blocked on the workers' results (includes the pipe's transfer)
    frontend_receive_s: float = 0.0  # the pool's reader thread unpickling the workers' results
    engine_s: float = 0.0
    write_s: float = 0.0
    wall_s: float = 0.0
    interrupted: bool = False


@dataclass
class _OpenRow:
    utterance: Utterance
    count: int
    audio_s: float
    texts: dict[int, str] = field(default_factory=dict)
    received: int = 0
    error: RowError | None = None
    prompt_tokens: int = 0
    truncated: bool = False
    spans: dict[int, tuple[Seconds, Seconds]] = field(default_factory=dict)  # piece -> (offset_s, duration_s)
    segments: dict[int, tuple[Segment, ...]] = field(default_factory=dict)  # --timestamps: per piece, row times


def run(
    items: Iterable[Utterance | BadRow],
    *,
    engine: Engine,
    adapter: ModelAdapter,
    sink: RowSink,
    settings: RunSettings,
    stop: threading.Event | None = None,
    on_rows: Callable[[Sequence[RowResult]], None] | None = None,
    frontend_pool: frontend.FrontendPool | None = None,
) -> LoopStats:
    """Transcribe every item, writing results to `sink` window by window.

    `frontend_pool`: a started pool (frontend.start_pool) to prepare rows in; without one, a pool is started
    here when the settings ask for workers, and closed at the end.
    """
    stats = LoopStats()
    stop = stop or threading.Event()
    busy_before = engine.busy_s
    start = time.perf_counter()
    adapter = frontend.with_features_device(adapter, settings.features_device)
    assembler = _Assembler(adapter, settings.decode.collapse_loops, settings.decode.timestamps)
    with contextlib.ExitStack() as stack:
        pool = frontend_pool
        if pool is None:
            pool = frontend.start_pool(engine, settings)
            if pool is not None:
                stack.callback(pool.close)
        stats.frontend_workers = pool.size if pool is not None else 0
        if pool is not None:
            replaced_before, wait_before, receive_before = pool.replaced, pool.wait_s, pool.receive_s
            requests = _pool_requests(items, settings, pool, assembler, stats, stop)
        else:
            threads = ThreadPoolExecutor(max_workers=max(1, settings.decode_workers), thread_name_prefix="decode")
            # a window decoded ahead is dropped at the end, not waited for
            stack.callback(threads.shutdown, wait=True, cancel_futures=True)
            requests = _requests(items, adapter, settings, threads, assembler, stats, stop)
        max_in_flight = max(settings.window_rows, engine.max_num_seqs, 1)  # never starve the scheduler
        try:
            for completion in engine.run(requests, max_in_flight):
                assembler.complete(completion)
                if len(assembler.finished) >= settings.window_rows:
                    _flush(assembler, sink, stats, on_rows)
        except EngineError:
            if not stop.is_set():
                raise
            # Stopping, and the engine died of the same signal (e.g. Slurm signals every process of a job
            # step): the rows it finished are written, the rows in flight are redone by the rerun.
        if pool is not None:
            stats.frontend_replaced = pool.replaced - replaced_before
            stats.frontend_wait_s = pool.wait_s - wait_before
            stats.frontend_receive_s = pool.receive_s - receive_before
    _flush(assembler, sink, stats, on_rows)
    stats.engine_s = engine.busy_s - busy_before
    stats.wall_s = time.perf_counter() - start
    stats.interrupted = stop.is_set()
    return stats


def warmup(engine: Engine, adapter: ModelAdapter) -> float:
    """One short request before timing starts: first-call costs stay out of RTFx. Returns seconds."""
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(int(WARMUP_AUDIO_S * adapter.sample_rate)) * 0.01).astype(np.float32)
    piece = AudioPiece("warmup", 0, 1, samples, adapter.sample_rate)
    list(engine.run([("warmup", adapter.request(piece))], 1))
    return time.perf_counter() - start


def _flush(assembler: _Assembler, sink: RowSink, stats: LoopStats, on_rows) -> None:
    rows, assembler.finished = assembler.finished, []
    if not rows:
        return
    start = time.perf_counter()
    sink.write_window(rows)
    stats.write_s += time.perf_counter() - start
    stats.rows += len(rows)
    stats.rows_failed += sum(1 for r in rows if not r.ok)
    stats.audio_s += sum(r.audio_s for r in rows if r.ok)
    if on_rows is not None:
        on_rows(rows)


def _requests(items, adapter, settings, pool, assembler, stats, stop) -> Iterator[tuple[tuple[str, int], EngineRequest]]:
    """Requests for every piece, window by window, decoding the next window while this one is submitted."""
    windows = _windows(items, settings.window_rows, settings.window_audio_s, stop)
    ahead = _decode_window(next(windows, None), adapter, pool)
    while ahead is not None:
        current = ahead
        ahead = _decode_window(next(windows, None), adapter, pool)  # prefetch: overlaps the engine
        pieces: list[AudioPiece] = []
        for item, decoded in current:
            audio, decode_s = decoded.result() if isinstance(decoded, Future) else decoded
            stats.decode_s += decode_s
            pieces.extend(assembler.open(item, audio))
        if settings.sort_by_duration:
            pieces.sort(key=lambda p: -len(p.samples))  # longest first: fuller batches, shorter tail
        for piece in pieces:
            if stop.is_set():  # after a stop nothing new goes in: the rows in flight finish, the rest wait
                return
            yield (piece.utterance_id, piece.index), adapter.request(piece)


def _pool_requests(items, settings, pool, assembler, stats, stop) -> Iterator[tuple[tuple[str, int], object]]:
    """As `_requests`, with rows prepared by the front-end pool: same windows, same piece order."""
    for window in frontend.prepared_windows(_windows(items, settings.window_rows, settings.window_audio_s, stop), pool):
        pieces: list[tuple[str, frontend.PreparedPiece]] = []
        for item, prepared in window:
            if isinstance(prepared, frontend.PreparedRow):
                stats.decode_s += prepared.decode_s
                stats.render_s += prepared.render_s
            pieces.extend((item.id, p) for p in assembler.open_prepared(item, prepared))
        if settings.sort_by_duration:
            pieces.sort(key=lambda p: -p[1].samples)  # the in-process order: same batches, same outputs
        for utterance_id, piece in pieces:
            yield (utterance_id, piece.index), piece.request


def _windows(items: Iterable, size: int, max_audio_s: float, stop: threading.Event) -> Iterator[list]:
    """Windows of at most `size` rows and, counting rows whose duration is declared, `max_audio_s` seconds
    (a window of hour-long files would otherwise hold hours of samples); a window has at least one row."""
    window: list = []
    audio_s = 0.0
    for item in items:
        if stop.is_set():
            break
        duration_s = _declared_s(item)
        if window and audio_s + duration_s > max_audio_s:
            yield window
            window, audio_s = [], 0.0
        window.append(item)
        audio_s += duration_s
        if len(window) >= size:
            yield window
            window, audio_s = [], 0.0
    if window and not stop.is_set():
        yield window


def _declared_s(item: Utterance | BadRow) -> float:
    """Seconds a row declares before decoding (manifest `duration`, a dataset's duration column), else 0."""
    if isinstance(item, BadRow):
        return 0.0
    value = item.duration_s if item.duration_s is not None else item.row.get("duration")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else 0.0


def _decode_window(window, adapter, pool) -> list | None:
    if window is None:
        return None
    return [(item, _submit(item, adapter, pool)) for item in window]


def _submit(item, adapter, pool):
    if isinstance(item, BadRow):
        return (item.error, 0.0)
    return pool.submit(read_timed, item, adapter.sample_rate)


def read_timed(utt: Utterance, sample_rate: int) -> tuple[Audio | RowError, float]:
    start = time.perf_counter()
    try:
        result = audio_io.read(utt, sample_rate)
    except MemoryError:
        result = RowError(ErrorKind.UNREADABLE, f"{utt.audio_filepath}: out of memory while decoding")
    except Exception as e:  # a decoder bug or odd input must cost one row, never the run
        result = RowError(ErrorKind.UNREADABLE, f"{utt.audio_filepath}: decoding failed ({type(e).__name__}: {e})")
    return result, time.perf_counter() - start


class _Assembler:
    """Tracks rows whose pieces are in flight and joins their texts in piece order."""

    def __init__(self, adapter: ModelAdapter, collapse: bool, timestamps: bool = False) -> None:
        self.adapter = adapter
        self.collapse = collapse
        self.timestamps = timestamps
        self.open_rows: dict[str, _OpenRow] = {}
        self.finished: list[RowResult] = []

    def open(self, item: Utterance | BadRow, audio: Audio | RowError) -> list[AudioPiece]:
        if isinstance(item, BadRow):
            self.finished.append(RowResult(item, None, item.error))
            return []
        if isinstance(audio, RowError):
            self.finished.append(RowResult(item, None, audio))
            return []
        max_s = self.adapter.max_piece_s or float("inf")
        pieces = audio_io.split(audio, max_s, item.id)
        row = _OpenRow(item, len(pieces), audio.duration_s)
        self.open_rows[item.id] = row
        row.spans = {p.index: (p.offset_s, p.duration_s) for p in pieces}
        for piece in pieces:  # silent stretches of long files add no text and cost no engine time
            if audio_io.is_silent(piece.samples):
                row.texts[piece.index] = ""
                row.received += 1
        return [p for p in pieces if p.index not in row.texts]

    def open_prepared(self, item: Utterance | BadRow, prepared: frontend.PreparedRow | RowError) -> list:
        """`open` for a row a front-end worker read, split and rendered: its pieces that need the engine."""
        if isinstance(item, BadRow):
            self.finished.append(RowResult(item, None, item.error))
            return []
        if isinstance(prepared, RowError) or prepared.error is not None:
            error = prepared if isinstance(prepared, RowError) else prepared.error
            self.finished.append(RowResult(item, None, error))
            return []
        row = _OpenRow(item, prepared.count, prepared.audio_s)
        row.texts.update({i: "" for i in prepared.silent})
        row.received = len(prepared.silent)
        refused = [p for p in prepared.pieces if p.request is None]
        if refused:  # the renderer refused a piece: the row fails as the in-process enqueue would fail it
            message = f"{item.audio_filepath}: {refused[0].error}"
            self.finished.append(RowResult(item, None, RowError(ErrorKind.ENGINE, message), 0.0, prepared.count))
            return []
        self.open_rows[item.id] = row
        row.spans = {p.index: (p.offset_s, p.duration_s) for p in prepared.pieces}
        return list(prepared.pieces)

    def complete(self, completion: Completion) -> None:
        utterance_id, index = completion.key
        row = self.open_rows[utterance_id]
        row.received += 1
        row.prompt_tokens += completion.prompt_tokens
        row.truncated = row.truncated or completion.finish_reason == "length"
        if completion.error is not None:
            kind = completion.error_kind or ErrorKind.ENGINE
            row.error = row.error or RowError(kind, f"{row.utterance.audio_filepath}: {completion.error}")
        else:
            text = row.texts[index] = self.adapter.postprocess(completion.text or "")
            if self.timestamps:
                offset_s, duration_s = row.spans[index]
                timed = self.adapter.segments(text, completion.token_ids, duration_s)
                row.segments[index] = tuple(segment.shifted(offset_s) for segment in timed)
        if row.received == row.count:
            self._finish(utterance_id)

    def _finish(self, utterance_id: str) -> None:
        row = self.open_rows.pop(utterance_id)
        if row.error is not None:
            self.finished.append(RowResult(row.utterance, None, row.error, 0.0, row.count))
            return
        text = " ".join(t for t in (row.texts[i] for i in range(row.count)) if t)
        loops = 0
        if self.collapse:
            text, loops = collapse_loops(text)
        segments = tuple(s for i in range(row.count) for s in row.segments.get(i, ())) if self.timestamps else None
        if segments and self.collapse:  # the segments say what pred_text says (loops inside one segment)
            segments = tuple(Segment(s.start_s, s.end_s, collapse_loops(s.text)[0]) for s in segments)
        self.finished.append(
            RowResult(
                row.utterance, text, None, row.audio_s, row.count, loops, row.prompt_tokens,
                truncated=row.truncated, segments=segments,
            )
        )
