"""Issues 4 and 14 on a real Slurm: array jobs run the real CLI on the CPU engine, then `merge`.

CI starts a one-node cluster first (scripts/slurm-ci.sh). Each task starts its own vLLM engine with
whisper-tiny.en; the node has 2 CPUs, so two tasks run at once and the third after them.
    * an array of 3 chunks, one holding an unreadable file, merges to the single-process output;
    * a task signalled as Slurm signals at pre-emption (SIGTERM to every process of the job, vLLM's engine
      core included) exits 130 with its rows kept, and resubmitting the same script completes it.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from speechlm_batch.errors import EXIT_INTERRUPTED
from speechlm_batch.metrics import normalize
from speechlm_batch.outputs import read_predictions
from tests.sample_rows import absolute_rows

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(
        shutil.which("sbatch") is None,
        reason="sbatch not on PATH: no Slurm here (CI installs one with scripts/slurm-ci.sh)",
    ),
]

CHUNKS = 3
ENGINE_ARGS = ["--model", "whisper-tiny.en", "--kv-cache-gib", "0.25"]
CLI = [sys.executable, "-m", "speechlm_batch"]
JOB_TIMEOUT_S = 420


def write_manifest(path: Path, manifests: Path) -> int:
    """librivox + jfk with absolute audio paths (tasks start in another folder), then one unreadable file;
    returns the row count."""
    broken = path.with_name("broken.wav")
    broken.write_bytes(b"RIFF\x00\x00not audio at all")
    lines = []
    for name in ("librivox.jsonl", "jfk.jsonl"):
        for line in (manifests / name).read_text().splitlines():
            row = json.loads(line)
            row["audio_filepath"] = str((manifests / row["audio_filepath"]).resolve())
            lines.append(json.dumps(row))
    lines.append(json.dumps({"audio_filepath": str(broken), "duration": 1.0, "text": "never heard"}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def cluster_ready() -> None:
    info = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    states = info.stdout.split()
    if info.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        pytest.fail(f"Slurm is installed but no node is up (sinfo: {info.stdout or info.stderr!r}); "
                    "start it with scripts/slurm-ci.sh")


def job_fields(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """JobId -> scontrol's fields (array tasks as "<id>_<task>"); no accounting database in CI."""
    jobs = {}
    for job_id in job_ids:
        shown = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True)
        for line in shown.stdout.splitlines():
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            key = fields.get("JobId", "?")
            if fields.get("ArrayTaskId"):
                key = f"{fields.get('ArrayJobId')}_{fields['ArrayTaskId']}"
            jobs[key] = fields
    return jobs


def job_states(job_ids: list[str]) -> dict[str, str]:
    return {key: fields.get("JobState", "?") for key, fields in job_fields(job_ids).items()}


def wait_for(job_ids: list[str], timeout_s: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids)], capture_output=True, text=True)
        if queued.returncode == 0 and not queued.stdout.strip():
            return job_states(job_ids)
        time.sleep(3)
    subprocess.run(["scancel", *job_ids])
    pytest.fail(f"jobs {job_ids} still queued or running after {timeout_s:.0f} s: {job_states(job_ids)}")


def test_array_of_three_chunks_merges_to_the_single_process_output(manifests_dir, tmp_path):
    cluster_ready()
    manifest = tmp_path / "set.jsonl"
    n_rows = write_manifest(manifest, manifests_dir)
    out = tmp_path / "array"
    script = tmp_path / "run.sbatch"
    command = " ".join(shlex.quote(part) for part in CLI)
    subprocess.run(
        [*CLI, "slurm", str(manifest), "--chunks", str(CHUNKS), "--output-dir", str(out), "--gpus-per-task", "0",
         "--cpus-per-task", "1", "--mem", "6G", "--time", "00:15:00", "--command", command, "--write", str(script),
         "--", *ENGINE_ARGS],
        check=True,
    )
    submitted = subprocess.run(["bash", str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    array_id, merge_id = _job_ids(submitted.stdout)

    # The single-process reference runs meanwhile (the node's two CPUs are shared with the tasks).
    single = tmp_path / "single"
    reference = subprocess.run(
        [*CLI, "transcribe", str(manifest), "--output-dir", str(single), *ENGINE_ARGS], capture_output=True, text=True
    )
    assert reference.returncode == 0, reference.stderr[-3000:]

    states = wait_for([array_id, merge_id], JOB_TIMEOUT_S)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(out.glob("slurm-*.out")))
    assert [states.get(f"{array_id}_{k}") for k in range(CHUNKS)] == ["COMPLETED"] * CHUNKS, (states, logs)
    assert states.get(merge_id) == "COMPLETED", (states, logs)

    # The chunk holding the unreadable file completed (exit 0, its row an error), so the merge job ran.
    broken = [r for r in read_predictions(out / "predictions.jsonl") if r.get("error")]
    assert [r["audio_filepath"] for r in broken] == [str(tmp_path / "broken.wav")], broken
    assert json.loads((out / "report.json").read_text())["rows"]["failed"] == 1

    # The merge job already merged; merging again (as a user would) is a no-op that gives the same bytes.
    merged_bytes = (out / "predictions.jsonl").read_bytes()
    again = subprocess.run([*CLI, "merge", str(out)], capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "predictions.jsonl").read_bytes() == merged_bytes

    merged = list(read_predictions(out / "predictions.jsonl"))
    expected = list(read_predictions(single / "predictions.jsonl"))
    assert len(merged) == n_rows
    assert [r["_id"] for r in merged] == [r["_id"] for r in sorted(expected, key=lambda r: r["_position"])]
    assert [r["_position"] for r in merged] == list(range(n_rows))
    by_id = {r["_id"]: r["pred_text"] for r in expected}
    assert {r["_id"]: r["pred_text"] for r in merged} == by_id
    # Every chunk did some of the work, and the combined report covers the whole set.
    for k in range(CHUNKS):
        assert sum(1 for _ in read_predictions(out / f"predictions.chunk-{k:04d}-of-{CHUNKS:04d}.jsonl")) >= 1
    report = json.loads((out / "report.json").read_text())
    assert f'"reference_words": {_ref_words(single)}' in json.dumps(report)
    assert report["timings"]["wall_s"] > 0


SIGNAL_ROWS = 32
SIGNAL_WINDOW = 8


def test_a_task_signalled_as_at_preemption_keeps_its_rows_and_completes_on_resubmit(manifests_dir, tmp_path):
    cluster_ready()
    rows = [r for r in absolute_rows(manifests_dir, "asterisk.jsonl") if r["duration"] <= 4.0][:SIGNAL_ROWS]
    manifest = tmp_path / "asterisk32.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # One window in the engine at a time, so a stop after the first window leaves rows unsubmitted.
    engine_args = [*ENGINE_ARGS, "--window", str(SIGNAL_WINDOW), "--max-num-seqs", str(SIGNAL_WINDOW)]
    out = tmp_path / "array"
    script = tmp_path / "one.sbatch"
    subprocess.run(
        [*CLI, "slurm", str(manifest), "--chunks", "1", "--output-dir", str(out), "--gpus-per-task", "0",
         "--cpus-per-task", "1", "--mem", "6G", "--time", "00:15:00",
         "--command", " ".join(shlex.quote(part) for part in CLI), "--write", str(script), "--", *engine_args],
        check=True,
    )
    out.mkdir()
    # The reference runs meanwhile, outside Slurm, into its own folder.
    ref_dir = tmp_path / "reference"
    reference = subprocess.Popen([*CLI, "transcribe", str(manifest), "--output-dir", str(ref_dir), *engine_args],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    job_id = _sbatch(script)
    chunk_file = out / "predictions.chunk-0000-of-0001.jsonl"
    at_signal = _wait_for_lines(chunk_file, SIGNAL_WINDOW, job_id)
    # --full: every process of the job as Slurm tracks them (the engine core too, whatever its process group),
    # as the time limit and pre-emption do; plain `scancel --signal` would reach job steps only.
    subprocess.run(["scancel", "--signal=TERM", "--full", job_id], check=True)
    wait_for([job_id], JOB_TIMEOUT_S)
    task = job_fields([job_id])[f"{job_id}_0"]
    log = "\n".join(p.read_text()[-3000:] for p in sorted(out.glob("slurm-*.out")))
    assert task.get("ExitCode") == f"{EXIT_INTERRUPTED}:0", (task, log)
    assert "rerun the same command to resume" in log
    kept = list(read_predictions(chunk_file))
    assert at_signal <= len(kept) < SIGNAL_ROWS, "the stop came after every row was submitted"
    assert not chunk_file.with_name("predictions.chunk-0000-of-0001.done.json").exists()

    # Resubmitting the same script resumes the chunk; then merge, as the merge job would.
    job_id = _sbatch(script)
    wait_for([job_id], JOB_TIMEOUT_S)
    task = job_fields([job_id])[f"{job_id}_0"]
    assert (task.get("JobState"), task.get("ExitCode")) == ("COMPLETED", "0:0"), task
    merged_run = subprocess.run([*CLI, "merge", str(out)], capture_output=True, text=True)
    assert merged_run.returncode == 0, merged_run.stdout + merged_run.stderr
    assert reference.wait(timeout=JOB_TIMEOUT_S) == 0, reference.stderr.read()[-3000:]

    merged = list(read_predictions(out / "predictions.jsonl"))
    assert [r["id"] for r in merged] == [r["id"] for r in rows], "a row lost, repeated or out of order"
    by_id = {r["_id"]: r for r in merged}
    assert all(by_id[r["_id"]] == r for r in kept), "rows written before the signal were redone"
    expected = {r["_id"]: r["pred_text"] for r in read_predictions(ref_dir / "predictions.jsonl")}
    # Compared normalized: fp32 CPU kernels round differently for another batch composition.
    assert {k: normalize(r["pred_text"]) for k, r in by_id.items()} == {k: normalize(v) for k, v in expected.items()}


def _sbatch(script: Path) -> str:
    """Submit the script as the array job itself (the way `sbatch --array=... THIS_FILE` reruns chunks)."""
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    return submitted.stdout.strip().split(";")[0]


def _wait_for_lines(path: Path, at_least: int, job_id: str) -> int:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        lines = path.read_bytes().count(b"\n") if path.exists() else 0
        if lines >= at_least:
            return lines
        queued = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
        if queued.returncode == 0 and not queued.stdout.strip():
            pytest.fail(f"job {job_id} ended before writing {at_least} rows: {job_fields([job_id])}")
        time.sleep(0.2)
    subprocess.run(["scancel", job_id])
    pytest.fail(f"job {job_id} wrote no {at_least} rows in {JOB_TIMEOUT_S} s")


def _job_ids(stdout: str) -> tuple[str, str]:
    words = stdout.split()
    array_id = words[words.index("array") + 2]
    merge_id = words[words.index("merge") + 2]
    return array_id, merge_id


def _ref_words(single: Path) -> int:
    report = json.loads((single / "report.json").read_text())
    text = json.dumps(report)
    start = text.index('"reference_words": ') + len('"reference_words": ')
    return int(text[start:].split(",", 1)[0].split("}", 1)[0])
