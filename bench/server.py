"""Offline engine against `--launch-server`, same model, corpus and machine, in one call.

    python -m bench.server --model whisper-base --replicas 20 --out bench/results/gpu-server     # GPU
    python -m bench.server --model whisper-tiny.en --every 10 --out /tmp/server-bench             # CPU smoke

Both rows run the product's own CLI (`speechlm-batch transcribe`) on the corpus manifest of bench.corpus
(replicated Asterisk clips <= 30 s), so each one decodes every file and writes predictions as a user's run
does; the server rows add `--launch-server` (one `vllm serve` on 127.0.0.1, `--api-server-count` N,
`--concurrency` C per server). Times come from each run's report.json: the transcription loop's wall time,
engine or server start-up and warm-up excluded, and for servers the per-request latency. Writes
results.json and results.md into --out; a row that failed keeps its exit code and log path.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.corpus import prepare

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.server", description=__doc__.splitlines()[0])
    p.add_argument("--model", default="whisper-base", help="alias or HF-format folder")
    p.add_argument("--manifest", type=Path, default=REPO / "manifests" / "asterisk.jsonl")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--every", type=int, default=1)
    p.add_argument("--max-clip-s", type=float, default=30.0)
    p.add_argument("--api-server-counts", default="1,4", help="one server row per value")
    p.add_argument("--skip-offline", action="store_true", help="server rows only (the offline row measured elsewhere)")
    p.add_argument("--concurrency", type=int, default=256, help="requests in flight per server")
    p.add_argument("--engine-args", default="", help="transcribe options for every row, e.g. '--max-num-seqs 512'")
    p.add_argument("--work", type=Path, default=Path("/tmp/speechlm-batch-bench-server"))
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench-server")
    p.add_argument("--timeout-s", type=float, default=1800, help="per row")
    return p.parse_args(argv)


def row_command(args: argparse.Namespace, manifest: Path, out: Path, api_servers: int | None) -> list[str]:
    command = [sys.executable, "-m", "speechlm_batch", "transcribe", str(manifest), "-m", args.model,
               "-o", str(out), "--overwrite", *shlex.split(args.engine_args)]
    if api_servers is not None:
        command += ["--launch-server", "--api-server-count", str(api_servers), "--concurrency", str(args.concurrency)]
    return command


def run_row(name: str, command: list[str], out: Path, timeout_s: float) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    log = out / "bench.log"
    with log.open("wb") as f:
        try:
            code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            code = None
    report_path = out / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() and code in (0, 1) else None
    row: dict[str, Any] = {"row": name, "command": shlex.join(command), "exit_code": code, "log": str(log)}
    if report is None:
        return row
    serving = report.get("serving") or {}
    latency = serving.get("latency_s") or {}
    row.update(
        rows=report["rows"]["total"], failed=report["rows"]["failed"], audio_s=report["rtfx"]["audio_s"],
        wall_s=report["timings"]["wall_s"], load_s=report["timings"]["load_s"],
        rtfx=report["rtfx"]["end_to_end"], wer_percent=report["wer"]["wer_percent"], device=report["device"],
        latency_p50_s=latency.get("p50"), latency_p90_s=latency.get("p90"), latency_p99_s=latency.get("p99"),
        requests_per_s=serving.get("requests_per_s"),
    )
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    lines = [
        "| row | clips | wall s | RTFx | WER % | latency p50 / p90 / p99 s | req/s | start s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "wall_s" not in r:
            lines.append(f"| {r['row']} | failed (exit {r['exit_code']}, {r['log']}) | | | | | | |")
            continue
        latency = " / ".join(fmt(r[k], ".3f") for k in ("latency_p50_s", "latency_p90_s", "latency_p99_s"))
        lines.append(
            f"| {r['row']} | {r['rows']} | {r['wall_s']:.1f} | {fmt(r['rtfx'], '.1f')} "
            f"| {fmt(r['wer_percent'], '.2f')} "
            f"| {latency} | {fmt(r['requests_per_s'], '.1f')} | {r['load_s']:.1f} |"
        )
    timed = [r for r in rows if r.get("rtfx")]
    if timed:
        best = max(timed, key=lambda r: r["rtfx"])
        lines += ["", f"Fastest: **{best['row']}** ({best['rtfx']:.1f}x real time, device {best['device']})."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    corpus = prepare(args.manifest, args.work / "corpus", replicas=args.replicas, max_clip_s=args.max_clip_s,
                     every=args.every, workers=4)
    rows = [] if args.skip_offline else [
        run_row("offline engine", row_command(args, corpus.manifest, args.out / "offline", None), args.out / "offline",
                args.timeout_s)]
    save(args, corpus, rows)
    for count in (int(c) for c in args.api_server_counts.split(",") if c):
        name = f"--launch-server, {count} API server{'s' * (count > 1)}, concurrency {args.concurrency}"
        out = args.out / f"server-{count}"
        rows.append(run_row(name, row_command(args, corpus.manifest, out, count), out, args.timeout_s))
        save(args, corpus, rows)  # after every row: a call cut short by its time limit keeps the rows it finished
    print(markdown(rows))


def save(args: argparse.Namespace, corpus: Any, rows: list[dict[str, Any]]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"model": args.model, "clips": len(corpus.clips), "audio_s": corpus.audio_s, "rows": rows}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(rows))


if __name__ == "__main__":
    main()
