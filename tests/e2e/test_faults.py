"""Issue 6 fault injection with the real engine and real speech: bad inputs, SIGKILLs, and what is written where.

1. One manifest mixes every bad input of the issue with good rows of real speech in many rates, channel
   counts and formats (tests/fixtures/bad_inputs.py). It runs through `runner.run_source` on the session's
   whisper-base engine: every good row must match its reference, every bad row must carry its error kind and
   name its file (and line), the report must count the failures per kind, the 1-hour file must come out
   whole in bounded memory, and the inputs must be left untouched.
2. A real `speechlm-batch transcribe` process is SIGKILLed (its whole process group) at random points after
   it has written a window, KILLS times, then allowed to finish. The final predictions must equal an
   uninterrupted run's: no row lost, none duplicated, the same pred_text per id. The uninterrupted run uses
   the session engine (same model and settings), so the loop costs KILLS + 1 engine starts and no more.
3. That CLI process writes nothing outside --output-dir, leaves the manifest and audio unchanged, and starts
   vLLM with trust_remote_code off.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from fixtures.bad_inputs import JFK_ID, BadInputSet, build
from speechlm_batch import runner
from speechlm_batch.metrics import corpus_wer, normalize
from speechlm_batch.outputs import read_predictions
from speechlm_batch.settings import EngineSettings, RunSettings
from speechlm_batch.sources import open_manifest

pytestmark = pytest.mark.engine

MODEL = "whisper-base"  # the session engine's model: the kill loop's reference comes from it
WINDOW = 8
KILLS = 3
KILL_ROWS = 60
MAX_KILL_DELAY_S = 2.0  # random delay after a new window appears before the SIGKILL
WINDOW_TIMEOUT_S = 420.0  # engine start on two busy cores plus the first window
LONG_RUN_GROWTH_MIB = 1536  # peak process-tree RSS growth allowed during the fault run (1 h file: ~230 MiB of audio)
CLI = str(Path(sys.executable).with_name("speechlm-batch"))


def _settings() -> RunSettings:
    return RunSettings(engine=EngineSettings(model=MODEL), window_rows=WINDOW)


def _tree_digest(root: Path, *skip: Path) -> dict[str, tuple[int, float, str]]:
    """(size, mtime, sha256) of every file under `root`, except under the folders in `skip`."""
    found = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(folder in path.parents for folder in skip):
            continue
        stat = path.stat()
        found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime, hashlib.sha256(path.read_bytes()).hexdigest())
    return found


class _PeakRss:
    """Samples the RSS of this process and its children (the engine) every 50 ms while running."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def now() -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.05)

    def __enter__(self) -> _PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass(frozen=True)
class FaultRun:
    faults: BadInputSet
    rows: dict[str, dict[str, Any]]
    lines: int
    report: dict[str, Any]
    inputs_before: dict[str, tuple[int, float, str]]
    inputs_after: dict[str, tuple[int, float, str]]
    rss_growth_mib: float
    wall_s: float


@pytest.fixture(scope="module")
def fault_run(engine, manifests_dir, tmp_path_factory) -> FaultRun:
    root = tmp_path_factory.mktemp("faults")
    faults = build(root / "inputs", manifests_dir)
    out = root / "out"
    inputs_before = _tree_digest(root / "inputs")
    start, baseline = time.perf_counter(), _PeakRss.now()
    with _PeakRss() as rss:
        outcome = runner.run_source(open_manifest(faults.manifest), _settings(), out, model_path=engine.info.name,
                                    engine=engine)
    assert not outcome.interrupted
    rows = list(read_predictions(outcome.predictions_path))
    return FaultRun(
        faults, {r["_id"]: r for r in rows}, len(rows), json.loads(outcome.report_path.read_text()),
        inputs_before, _tree_digest(root / "inputs"), (rss.peak - baseline) / (1 << 20), time.perf_counter() - start,
    )


def test_every_row_comes_out_exactly_once(fault_run):
    assert fault_run.lines == len(fault_run.rows), "duplicate ids in the predictions"
    assert set(fault_run.rows) == set(fault_run.faults.expected)


def test_good_rows_match_their_reference(fault_run):
    problems = []
    for row_id, exp in fault_run.faults.expected.items():
        row = fault_run.rows[row_id]
        if exp.kind is not None:
            continue
        if "error" in row or not isinstance(row["pred_text"], str):
            problems.append(f"{row_id} ({exp.what}): failed with {row.get('error')}")
        elif exp.reference is not None and exp.reference_count == 1:
            wer = corpus_wer([exp.reference], [row["pred_text"]]).wer
            if wer > exp.max_wer:
                problems.append(f"{row_id} ({exp.what}): WER {wer:.2f} > {exp.max_wer}: {row['pred_text']!r}")
        elif exp.contains is not None and exp.contains not in normalize(row["pred_text"]):
            problems.append(f"{row_id} ({exp.what}): {exp.contains!r} not in {row['pred_text']!r}")
    assert not problems, "\n".join(problems)


def test_bad_rows_carry_their_kind_and_name_the_file_or_line(fault_run):
    problems = []
    for row_id, exp in fault_run.faults.expected.items():
        row = fault_run.rows[row_id]
        if exp.kind is None:
            continue
        error = row.get("error") or {}
        if error.get("kind") != exp.kind.value or row.get("pred_text") is not None:
            problems.append(f"{row_id} ({exp.what}): expected {exp.kind.value}, got {error or row.get('pred_text')!r}")
        elif exp.names not in error.get("message", ""):
            problems.append(f"{row_id} ({exp.what}): message {error.get('message')!r} does not name {exp.names}")
    assert not problems, "\n".join(problems)


def test_report_counts_failures_per_kind(fault_run):
    rows = fault_run.report["rows"]
    assert rows["failed_by_kind"] == fault_run.faults.kinds()
    good = sum(1 for e in fault_run.faults.expected.values() if e.kind is None)
    assert (rows["ok"], rows["failed"], rows["total"]) == (good, len(fault_run.faults.expected) - good, fault_run.lines)


def test_odd_unicode_text_is_written_back_unchanged(fault_run):
    odd = {k: e for k, e in fault_run.faults.expected.items() if e.text is not None}
    assert len(odd) == 3
    for row_id, exp in odd.items():
        assert fault_run.rows[row_id]["text"] == exp.text, row_id


def test_all_silence_is_a_row_error_not_a_hallucination(fault_run):
    row = fault_run.rows["all-silence"]
    assert row["pred_text"] is None
    assert row["error"]["kind"] == "silent_audio" and "silence-10s.wav" in row["error"]["message"]


def test_one_hour_file_is_split_and_kept_whole_in_bounded_memory(fault_run):
    exp = fault_run.faults.expected["long-1h"]
    row = fault_run.rows["long-1h"]
    assert "error" not in row, row.get("error")
    assert row["_pieces"] >= exp.min_pieces >= 120
    assert row["_audio_s"] == pytest.approx(3600.0, abs=0.1)
    # JFK's sentence at the very start and the very end: nothing dropped at either edge of the file.
    assert normalize(row["pred_text"]).count(normalize(exp.reference)) == exp.reference_count, row["pred_text"][:500]
    assert fault_run.rss_growth_mib < LONG_RUN_GROWTH_MIB, fault_run.rss_growth_mib


def test_inputs_are_only_read(fault_run):
    assert fault_run.inputs_after == fault_run.inputs_before


# ------------------------------------------------------------------------------------------ kill loop


def _kill_manifest(manifests_dir: Path, path: Path) -> Path:
    """KILL_ROWS Asterisk prompts with speech in their reference, audio paths relative to the repo manifests."""
    rows = []
    for line in (manifests_dir / "asterisk.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if normalize(row["text"]) and not row["text"].lstrip().startswith("["):
            row["audio_filepath"] = str(manifests_dir / row["audio_filepath"])
            rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:KILL_ROWS]), encoding="utf-8")
    return path


def _ids_on_disk(path: Path) -> list[str]:
    """Ids of the complete lines written so far (a torn last line is not counted)."""
    if not path.exists():
        return []
    ids = []
    for raw in path.read_bytes().splitlines(keepends=True):
        if raw.endswith(b"\n"):
            ids.append(json.loads(raw)["_id"])
    return ids


def _group_gone(pgid: int, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def _start(manifest: Path, out: Path, cwd: Path, log: Path) -> subprocess.Popen:
    cmd = [CLI, "transcribe", str(manifest), "--model", MODEL, "--output-dir", str(out), "--window", str(WINDOW),
           "--kv-cache-gib", "0.25"]
    with log.open("ab") as f:
        return subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def _kill_after_next_window(proc: subprocess.Popen, predictions: Path, rng: random.Random) -> dict[str, Any]:
    """Wait for a new window on disk, wait a random delay, SIGKILL the process group; return what happened."""
    before = len(_ids_on_disk(predictions))
    deadline = time.monotonic() + WINDOW_TIMEOUT_S
    while len(_ids_on_disk(predictions)) <= before:
        assert proc.poll() is None, f"the CLI exited ({proc.returncode}) before writing a window"
        assert time.monotonic() < deadline, "no window written in time"
        time.sleep(0.1)
    delay_s = rng.uniform(0.0, MAX_KILL_DELAY_S)
    time.sleep(delay_s)
    finished = proc.poll() is not None
    if not finished:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _group_gone(proc.pid), "engine processes survived the SIGKILL of their group"
    return {"delay_s": delay_s, "rows_before": before, "rows_at_kill": len(_ids_on_disk(predictions)), "finished": finished}


@pytest.fixture(scope="module")
def kill_loop(engine, manifests_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    manifest = _kill_manifest(manifests_dir, root / "asterisk60.jsonl")
    reference = runner.run_source(open_manifest(manifest), _settings(), root / "reference", model_path=engine.info.name,
                                  engine=engine)
    expected = {r["_id"]: r["pred_text"] for r in read_predictions(reference.predictions_path)}
    out, cwd, logs = root / "out", root / "cwd", root / "logs"  # logs: the test's own files, not the CLI's
    cwd.mkdir()
    logs.mkdir()
    log = logs / "cli.log"
    watched = {"tmp": _tree_digest(root, out, logs), "manifests": _tree_digest(manifests_dir)}
    rng = random.Random(int(os.environ.get("SLB_KILL_SEED", "6")))
    kills = []
    for k in range(KILLS):
        kills.append(_kill_after_next_window(_start(manifest, out, cwd, log), out / "predictions.jsonl", rng))
        if kills[-1]["finished"]:
            break
        if k == 1:  # as if the kill had landed inside a write: the rerun must cut this torn line off
            with (out / "predictions.jsonl").open("ab") as f:
                f.write(b'{"audio_filepath": "torn", "pred_text": "half a li')
    final = _start(manifest, out, cwd, log)
    code = final.wait(timeout=900)
    after = {"tmp": _tree_digest(root, out, logs), "manifests": _tree_digest(manifests_dir)}
    (logs / "kills.json").write_text(json.dumps({"kills": kills, "final_exit": code}, indent=2))
    print(f"kill loop: {json.dumps(kills)}; final exit {code}")
    return {"expected": expected, "out": out, "cwd": cwd, "kills": kills, "code": code, "log": log.read_text(errors="replace"),
            "watched": watched, "after": after}


def test_sigkill_loop_loses_and_duplicates_nothing(kill_loop):
    assert kill_loop["code"] == 0, kill_loop["log"][-3000:]
    killed = [k for k in kill_loop["kills"] if not k["finished"]]
    assert len(killed) == KILLS, kill_loop["kills"]
    for earlier, later in zip(kill_loop["kills"], kill_loop["kills"][1:], strict=False):
        assert later["rows_before"] >= earlier["rows_at_kill"], "rows written before a kill were lost"
    rows = list(read_predictions(kill_loop["out"] / "predictions.jsonl"))
    ids = [r["_id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicated rows"
    assert {r["_id"]: r["pred_text"] for r in rows} == kill_loop["expected"]
    assert b"torn" not in (kill_loop["out"] / "predictions.jsonl").read_bytes()
    report = json.loads((kill_loop["out"] / "report.json").read_text())
    assert report["rows"]["resumed"] == killed[-1]["rows_at_kill"]
    assert report["rows"]["total"] == KILL_ROWS


def test_cli_writes_only_inside_output_dir(kill_loop):
    assert kill_loop["after"]["tmp"] == kill_loop["watched"]["tmp"]
    assert kill_loop["after"]["manifests"] == kill_loop["watched"]["manifests"]
    assert list(kill_loop["cwd"].iterdir()) == []
    leftovers = [p.name for p in kill_loop["out"].iterdir() if p.name.endswith(".tmp")]
    assert leftovers == [], "a temporary file of an atomic write was left behind"


def test_cli_starts_vllm_without_remote_code(kill_loop):
    settings = json.loads((kill_loop["out"] / "report.json").read_text())["settings"]
    assert settings["engine"]["trust_remote_code"] is False
    assert settings["engine_kwargs"]["trust_remote_code"] is False
