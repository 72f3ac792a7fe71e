"""A whole run for one shard: pick its rows, resume, start the engine, transcribe, score, write the report.

`transcribe` and `eval` both call `run_source`; the CLI only parses options and renders.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm_batch import engine as engine_mod
from speechlm_batch import frontend, outputs, pipeline, reports, sharding
from speechlm_batch.adapters import resolve_adapter
from speechlm_batch.adapters.base import ModelAdapter
from speechlm_batch.engine import Engine
from speechlm_batch.settings import RunSettings
from speechlm_batch.sources import Source
from speechlm_batch.types import BadRow, RowResult, Utterance


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


def plan_shard(source: Source, chunk: sharding.ChunkSpec | None) -> ShardPlan:
    """Select this chunk's contiguous rows; balanced by audio duration when every row has one."""
    durations = _durations(source)
    if chunk is None:
        return ShardPlan(None, range(len(durations)), len(durations))
    ranges = sharding.plan(durations, chunk.count)
    return ShardPlan(chunk, ranges[chunk.index], len(durations))


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
) -> RunOutcome:
    """Transcribe this shard of `source` into `output_dir`, resuming what an earlier run wrote."""
    shard = plan_shard(source, chunk)
    meta = _meta(source, settings, model_path, shard)
    writer = outputs.PredictionWriter.open(
        output_dir, chunk, settings.fingerprint(model_path), meta, overwrite=overwrite
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
    engine = engine or Engine.create(settings.engine, model_path)
    pool = None
    try:
        adapter = resolve_adapter(engine.info, settings.decode)
        pool = frontend.start_pool(engine, settings)  # front-end workers start while the engine warms up
        warmup_s = pipeline.warmup(engine, adapter)
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
        writer.finish()
    report = _report(writer.paths.predictions, settings, engine, adapter, stats, warmup_s, resumed)
    report_path = output_dir / f"report{'.' + chunk.label if chunk else ''}.json"
    reports.write_report_json(report_path, report)
    return RunOutcome(writer.paths.predictions, report_path, report, False, resumed, stats.interrupted)


def _durations(source: Source) -> list[float | None]:
    own = getattr(source, "durations", None)
    if callable(own):
        return list(own())
    return sharding.durations_of(source)


def _todo(source: Source, shard: ShardPlan, done_ids: set[str]) -> Iterator[Utterance | BadRow]:
    for item in source:
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
    score = reports.score_rows(outputs.read_predictions(path))
    timings = reports.Timings(
        load_s=engine.load_s,
        warmup_s=warmup_s,
        decode_s=stats.decode_s,
        engine_s=stats.engine_s,
        write_s=stats.write_s,
        wall_s=stats.wall_s,
    )
    return reports.RunReport(
        model=engine.info.name,
        settings={**settings.to_dict(), "adapter": adapter.describe(), "engine_kwargs": _jsonable(engine.kwargs),
                  "engine_environment": dict(getattr(engine, "environment", {}))},
        versions=engine_mod.versions(),
        device=engine_mod.device_name(),
        score=score,
        timings=timings,
        run_audio_s=stats.audio_s,
        run_rows=stats.rows,
        resumed_rows=resumed,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def _jsonable(kwargs) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool, type(None), dict, list)) else repr(v)) for k, v in kwargs.items()}
