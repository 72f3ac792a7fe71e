"""The front end in worker processes: read, resample, split and render requests away from the engine's process.

With the engine on a GPU, one calling process cannot render requests as fast as vLLM decodes them: the
renderer (vLLM -> the model's HF processor -> feature extractor), the per-clip tokenising and the audio
decoding share one GIL, and the engine waits (docs/benchmarks.md). Here a pool of spawned processes does that
work. Each builds its own vLLM renderer and adapter from the engine's arguments, turns one input row into its
pieces' rendered engine inputs (`RenderedRequest`), and sends them back through a multiprocessing queue;
the main process only adds them to the engine, steps it and writes rows.

Guarantees kept from the in-process path: a window's pieces are submitted in the same order (so the engine
batches the same way and CPU outputs are byte-identical), memory is bounded by the windows in flight, and a
worker that dies or hangs costs only the rows it held (row errors of kind `frontend`); a new worker takes its
place and the run goes on.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing as mp
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from speechlm_batch import whisper_features
from speechlm_batch.adapters.base import EngineRequest, ModelAdapter
from speechlm_batch.settings import GPU_FRONTEND_WORKERS_MAX, GPU_HOST_THREADS, DecodeSettings, RunSettings
from speechlm_batch.types import BadRow, ErrorKind, RowError, Utterance

# Read before numpy / torch are imported in a spawned child: set in the environment the child is started
# with. With numpy's default threads, 12 CPU workers on 16 cores ran 2.4x slower (docs/benchmarks.md).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
READY_TIMEOUT_S = 300.0  # building a renderer imports vLLM and loads the processor: ~10 s alone, more when busy
HANG_TIMEOUT_S = 600.0  # a worker holding rows that answers nothing for this long is stopped
POLL_S = 1.0  # how often the main process checks that the workers it waits on are alive
PARENT_CHECK_S = 5.0  # an idle worker checks this often that the main process still exists
WINDOWS_AHEAD = 2  # windows handed to the workers beyond the one being submitted: keeps them busy


_WAKE = ("wake", -1, None, None)  # put on the results queue by close(): ends the reader thread's wait


@dataclass(frozen=True, slots=True)
class RenderedRequest:
    """A request rendered into vLLM's engine input by a worker: the main process only adds it."""

    engine_input: Any  # what vLLM's Renderer.render_cmpl returned (EngineInput)
    max_tokens: int
    sampling: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PreparedPiece:
    index: int
    samples: int  # the piece's length: the main process sorts a window's pieces by it, as the in-process path does
    request: RenderedRequest | None
    error: str | None = None  # the renderer refused this piece (the in-process path gets this from enqueue)
    offset_s: float = 0.0  # where the piece starts in the row's audio, and how long it is (--timestamps)
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PreparedRow:
    """One input row as a worker prepared it: an error, or its pieces (silent ones need no request)."""

    error: RowError | None
    audio_s: float = 0.0
    count: int = 0
    silent: tuple[int, ...] = ()
    pieces: tuple[PreparedPiece, ...] = ()
    decode_s: float = 0.0
    render_s: float = 0.0


@dataclass(frozen=True)
class FrontendConfig:
    """Everything a worker needs to rebuild the engine's renderer and the run's adapter (picklable)."""

    engine_kwargs: Mapping[str, Any]
    decode: DecodeSettings
    features_device: str | None
    cpu: bool
    trim_features: bool = False  # Whisper: log-mels sent without their padding frames (whisper_features.py)


def worker_count(settings: RunSettings, cpu: bool, cores: int | None = None) -> int:
    """Workers for this run: the setting, else 0 on CPU builds (measured: the in-process path is as fast on
    2 cores) and on GPUs one per core left after the engine's host threads, at most GPU_FRONTEND_WORKERS_MAX."""
    if settings.frontend_workers is not None:
        return max(0, settings.frontend_workers)
    if cpu:
        return 0
    spare = (cores or os.cpu_count() or 1) - GPU_HOST_THREADS
    return max(1, min(GPU_FRONTEND_WORKERS_MAX, spare))


def with_features_device(adapter: ModelAdapter, device: str | None) -> ModelAdapter:
    """The adapter with its features computed on `device` (adapters that have a `feature_device`)."""
    if device is None or not hasattr(adapter, "feature_device"):
        return adapter
    return replace(adapter, feature_device=None if device == "cpu" else device)  # type: ignore[type-var]


def pool_config(engine: Any, settings: RunSettings) -> FrontendConfig:
    """What the workers of a pool feeding `engine` need; log-mels are trimmed where its model restores them."""
    trim = not settings.full_features and whisper_features.accepts_trimmed(engine.kwargs)
    cpu = engine.info.accelerator == "cpu"
    return FrontendConfig(dict(engine.kwargs), settings.decode, settings.features_device, cpu, trim)


def start_pool(engine: Any, settings: RunSettings) -> FrontendPool | None:
    """The run's front-end pool, started (None when the front end runs in-process). The caller closes it."""
    if settings.server.enabled:  # servers render their own requests from the audio the client sends
        return None
    cpu = engine.info.accelerator == "cpu"
    workers = worker_count(settings, cpu)
    if not workers:
        return None
    pool = FrontendPool(pool_config(engine, settings), workers)
    try:
        pool.start()
    except BaseException:
        pool.close()
        raise
    return pool


# ---------------------------------------------------------------------------------------------- worker side


class Renderer:
    """vLLM's renderer for the engine's config, built in the worker (never in the engine's process)."""

    def __init__(self, engine_kwargs: Mapping[str, Any], trim_features: bool = False) -> None:
        from vllm.engine.arg_utils import EngineArgs
        from vllm.renderers.inputs.preprocess import parse_model_prompt
        from vllm.renderers.registry import renderer_from_config

        self.config = EngineArgs(**engine_kwargs).create_engine_config()
        self.model_config = self.config.model_config
        self.renderer = renderer_from_config(self.config)
        self._parse = parse_model_prompt
        self.trim_features = trim_features

    def render(self, request: EngineRequest) -> RenderedRequest:
        kwargs = dict(request.processor_kwargs)
        extras = {"mm_processor_kwargs": kwargs} if kwargs else None
        parsed = self._parse(self.model_config, dict(request.prompt))
        (engine_input,) = self.renderer.render_cmpl([parsed], self.renderer.default_cmpl_tok_params, prompt_extras=extras)
        if self.trim_features:
            engine_input = whisper_features.trim_rendered(engine_input, self.model_config.dtype)
        return RenderedRequest(engine_input, request.max_tokens, dict(request.sampling))

    @property
    def tokenizer(self) -> Any:
        try:
            return self.renderer.get_tokenizer()
        except Exception:  # models without a text tokenizer
            return None


def build_worker_adapter(config: FrontendConfig, renderer: Renderer) -> ModelAdapter:
    """The run's adapter, rebuilt from the renderer's model config exactly as the engine's process built it."""
    from speechlm_batch.adapters import resolve_adapter
    from speechlm_batch.engine import model_info

    info = model_info(renderer.model_config, renderer.tokenizer, str(config.engine_kwargs["model"]), config.cpu)
    return with_features_device(resolve_adapter(info, config.decode), config.features_device)


def prepare_row(item: Utterance, adapter: ModelAdapter, render: Any) -> PreparedRow:
    """Read, split and render one row: what the in-process path does between decoding and enqueue."""
    from speechlm_batch import audio as audio_io
    from speechlm_batch.pipeline import read_timed

    audio, decode_s = read_timed(item, adapter.sample_rate)
    if isinstance(audio, RowError):
        return PreparedRow(audio, decode_s=decode_s)
    start = time.perf_counter()
    pieces = audio_io.split(audio, adapter.max_piece_s or float("inf"), item.id)
    silent = tuple(p.index for p in pieces if audio_io.is_silent(p.samples))
    prepared = []
    for piece in pieces:
        if piece.index in silent:
            continue
        try:
            request, error = render(adapter.request(piece)), None
        except Exception as e:  # a request the processor rejects fails only its own row, as enqueue does
            request, error = None, f"{type(e).__name__}: {e}"
        prepared.append(PreparedPiece(piece.index, len(piece.samples), request, error, piece.offset_s, piece.duration_s))
    render_s = time.perf_counter() - start
    return PreparedRow(None, audio.duration_s, len(pieces), silent, tuple(prepared), decode_s, render_s)


def _limit_threads() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass


def worker_main(config: FrontendConfig, tasks: Any, results: Any, slot: int) -> None:
    """A worker's life: build the renderer and adapter, then prepare rows until told to stop (None)."""
    # Interrupts are the main process's: it finishes the rows in flight (they need us) and then stops us.
    # Slurm and Ctrl-C signal the whole process group.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _limit_threads()
    try:
        renderer = Renderer(config.engine_kwargs, config.trim_features)
        adapter = build_worker_adapter(config, renderer)
        render = renderer.render  # decoder prompts as token ids did not pay (bench/render_cost.py)
    except BaseException as e:  # the main process turns this into a run failure with the reason
        results.put(("failed", slot, None, f"{type(e).__name__}: {e}"))
        return
    results.put(("ready", slot, None, None))
    parent = os.getppid()
    while True:
        try:
            task = tasks.get(timeout=PARENT_CHECK_S)
        except queue.Empty:
            if os.getppid() != parent:  # the main process was killed: nobody will read our results
                return
            continue
        if task is None:
            # Every result was collected before the stop. Flush the queue, then leave without interpreter and CUDA
            # teardown: waiting for that cost the main process ~3 s of a 26 s H200 run (docs/benchmarks.md).
            results.close()
            results.join_thread()
            os._exit(0)
        task_id, item = task
        try:
            prepared = prepare_row(item, adapter, render)
        except Exception as e:  # a bug on one row must cost that row only
            prepared = PreparedRow(RowError(ErrorKind.FRONTEND, f"{item.audio_filepath}: {type(e).__name__}: {e}"))
        results.put(("done", slot, task_id, dumps(prepared)))


# --------------------------------------------------------------------------------------- between the two


class _ArrayPickler(pickle.Pickler):
    """Tensors as numpy arrays: raw bytes in the pickle, rebuilt without a copy.

    The queue's own pickler would send torch tensors as shared-memory file descriptors, one per tensor in flight
    (thousands of rows ahead exhaust the fd limit); plain pickle writes each tensor's storage with torch.save
    and reads it back with torch.load, which cost the main process, the one that also feeds the engine, more
    than the engine's own add_request per clip (bench/render_cost.py).
    """

    def reducer_override(self, obj: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is None or type(obj) is not torch.Tensor or obj.device.type != "cpu" or obj.requires_grad:
            return NotImplemented
        if obj.dtype == torch.bfloat16:  # numpy has no bfloat16: its bits travel as int16
            return _tensor_from_array, (obj.contiguous().view(torch.int16).numpy(), "bfloat16")
        return _tensor_from_array, (obj.contiguous().numpy(), None)


def _tensor_from_array(array: Any, view_as: str | None) -> Any:
    import torch

    tensor = torch.from_numpy(array)
    return tensor.view(getattr(torch, view_as)) if view_as else tensor


def dumps(prepared: PreparedRow) -> bytes:
    """A prepared row as bytes for the results queue (tensors by value, as numpy arrays)."""
    buffer = io.BytesIO()
    _ArrayPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(prepared)
    return buffer.getvalue()


def loads(payload: bytes) -> PreparedRow:
    return pickle.loads(payload)


# ------------------------------------------------------------------------------------------------ main side


@contextlib.contextmanager
def _child_environment() -> Iterator[None]:
    """One thread per library in the children (set before they import numpy), restored afterwards."""
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    os.environ.update({k: "1" for k in THREAD_VARIABLES})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class _Worker:
    slot: int
    process: Any
    tasks: Any
    held: dict[int, Utterance] = field(default_factory=dict)  # task id -> row, in the order handed over
    last_heard: float = field(default_factory=time.monotonic)


class FrontendPool:
    """K worker processes; rows go to the least-loaded one, prepared rows come back on one queue."""

    def __init__(
        self, config: FrontendConfig, workers: int, *, hang_timeout_s: float = HANG_TIMEOUT_S,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.size = workers
        self.hang_timeout_s = hang_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self._ctx = mp.get_context("spawn")  # never fork a process that holds vLLM's engine client
        self._results = self._ctx.Queue()
        # A thread moves results out of the pipe as they arrive and unpickles them. Without it the pipe (64 KiB)
        # fills and the workers' sends wait until the main process collects, so every row's log-mel crossed the
        # pipe while the main process, the one that also feeds the engine, did nothing else; unpickling there
        # too took 1.8 s of an 18 s H200 run, time the thread spends while the main one waits on the engine.
        self._inbox: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None
        self._closing = threading.Event()
        self._workers: dict[int, _Worker] = {}
        self._done: dict[int, PreparedRow] = {}
        self._next_task = 0
        self._next_slot = 0
        self._checked_at = time.monotonic()
        self.replaced = 0  # workers that died or hung and were replaced
        # Where the pool's time goes: the main process blocked on results (workers not done yet, or the pipe's
        # transfer), beside the engine's busy time, shows whether the workers or the engine bound a run; the
        # reader thread's unpickling of what came is counted apart.
        self.wait_s = 0.0
        self.receive_s = 0.0

    def __enter__(self) -> FrontendPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._reader = threading.Thread(target=self._read_results, name="frontend-results", daemon=True)
        self._reader.start()
        for _ in range(self.size):
            self._spawn()
        self._wait_ready(set(self._workers))

    def submit(self, item: Utterance) -> int:
        """Hand one row to the worker holding the fewest; returns its task id."""
        now = time.monotonic()
        # Liveness once a poll interval, not per row: asking every worker per row took 3 % of the main process.
        if now - self._checked_at > POLL_S:
            self._checked_at = now
            self._check_workers()  # a dead worker's rows fail (frontend errors) and a new one takes its place
        worker = min(self._workers.values(), key=lambda w: len(w.held))
        task_id = self._next_task
        self._next_task += 1
        if not worker.held:
            worker.last_heard = time.monotonic()  # its hang clock starts with its first row
        worker.held[task_id] = item
        worker.tasks.put((task_id, item))
        return task_id

    def collect(self, task_ids: Sequence[int]) -> dict[int, PreparedRow]:
        """Wait for these tasks; rows of a worker that died or hung come back as `frontend` errors."""
        wanted = [t for t in task_ids]
        while any(t not in self._done for t in wanted):
            start = time.perf_counter()
            try:
                kind, slot, task_id, payload = self._inbox.get(timeout=POLL_S)
            except queue.Empty:
                self._check_workers()
                continue
            finally:
                self.wait_s += time.perf_counter() - start
            self._receive(kind, slot, task_id, payload)
        return {t: self._done.pop(t) for t in wanted}

    def close(self) -> None:
        for worker in self._workers.values():
            with contextlib.suppress(Exception):
                worker.tasks.put(None)
        deadline = time.monotonic() + 10.0
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5.0)
        self._workers.clear()
        self._closing.set()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._results.put(_WAKE)  # the reader is blocked on the queue: wake it rather than wait out its poll
            self._reader.join(POLL_S + 1.0)

    def _read_results(self) -> None:
        while not self._closing.is_set():
            try:
                message = self._results.get(timeout=POLL_S)
            except queue.Empty:
                continue
            except (EOFError, OSError):  # the queue was closed under us: nothing more can come
                return
            if message == _WAKE:
                continue
            kind, slot, task_id, payload = message
            if kind == "done":
                payload = self._unpickle(payload)
            self._inbox.put((kind, slot, task_id, payload))

    def _unpickle(self, payload: bytes) -> PreparedRow:
        start = time.perf_counter()
        try:
            return loads(payload)
        except Exception as e:  # the row fails, not the reader (the run would wait on it forever)
            return PreparedRow(RowError(ErrorKind.FRONTEND, f"front-end result unreadable: {type(e).__name__}: {e}"))
        finally:
            self.receive_s += time.perf_counter() - start

    @property
    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers.values() if w.process.pid is not None]

    def _spawn(self) -> _Worker:
        slot = self._next_slot
        self._next_slot += 1
        tasks = self._ctx.Queue()
        process = self._ctx.Process(
            target=worker_main, args=(self.config, tasks, self._results, slot), name=f"frontend-{slot}", daemon=True
        )
        with _child_environment():
            process.start()
        worker = _Worker(slot, process, tasks)
        self._workers[slot] = worker
        return worker

    def _wait_ready(self, slots: set[int]) -> None:
        from speechlm_batch.errors import EngineError

        deadline = time.monotonic() + self.ready_timeout_s
        waiting = set(slots)
        while waiting:
            try:
                kind, slot, task_id, payload = self._inbox.get(timeout=POLL_S)
            except queue.Empty:
                dead = [s for s in waiting if not self._workers[s].process.is_alive()]
                if dead or time.monotonic() > deadline:
                    raise EngineError(f"front-end worker {sorted(dead or waiting)[0]} did not start",
                                      hint="rerun with --frontend-workers 0 (front end in this process)")
                continue
            if kind == "failed":
                raise EngineError(f"front-end worker could not build vLLM's renderer: {payload}",
                                  hint="rerun with --frontend-workers 0 (front end in this process)")
            self._receive(kind, slot, task_id, payload)
            waiting.discard(slot)

    def _receive(self, kind: str, slot: int, task_id: int | None, payload: Any) -> None:
        worker = self._workers.get(slot)
        if worker is not None:
            worker.last_heard = time.monotonic()
        if kind != "done" or worker is None or task_id not in worker.held:
            return  # late news from a worker already replaced: its rows were failed
        worker.held.pop(task_id)
        self._done[task_id] = payload  # unpickled by the reader thread

    def _check_workers(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            dead = not worker.process.is_alive()
            hung = bool(worker.held) and now - worker.last_heard > self.hang_timeout_s
            if dead or hung:
                self._replace(worker, "died" if dead else f"answered nothing for {self.hang_timeout_s:.0f} s")

    def _replace(self, worker: _Worker, why: str) -> None:
        """Fail the rows the worker held, stop it, and start another in its place."""
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(5.0)
        del self._workers[worker.slot]
        code = worker.process.exitcode
        for task_id, item in worker.held.items():
            message = f"{item.audio_filepath}: front-end worker {why} (exit code {code}); rerun to retry this row"
            self._done[task_id] = PreparedRow(RowError(ErrorKind.FRONTEND, message))
        self.replaced += 1
        fresh = self._spawn()
        self._wait_ready({fresh.slot})


def prepared_windows(
    windows: Iterator[list[Utterance | BadRow]], pool: FrontendPool, ahead: int = WINDOWS_AHEAD
) -> Iterator[list[tuple[Utterance | BadRow, PreparedRow | RowError]]]:
    """Each window's rows with what the workers made of them, in input order; `ahead` windows keep the pool busy."""
    in_flight: list[list[tuple[Utterance | BadRow, int | RowError]]] = []

    def hand_over() -> bool:
        window = next(windows, None)
        if window is None:
            return False
        in_flight.append([(item, item.error if isinstance(item, BadRow) else pool.submit(item)) for item in window])
        return True

    while len(in_flight) <= ahead and hand_over():
        pass
    while in_flight:
        current = in_flight.pop(0)
        done = pool.collect([t for _, t in current if isinstance(t, int)])
        hand_over()  # the workers start the next window while this one is submitted
        yield [(item, done[t] if isinstance(t, int) else t) for item, t in current]
