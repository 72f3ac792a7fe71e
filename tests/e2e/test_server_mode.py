"""Issue 17 end to end: `--server` against a real `vllm serve` (CPU build, whisper-base) on 127.0.0.1.

One server for the module (started with the project's own launcher, as --launch-server does); the last test
kills it with SIGKILL mid-run and reruns with --launch-server, which starts a second one. Every CLI call is a
real subprocess. The offline side is the session's engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speechlm_batch import runner, server_launch
from speechlm_batch.errors import EXIT_OK, EXIT_USAGE
from speechlm_batch.metrics import normalize
from speechlm_batch.outputs import read_predictions
from speechlm_batch.settings import EngineSettings, RunSettings
from speechlm_batch.sources import open_manifest
from sample_rows import absolute_rows

pytestmark = pytest.mark.engine

CLI = [sys.executable, "-m", "speechlm_batch"]
MODEL = "whisper-base"
RUN_TIMEOUT_S = 300
KILL_ROWS = 10
TEST_KV_CACHE_GIB = 0.5  # the session engine's (tests/conftest.py); "conftest" is ambiguous to import here


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = RunSettings(engine=EngineSettings(model=MODEL, kv_cache_gib=TEST_KV_CACHE_GIB))
    launched = server_launch.launch(settings, MODEL, tmp_path_factory.mktemp("server-logs"))
    yield launched
    launched.stop()


def cli(*args: str, timeout: float = RUN_TIMEOUT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=env)


def write_manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def by_id(path: Path) -> dict[str, dict]:
    return {row["_id"]: row for row in read_predictions(path)}


def test_same_text_as_offline_and_latency_in_report(engine, server, manifests_dir, tmp_path):
    long_row = absolute_rows(manifests_dir, "asterisk-long.jsonl")[0]  # 73 s: split into pieces, joined
    rows = absolute_rows(manifests_dir, "librivox.jsonl") + absolute_rows(manifests_dir, "jfk.jsonl") + [long_row]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    settings = RunSettings(engine=EngineSettings(model=MODEL))
    offline = runner.run_source(open_manifest(manifest), settings, tmp_path / "offline", model_path=engine.info.name,
                                engine=engine)
    done = cli("transcribe", str(manifest), "--server", server.url, "-m", MODEL, "-o", str(tmp_path / "served"))
    assert done.returncode == EXIT_OK, done.stderr + done.stdout
    local, served = by_id(offline.predictions_path), by_id(tmp_path / "served" / "predictions.jsonl")
    assert set(served) == set(local) and len(served) == len(rows)
    for row_id, row in served.items():
        assert "error" not in row, row
        assert normalize(row["pred_text"]) == normalize(local[row_id]["pred_text"]), row_id
    assert served[long_row["id"]]["_pieces"] == local[long_row["id"]]["_pieces"] >= 2
    report = json.loads((tmp_path / "served" / "report.json").read_text())
    serving = report["serving"]
    assert serving["requests_ok"] == sum(r["_pieces"] for r in served.values())  # the warm-up is not counted
    latency = serving["latency_s"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert serving["requests_per_s"] > 0 and serving["rtfx_end_to_end"] == pytest.approx(report["rtfx"]["end_to_end"])
    assert report["device"].startswith("vllm serve at http://127.0.0.1:")


def test_eval_through_the_server(server, manifests_dir, tmp_path):
    from datasets import Audio, Dataset

    rows = absolute_rows(manifests_dir, "librivox.jsonl")[:3]
    folder = tmp_path / "small_set"
    columns = {"audio": [r["audio_filepath"] for r in rows], "text": [r["text"] for r in rows]}
    Dataset.from_dict(columns).cast_column("audio", Audio()).save_to_disk(str(folder))
    key = "sk-issue17-never-written"  # vLLM without --api-key takes any bearer token
    env = {**os.environ, "MY_ASR_KEY": key}
    done = cli("eval", "--hf-dataset", str(folder), "--server", server.url, "-m", MODEL, "-o", str(tmp_path / "ev"),
               "--api-key-env", "MY_ASR_KEY", "-vvv", env=env)
    assert done.returncode == EXIT_OK, done.stderr + done.stdout
    assert key not in done.stdout + done.stderr
    assert not [p for p in (tmp_path / "ev").rglob("*") if p.is_file() and key.encode() in p.read_bytes()]
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    run = results["runs"][0]
    assert results["datasets"][0]["rows"] == 3 and results["datasets"][0]["wer"] is not None
    assert run["serving"]["requests_ok"] == 3 and run["serving"]["latency_s"]["p99"] > 0


def test_clear_errors_before_any_row(server, manifests_dir, tmp_path):
    manifest = write_manifest(tmp_path / "m.jsonl", absolute_rows(manifests_dir, "jfk.jsonl"))
    cases = {
        "wrong model": (["--server", server.url, "-m", "whisper-huge"], "serves whisper-base, not 'whisper-huge'"),
        "unreachable": (["--server", f"http://127.0.0.1:{server_launch.free_port()}"], "is unreachable"),
        "bad URL": (["--server", "127.0.0.1:8000"], "is not an http(s) URL"),
    }
    for name, (args, message) in cases.items():
        out = tmp_path / name.replace(" ", "-")
        done = cli("transcribe", str(manifest), *args, "-o", str(out), timeout=120)
        text = " ".join((done.stderr + done.stdout).split())  # the terminal wraps long lines
        assert done.returncode == EXIT_USAGE, (name, text)
        assert message in text, (name, text)
        predictions = out / "predictions.jsonl"
        assert not predictions.exists() or predictions.stat().st_size == 0, name


def test_server_killed_mid_run_then_rerun_completes(server, manifests_dir, tmp_path):
    """Runs last: it kills the module's server. The rerun starts its own (--launch-server)."""
    short = [r for r in absolute_rows(manifests_dir, "asterisk.jsonl") if r["duration"] <= 3.0][:KILL_ROWS]
    manifest = write_manifest(tmp_path / "m.jsonl", short)
    out = tmp_path / "out"
    predictions = out / "predictions.jsonl"
    args = ["transcribe", str(manifest), "-m", MODEL, "-o", str(out), "--window", "1", "--concurrency", "1",
            "--retries", "1", "--request-timeout", "20"]
    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen([*CLI, *args, "--server", server.url], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (not predictions.exists() or predictions.read_bytes().count(b"\n") < 3) and first.poll() is None:
        assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.1)
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait()
    killed_at = time.monotonic()
    assert first.wait(timeout=90) == EXIT_OK, (tmp_path / "first.log").read_text()
    assert time.monotonic() - killed_at < 60  # the dead server costs seconds, not timeouts
    rows = by_id(predictions)
    failed = {i for i, r in rows.items() if r.get("error")}
    assert len(rows) == KILL_ROWS and 3 <= KILL_ROWS - len(failed) < KILL_ROWS
    assert {rows[i]["error"]["kind"] for i in failed} == {"server"}
    ok_before = {i: r["pred_text"] for i, r in rows.items() if i not in failed}

    done = cli(*args, "--launch-server", "--kv-cache-gib", str(TEST_KV_CACHE_GIB))
    assert done.returncode == EXIT_OK, done.stderr + done.stdout
    ids = [row["_id"] for row in read_predictions(predictions)]
    assert sorted(ids) == sorted(r["id"] for r in short)  # every row once
    rows = by_id(predictions)
    assert all("error" not in r for r in rows.values())
    assert {i: rows[i]["pred_text"] for i in ok_before} == ok_before  # rows already done were kept, not redone
    report = json.loads((out / "report.json").read_text())
    assert report["rows"]["this_run"] == len(failed) and report["rows"]["resumed"] == KILL_ROWS - len(failed)
