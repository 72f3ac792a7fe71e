"""A whole run for one shard: pick its rows, resume, start the engine, transcribe, score, write the report.

`transcribe` and `eval` both call `run_source`; the CLI only parses options and renders.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm_batch import engine as engine_mod
from speechlm_batch import frontend, outputs, pipeline, reports, sharding
from speechlm_batch.adapters import resolve_adapter
from speechlm_batch.adapters.base import ModelAdapter
from speechlm_batch.engine import Engine
from speechlm_batch.scoring import Scoring
from speechlm_batch.server_engine import ServerEngine
from speechlm_batch.settings import RunSettings
from speechlm_batch.sources import Source
from speechlm_batch.types import BadRow, ErrorKind, RowResult, Utterance


@dataclass(frozen=True)
class RunOutcome:
    """What one run did: the report (None when there was nothing to do) and where files went."""

    predictions_path: Path
    report_path: Path | None
    report: reports.RunReport | None
    already_done: bool
    resumed_rows: int
    interrupted: bool


@dataclass
class ShardPlan:
    """This shard's rows: positions [start, stop) of the input, and how many of them are left to do."""

    chunk: sharding.ChunkSpec | None
    positions: range
    total_rows: int
    row_ids_sha256: str = ""  # of every input row's id, in order: an edited or appended input changes it


def plan_shard(source: Source, chunk: sharding.ChunkSpec | None) -> ShardPlan:
    """Select this chunk's contiguous rows; balanced by audio duration when every row has one."""
    durations, ids_sha256 = _durations_and_ids(source)
    if chunk is None:
        return ShardPlan(None, range(len(durations)), len(durations), ids_sha256)
    ranges = sharding.plan(durations, chunk.count)
    return ShardPlan(chunk, ranges[chunk.index], len(durations), ids_sha256)


def input_key(source: Source, shard: ShardPlan) -> dict[str, Any]:
    """What the rows come from, compared on resume and merge: the source's identity, row count, id hash.

    A manifest's modification time is recorded in the meta but not compared: its content hash is (a
    manifest on standard input is copied anew by every run).
    """
    identity = dict(source.identity()) if hasattr(source, "identity") else {"name": getattr(source, "name", "")}
    identity.pop("mtime", None)
    return {"source": identity, "rows": shard.total_rows, "row_ids_sha256": shard.row_ids_sha256}


def run_source(
    source: Source,
    settings: RunSettings,
    output_dir: Path,
    *,
    model_path: str,
    chunk: sharding.ChunkSpec | None = None,
    overwrite: bool = False,
    engine: Engine | None = None,
    stop: threading.Event | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_rows: Callable[[Sequence[RowResult]], None] | None = None,
    retry_kinds: Collection[str] | None = None,
) -> RunOutcome:
    """Transcribe this shard of `source` into `output_dir`, resuming what an earlier run wrote.

    Everything that can refuse the run (lock, settings, input) is checked before the engine starts.
    `retry_kinds`: redo the failed rows of these error kinds (empty: every failed row), keep the others.
    """
    shard = plan_shard(source, chunk)
    meta = _meta(source, settings, model_path, shard)
    fingerprint = settings.fingerprint(model_path, engine_mod.resolved_dtype(settings.engine, model_path))
    if settings.server.enabled and retry_kinds is None:  # rows the servers never answered are redone
        retry_kinds = {ErrorKind.SERVER.value}
    writer = outputs.PredictionWriter.open(
        output_dir, chunk, fingerprint, meta, overwrite=overwrite, input_key=input_key(source, shard),
        retry_kinds=retry_kinds,
    )
    if writer.is_done:
        writer.close()
        return RunOutcome(writer.paths.predictions, None, None, True, len(writer.done_ids), False)
    resumed = len(writer.done_ids)
    if resumed >= len(shard.positions):  # every row was written before an interruption: no engine needed
        writer.finish()
        return RunOutcome(writer.paths.predictions, None, None, True, resumed, False)
    if on_start is not None:
        on_start(len(shard.positions), resumed)
    own_engine = engine is None
    engine = engine or start_engine(settings, model_path, output_dir / "logs")
    pool = None
    try:
        adapter = adapter_for(engine, settings.decode)
        pool = frontend.start_pool(engine, settings)  # front-end workers start while the engine warms up
        warmup_s = pipeline.warmup(engine, adapter)
        if isinstance(engine, ServerEngine):
            engine.reset_stats()  # latency and request counts of this shard's rows only
        items = _todo(source, shard, writer.done_ids)
        stats = pipeline.run(items, engine=engine, adapter=adapter, sink=writer, settings=settings, stop=stop,
                             on_rows=on_rows, frontend_pool=pool)
    except BaseException:
        writer.close()  # every window already written stays; the rerun resumes after it
        raise
    finally:
        if pool is not None:
            pool.close()
        if own_engine:
            engine.shutdown()
    if stats.interrupted:
        writer.close()
    else:
        writer.finish()  # in input order now
    report = _report(writer.paths.predictions, settings, engine, adapter, stats, warmup_s, resumed)
    report_path = output_dir / f"report{'.' + chunk.label if chunk else ''}.json"
    reports.write_report_json(report_path, report)
    return RunOutcome(writer.paths.predictions, report_path, report, False, resumed, stats.interrupted)


def start_engine(settings: RunSettings, model_path: str, log_dir: Path | None = None) -> Engine | ServerEngine:
    """The local vLLM engine, or the servers of --server / --launch-server (`model_path`: the served name)."""
    if settings.server.enabled:
        return ServerEngine.create(settings, model_path, log_dir)
    return Engine.create(settings.engine, model_path, timestamps=settings.decode.timestamps)


def adapter_for(engine: Engine | ServerEngine, decode) -> ModelAdapter:
    """Servers bring their own request builder; a local engine's model picks its family's adapter."""
    if isinstance(engine, ServerEngine):
        return engine.adapter
    return resolve_adapter(engine.info, decode)


def check_output(
    source: Source, settings: RunSettings, output_dir: Path, *, model_path: str, chunk: sharding.ChunkSpec | None
) -> None:
    """Raise now what `run_source` would refuse (busy output, other settings or input): before an engine start."""
    shard = plan_shard(source, chunk)
    fingerprint = settings.fingerprint(model_path, engine_mod.resolved_dtype(settings.engine, model_path))
    outputs.PredictionWriter.check(output_dir, chunk, fingerprint, input_key(source, shard))


def _durations_and_ids(source: Source) -> tuple[list[float | None], str]:
    """Per-row durations for sharding and the sha256 of the row ids, from one pass (or the source's own)."""
    own_durations, own_ids = getattr(source, "durations", None), getattr(source, "row_ids", None)
    if callable(own_durations) and callable(own_ids):  # HF datasets: columns, no audio read
        return list(own_durations()), ids_sha256(own_ids())
    digest = hashlib.sha256()

    def hashed(items: Iterable[Utterance | BadRow]) -> Iterator[Utterance | BadRow]:
        for item in items:
            digest.update(item.id.encode("utf-8", "surrogatepass") + b"\n")
            yield item

    return sharding.durations_of(hashed(source)), digest.hexdigest()


def ids_sha256(ids: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for row_id in ids:
        digest.update(row_id.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def _todo(source: Source, shard: ShardPlan, done_ids: set[str]) -> Iterator[Utterance | BadRow]:
    own = getattr(source, "iter_positions", None)  # HF datasets: skip earlier shards without reading audio
    items = own(shard.positions) if callable(own) else source
    for item in items:
        if item.position >= shard.positions.stop:
            return
        if item.position >= shard.positions.start and item.id not in done_ids:
            yield item


def _meta(source: Source, settings: RunSettings, model_path: str, shard: ShardPlan) -> dict[str, Any]:
    return {
        "source": getattr(source, "name", str(source)),
        "input": source.identity() if hasattr(source, "identity") else {"name": getattr(source, "name", str(source))},
        "model": model_path,
        "settings": settings.to_dict(),
        "shard_rows": len(shard.positions),
        "shard_first_position": shard.positions.start,
        "input_rows": shard.total_rows,
        "chunk": None if shard.chunk is None else {"index": shard.chunk.index, "count": shard.chunk.count},
    }


def _report(path, settings, engine: Engine, adapter: ModelAdapter, stats: pipeline.LoopStats, warmup_s, resumed):
    score = reports.score_rows(outputs.read_predictions(path), Scoring.from_settings(settings))
    timings = reports.Timings(
        load_s=engine.load_s,
        warmup_s=warmup_s,
        decode_s=stats.decode_s,
        engine_s=stats.engine_s,
        write_s=stats.write_s,
        wall_s=stats.wall_s,
    )
    serving = engine.serving_stats(stats.audio_s, stats.wall_s) if isinstance(engine, ServerEngine) else None
    return reports.RunReport(
        model=engine.info.name,
        settings={**settings.to_dict(), "adapter": adapter.describe(), "engine_kwargs": _jsonable(engine.kwargs),
                  "engine_environment": dict(getattr(engine, "environment", {}))},
        versions={**engine_mod.versions(), **getattr(engine, "versions", {})},
        device=getattr(engine, "device", None) or engine_mod.device_name(),
        serving=serving,
        score=score,
        timings=timings,
        run_audio_s=stats.audio_s,
        run_rows=stats.rows,
        resumed_rows=resumed,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _jsonable(kwargs) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None), dict, list)) else repr(v)) for k, v in kwargs.items()}
