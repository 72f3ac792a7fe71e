"""Server mode behind the offline engine's interface: the pipeline does not know which one it drives.

`ServerEngine.create` checks every `--server` (or starts one with `--launch-server`) before the first row,
picks the family, and runs the async client (`server_client.ServerPool`) on an event loop in one background
thread. `run` takes the pipeline's (key, request) stream like `Engine.run` and yields `Completion`s as
answers arrive, keeping up to `max_in_flight` requests queued in the client; the pool bounds what each
server holds. Latencies are collected for the report's `serving` block (`serving_stats`).

Resume: rows that failed with kind `server` (no answer after every retry) are redone by a rerun in server
mode (the runner passes `retry_kinds={"server"}` to the writer, as `--retry-failed server` would), so each
row is written once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from speechlm_batch import outputs, server_launch
from speechlm_batch.adapters.base import EngineRequest, ModelInfo
from speechlm_batch.engine import Completion
from speechlm_batch.models.store import ALIASES
from speechlm_batch.preflight import LocalModel
from speechlm_batch.server_client import Counters, ServerInfo, ServerPool, api_key, normalize_url
from speechlm_batch.server_requests import ServerAdapter
from speechlm_batch.settings import RunSettings
from speechlm_batch.sharding import ChunkSpec
from speechlm_batch.types import ErrorKind

DEFAULT_MAX_MODEL_LEN = 448  # when a server does not say (vLLM always does): Whisper's, the smallest


@dataclass
class ServerEngine:
    """Servers that take the pipeline's requests; `shutdown` stops a launched server."""

    info: ModelInfo
    adapter: ServerAdapter
    servers: tuple[ServerInfo, ...]
    settings: RunSettings
    load_s: float = 0.0  # --launch-server: start-up until healthy; else the probe
    busy_s: float = 0.0  # wall time with requests in flight: the "engine" share of the loop
    launched: server_launch.LaunchedServer | None = None
    _pool: ServerPool | None = field(default=None, repr=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @classmethod
    def create(cls, settings: RunSettings, model_name: str, log_dir: Path | None = None) -> ServerEngine:
        """Probe (or launch) the servers and choose the family; every failure here precedes the first row."""
        start = time.perf_counter()
        # httpx logs one INFO line per request: tens of thousands per run, each with the full URL (and any
        # user:password in it). Failures reach the rows and the report instead.
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        launched = None
        urls = [normalize_url(u) for u in settings.server.urls]
        if settings.server.launch:
            launched = server_launch.launch(settings, model_name, log_dir)
            urls.append(launched.url)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="server-client", daemon=True)
        thread.start()
        pool = ServerPool(urls, settings.server, api_key(settings.server))
        try:
            asyncio.run_coroutine_threadsafe(pool.__aenter__(), loop).result()
            servers = tuple(asyncio.run_coroutine_threadsafe(pool.probe(model_name), loop).result())
            family = choose_family(settings, model_name, servers)
            lengths = [s.max_model_len for s in servers if s.max_model_len]
            max_model_len = min(lengths) if lengths else DEFAULT_MAX_MODEL_LEN
            adapter = ServerAdapter.create(family, model_name, settings.decode, max_model_len)
        except BaseException:
            _stop_loop(loop, thread, pool)
            if launched is not None:
                launched.stop()
            raise
        info = ModelInfo(model_name, (), None, None, max_model_len, accelerator="server")
        engine = cls(info, adapter, servers, settings, time.perf_counter() - start, launched=launched)
        engine._pool, engine._loop, engine._thread = pool, loop, thread
        return engine

    @property
    def max_num_seqs(self) -> int:
        return self.settings.server.concurrency * len(self.servers)

    @property
    def kwargs(self) -> Mapping[str, Any]:
        """What the report records about the backend (URLs without credentials; never the key)."""
        s = self.settings.server
        return {
            "backend": "server",
            "servers": [info.describe() for info in self.servers],
            "concurrency": s.concurrency,
            "retries": s.retries,
            "request_timeout_s": s.request_timeout_s,
            "api_key_env": s.api_key_env,
            "launched": None if self.launched is None else self.launched.describe(),
        }

    @property
    def device(self) -> str:
        urls = ", ".join(info.describe()["url"] for info in self.servers)
        return f"vllm serve at {urls}"

    @property
    def versions(self) -> dict[str, str]:
        found = sorted({info.version for info in self.servers if info.version})
        return {"server_vllm": ", ".join(found)} if found else {}

    @property
    def environment(self) -> Mapping[str, str]:
        return {} if self.launched is None else dict(self.launched.environment)

    def run(self, requests: Iterable[tuple[Any, EngineRequest]], max_in_flight: int) -> Iterator[Completion]:
        """Send requests as room frees up; yield each completion as soon as its answer (or failure) is in."""
        pending: dict[Future, Any] = {}
        source = iter(requests)
        exhausted = False
        started = time.perf_counter()
        try:
            while True:
                while not exhausted and len(pending) < max_in_flight:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                        break
                    key, request = item
                    future = asyncio.run_coroutine_threadsafe(self._pool.send(request.prompt["http"]), self._loop)
                    pending[future] = key
                if not pending:
                    return
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    yield _completion(pending.pop(future), future.result())
        finally:
            for future in pending:
                future.cancel()
            self.busy_s += time.perf_counter() - started

    def reset_stats(self) -> None:
        self._pool.counters = Counters(per_server={k: 0 for k in self._pool.counters.per_server})

    def serving_stats(self, audio_s: float, wall_s: float) -> dict[str, Any]:
        """The report's `serving` block: per-request latency, request rate, RTFx end to end."""
        counters = self._pool.counters
        latencies = np.asarray(counters.latencies_s, dtype=np.float64)
        ok = int(latencies.size)

        def pct(q: float) -> float | None:
            return float(np.percentile(latencies, q)) if ok else None

        return {
            "servers": [info.describe() for info in self.servers],
            "family": self.adapter.family,
            "endpoint": self.adapter.path,
            "concurrency_per_server": self.settings.server.concurrency,
            "requests_ok": ok,
            "requests_failed": counters.failed,
            "retries": counters.retries,
            "requests_per_server": dict(counters.per_server),
            "latency_s": {
                "p50": pct(50), "p90": pct(90), "p99": pct(99),
                "mean": float(latencies.mean()) if ok else None, "max": float(latencies.max()) if ok else None,
            },
            "requests_per_s": ok / wall_s if wall_s > 0 else None,
            "rtfx_end_to_end": audio_s / wall_s if wall_s > 0 else None,
            "note": "latency: one audio piece, request sent to answer read (queueing in the client and the "
            "warm-up request excluded). Requests per second and RTFx over the transcription loop's wall time.",
        }

    def shutdown(self) -> None:
        if self._loop is not None:
            _stop_loop(self._loop, self._thread, self._pool)
            self._loop = None
        if self.launched is not None:
            self.launched.stop()


def choose_family(settings: RunSettings, model_name: str, servers: tuple[ServerInfo, ...]) -> str:
    """--family; else the local checkpoint's architecture (launched or an alias); else what the server offers."""
    if settings.decode.family:
        return settings.decode.family
    if model_name in ALIASES:
        return "whisper"  # every offline alias is a Whisper checkpoint
    local = LocalModel.read(server_launch.local_model_path(model_name) or model_name)
    if local is not None:
        if local.family:
            return local.family
        if local.config.get("model_type") == "nemo_speechlm":
            return "nemo-speechlm"
    if any(s.transcription for s in servers):
        return "transcription"  # the same endpoint and request as whisper; only the name in the report differs
    return "chat-audio"


def _completion(key: Any, outcome) -> Completion:
    if outcome.reply is None:
        return Completion(key, None, 0, outcome.error, error_kind=outcome.error_kind)
    return Completion(key, outcome.reply.text, 0, prompt_tokens=outcome.reply.prompt_tokens)


def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread | None, pool: ServerPool) -> None:
    try:
        asyncio.run_coroutine_threadsafe(pool.__aexit__(None, None, None), loop).result(timeout=10)
    except Exception:  # closing connections to a dead server must not mask the run's own outcome
        pass
    loop.call_soon_threadsafe(loop.stop)
    if thread is not None:
        thread.join(timeout=10)
    loop.close()

