"""Peak memory of `speechlm-batch transcribe` on a small and a large manifest: is it bounded by the window?

Each run is a real CLI subprocess (engine included) started in its own session; a sampler reads the RSS of
its whole process tree (the CLI, vLLM's engine core and worker) with psutil every 50 ms. The manifests
replicate the short Asterisk prompts by reference: the same audio files many times under distinct ids, so a
10,000-row manifest needs no new audio. The summed RSS counts pages shared between the processes more than
once: it is an upper bound of what the run occupies, measured the same way for both sizes.

    .venv/bin/python bench/memory.py --rows 500 10000 --model whisper-tiny.en --json bench/results/memory.json

Prints one line per run and writes the figures (peak tree RSS, peak CLI-process RSS, wall time, rows) as
JSON. The bound to read: how much the peak grows from the small to the large manifest, per row.

On a slow machine `--time-limit-s` stops a run after that long with SIGTERM (as Slurm pre-emption would:
the CLI finishes its window and exits 130) and records the peak over the rows it did; the JSON then says
how many rows were written. A progress line with the peaks so far is printed every `--progress-s` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SOURCE_MANIFEST = REPO / "manifests" / "asterisk.jsonl"
SAMPLE_EVERY_S = 0.05
MIB = 1 << 20


@dataclass(frozen=True)
class MemoryRun:
    """One measured CLI run."""

    rows: int
    window: int
    peak_tree_rss_mib: float  # CLI + engine core + worker, summed at each sample
    peak_cli_rss_mib: float  # the CLI process alone: where per-row state (ids, durations) lives
    samples: int
    wall_s: float
    exit_code: int
    rows_written: int
    stopped_by_time_limit: bool = False


def replicate_manifest(rows: int, path: Path) -> Path:
    """A manifest of `rows` rows cycling through the Asterisk prompts, absolute paths and distinct ids."""
    source = [json.loads(line) for line in SOURCE_MANIFEST.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open("w", encoding="utf-8") as f:
        for i in range(rows):
            row = dict(source[i % len(source)])
            row["audio_filepath"] = str((SOURCE_MANIFEST.parent / row["audio_filepath"]).resolve())
            row["id"] = f"{i:06d}/{row['id']}"
            f.write(json.dumps(row) + "\n")
    return path


class TreeSampler:
    """Samples the summed RSS of a process and all its descendants on a background thread."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak_tree = 0
        self.peak_root = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                root_rss = self.root.memory_info().rss
                children = self.root.children(recursive=True)
            except psutil.Error:  # the CLI exited
                return
            tree = root_rss + sum(_rss(c) for c in children)
            self.peak_root = max(self.peak_root, root_rss)
            self.peak_tree = max(self.peak_tree, tree)
            self.samples += 1
            time.sleep(SAMPLE_EVERY_S)


def _rss(proc: psutil.Process) -> int:
    try:
        return proc.memory_info().rss
    except psutil.Error:  # a child that just exited
        return 0


def measure(rows: int, args: argparse.Namespace, work: Path) -> MemoryRun:
    """Run the CLI on a `rows`-row manifest and sample its process tree until it exits."""
    manifest = replicate_manifest(rows, work / f"rows-{rows}.jsonl")
    out = work / f"out-{rows}"
    cmd = [args.cli, "transcribe", str(manifest), "--model", args.model, "--output-dir", str(out),
           "--window", str(args.window), "--kv-cache-gib", str(args.kv_cache_gib), "--overwrite"]
    start = time.perf_counter()
    log = (work / f"rows-{rows}.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with TreeSampler(proc.pid) as sampler:
            code, stopped = _wait(proc, sampler, out, start, args)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # never leave an engine behind
        raise
    finally:
        log.close()
    return MemoryRun(rows, args.window, sampler.peak_tree / MIB, sampler.peak_root / MIB, sampler.samples,
                     time.perf_counter() - start, code, _rows_written(out), stopped)


def _wait(proc: subprocess.Popen, sampler: TreeSampler, out: Path, start: float, args) -> tuple[int, bool]:
    """Wait for the CLI, printing progress; SIGTERM it once the time limit has passed."""
    stopped = False
    while proc.poll() is None:
        time.sleep(args.progress_s)
        elapsed = time.perf_counter() - start
        print(f"  {elapsed:7.0f} s: {_rows_written(out)} rows written, peak tree {sampler.peak_tree / MIB:.1f} MiB, "
              f"CLI {sampler.peak_root / MIB:.1f} MiB", flush=True)
        if args.time_limit_s is not None and elapsed > args.time_limit_s and not stopped:
            os.kill(proc.pid, signal.SIGTERM)  # the CLI finishes the window in flight and exits 130
            stopped = True
    return proc.returncode, stopped


def _rows_written(out: Path) -> int:
    path = out / "predictions.jsonl"
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.endswith(b"\n"))


def summarize(runs: list[MemoryRun]) -> dict[str, float]:
    """Growth of the peaks from the smallest to the largest manifest, in MiB and bytes per extra row."""
    small, large = min(runs, key=lambda r: r.rows), max(runs, key=lambda r: r.rows)
    extra_rows = max(large.rows_written - small.rows_written, 1)  # rows actually done (a time limit stops early)
    tree_growth = large.peak_tree_rss_mib - small.peak_tree_rss_mib
    cli_growth = large.peak_cli_rss_mib - small.peak_cli_rss_mib
    return {
        "tree_growth_mib": tree_growth,
        "cli_growth_mib": cli_growth,
        "tree_growth_bytes_per_row": tree_growth * MIB / extra_rows,
        "cli_growth_bytes_per_row": cli_growth * MIB / extra_rows,
        "tree_ratio": large.peak_tree_rss_mib / small.peak_tree_rss_mib,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[500, 10_000])
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--window", type=int, default=256, help="the CLI's --window (its default)")
    parser.add_argument("--kv-cache-gib", type=float, default=0.25)
    parser.add_argument("--cli", default=str(Path(sys.executable).with_name("speechlm-batch")))
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--time-limit-s", type=float, default=None, help="SIGTERM a run after this long")
    parser.add_argument("--progress-s", type=float, default=30.0, help="seconds between progress lines")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="slb-memory-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        runs = []
        for rows in args.rows:
            run = measure(rows, args, work)
            runs.append(run)
            print(f"{rows:>6} rows: peak tree RSS {run.peak_tree_rss_mib:8.1f} MiB, CLI {run.peak_cli_rss_mib:7.1f} MiB, "
                  f"{run.wall_s:7.1f} s, exit {run.exit_code}, {run.rows_written} rows written"
                  f"{' (time limit)' if run.stopped_by_time_limit else ''}", flush=True)
    result = {"model": args.model, "window": args.window, "kv_cache_gib": args.kv_cache_gib,
              "sample_every_s": SAMPLE_EVERY_S, "cpu_count": os.cpu_count(),
              "runs": [asdict(r) for r in runs], "summary": summarize(runs) if len(runs) > 1 else {}}
    print(json.dumps(result["summary"], indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r.rows_written == r.rows or r.stopped_by_time_limit for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
