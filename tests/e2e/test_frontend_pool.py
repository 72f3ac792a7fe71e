"""Front-end worker processes with the real engine and real speech (issue 13).

1. The same rows through `pipeline.run` in-process (0 workers) and with 2 spawned workers give byte-identical
   rows: texts, errors, pieces, prompt tokens (a >30 s file, a missing file and a bad row included). The
   workers send Whisper's log-mel trimmed (whisper_features.py): the engine restores what vLLM would render.
2. A worker SIGKILLed while it holds rows costs only those rows (`frontend` errors naming the file); a new
   worker takes its place and every other row is transcribed as in-process.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch

from sample_rows import absolute_rows
from speechlm_batch import frontend, pipeline, whisper_features
from speechlm_batch.adapters import resolve_adapter
from speechlm_batch.outputs import InMemoryWriter
from speechlm_batch.settings import EngineSettings, RunSettings
from speechlm_batch.sources import open_manifest

pytestmark = pytest.mark.engine

ROWS = 24
WINDOW = 8


def _manifest(tmp_path: Path, manifests: Path) -> Path:
    rows = absolute_rows(manifests, "asterisk.jsonl")[:ROWS] + absolute_rows(manifests, "asterisk-long.jsonl")[:1]
    rows.insert(5, {"audio_filepath": str(tmp_path / "missing.wav"), "id": "missing"})
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(r) for r in rows]
    lines.insert(9, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(engine, manifest: Path, workers: int, items=None) -> tuple[list[dict], pipeline.LoopStats]:
    settings = RunSettings(engine=EngineSettings(model="whisper-base"), window_rows=WINDOW, frontend_workers=workers)
    adapter = resolve_adapter(engine.info, settings.decode)
    sink = InMemoryWriter()
    source = items if items is not None else iter(open_manifest(manifest))
    stats = pipeline.run(source, engine=engine, adapter=adapter, sink=sink, settings=settings)
    return sorted(sink.rows, key=lambda r: r["_position"]), stats


def _frontend_workers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "spawn_main" in " ".join(p.cmdline())]


def _wait_zombie(process: psutil.Process, timeout_s: float = 10.0) -> None:
    """Wait until the killed child is a zombie, without reaping it (its parent's pool must see the exit)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)


def _killing_one_worker(manifest: Path, killed: list[int]) -> Iterator:
    """The manifest's items; right after the first window was handed to the workers, SIGKILL one of them."""
    for i, item in enumerate(open_manifest(manifest)):
        if i == WINDOW and not killed:  # window 1 was submitted a moment ago: its rows are still being read
            victim = _frontend_workers()[0]
            os.kill(victim.pid, signal.SIGKILL)
            _wait_zombie(victim)  # dead before the next windows are handed out: they go to the live worker
            killed.append(victim.pid)
        yield item


def test_workers_match_in_process_and_survive_a_killed_worker(engine, manifests_dir, tmp_path):
    manifest = _manifest(tmp_path, manifests_dir)
    reference, ref_stats = _run(engine, manifest, 0)
    pooled, stats = _run(engine, manifest, 2)
    assert ref_stats.frontend_workers == 0 and stats.frontend_workers == 2
    assert json.dumps(pooled, sort_keys=True) == json.dumps(reference, sort_keys=True)
    assert sum(1 for r in reference if r.get("pred_text")) >= ROWS - 2  # real speech came out as text
    assert any(r.get("_pieces", 0) > 1 for r in reference)  # the long file was split into pieces
    assert {r["error"]["kind"] for r in reference if "error" in r} == {"missing_file", "bad_row"}
    assert not _frontend_workers()  # the pool is gone once the run returns

    killed: list[int] = []
    survived, stats = _run(engine, manifest, 2, _killing_one_worker(manifest, killed))
    assert killed and stats.frontend_replaced == 1
    lost = [r for r in survived if r.get("error", {}).get("kind") == "frontend"]
    # Only rows the killed worker held: handed to it at most in the windows in flight (one + those ahead).
    assert 1 <= len(lost) <= (frontend.WINDOWS_AHEAD + 1) * WINDOW // 2 + WINDOW // 2
    assert len(lost) < sum(1 for r in reference if "error" not in r)  # the run went on
    assert all("front-end worker died" in r["error"]["message"] for r in lost)
    assert all(r["audio_filepath"] in r["error"]["message"] for r in lost)  # names the file
    by_id = {r["_id"]: r for r in reference}
    assert len(survived) == len(reference)
    for row in survived:
        if row not in lost:
            assert row == by_id[row["_id"]]


def test_workers_send_the_log_mel_trimmed_and_it_restores_to_vllms_own(engine, manifests_dir, tmp_path):
    assert whisper_features.accepts_trimmed(engine.kwargs)  # the engine above ran the trimming-aware Whisper
    assert not RunSettings().full_features  # and the pool trims by default
    renderer = frontend.Renderer(engine.kwargs)
    adapter = frontend.build_worker_adapter(frontend.pool_config(engine, RunSettings()), renderer)
    manifest = tmp_path / "one.jsonl"
    manifest.write_text(json.dumps(absolute_rows(manifests_dir, "asterisk.jsonl")[0]) + "\n")
    (item,) = list(open_manifest(manifest))

    def features(trim: bool):
        renderer.trim_features = trim
        (piece,) = frontend.prepare_row(item, adapter, renderer.render).pieces
        (audio_item,) = whisper_features._audio_items(piece.request.engine_input)
        return audio_item[whisper_features.FEATURES_KEY].data

    full, trimmed = features(False), features(True)
    assert full.shape[-1] == 3000 and trimmed.shape[-1] < 1000 and trimmed.dtype == renderer.model_config.dtype
    restored = whisper_features.restore_frames(trimmed, 3000)
    assert torch.equal(restored.view(torch.uint8), full.to(trimmed.dtype).view(torch.uint8))
