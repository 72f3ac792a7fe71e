"""Score, tabulate and compare benchmark rows: the markdown table, the ratios and the WER parity check.

    python -m bench.report RESULTS.json [MORE.json ...] [--out-md FILE] [--out-json FILE]

merges result files (e.g. of two device calls on the same warm machine), scores rows whose WER is missing
(the GPU machine has no WER normaliser), and prints the tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import Row, write_json

SB = "speechlm-batch"


def score(rows: list[Row], refs: list[str]) -> None:
    """Fill in corpus WER (percent) for rows that have hypotheses and no score yet."""
    try:
        from speechlm_batch.metrics import corpus_wer
    except ImportError:
        return
    for row in rows:
        if row.wer is None and row.hyps is not None and len(row.hyps) == len(refs):
            try:
                wer = corpus_wer(refs, row.hyps).wer
            except ImportError:  # normaliser (openai-whisper) or jiwer missing on this machine
                return
            row.wer = None if wer is None else 100.0 * wer


def differing(a: list[str] | None, b: list[str] | None) -> int | None:
    """How many clips two rows transcribe differently after Whisper normalisation."""
    if a is None or b is None or len(a) != len(b):
        return None
    try:
        from speechlm_batch.metrics import normalize

        return sum(1 for x, y in zip(a, b) if normalize(x) != normalize(y))
    except ImportError:
        return sum(1 for x, y in zip(a, b) if x.strip() != y.strip())


def best(rows: list[Row], engine: str) -> Row | None:
    found = [r for r in rows if r.engine == engine and r.hyps is not None and r.wall_s > 0]
    return max(found, key=lambda r: r.rtfx) if found else None


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table(rows: list[Row]) -> str:
    lines = ["| row | clips | audio h | wall s | RTFx | WER % | peak RSS GiB | CPU % (tree / machine) | load s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cpu = f"{_fmt(r.cpu_percent, '.0f')} / {_fmt(r.machine_busy_percent, '.0f')}"
        rss = None if r.peak_rss_mib is None else r.peak_rss_mib / 1024
        name = r.name + (f" ({r.note})" if r.note else "")
        lines.append(f"| {name} | {r.clips} | {r.audio_s / 3600:.3f} | {r.wall_s:.1f} | {r.rtfx:.1f} | "
                     f"{_fmt(r.wer, '.2f')} | {_fmt(rss, '.2f')} | {cpu} | {_fmt(r.load_s, '.1f')} |")
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    hf_rows = [r for r in rows if r.engine == "transformers" and r.hyps is not None and r.wall_s > 0]
    others = (best(rows, "vllm-naive"), best(rows, "vllm-ceiling"), best(rows, "faster-whisper"))
    baselines = hf_rows + [b for b in others if b]  # every transformers row: plain and leaderboard-style
    ours = [r for r in rows if r.engine == SB and r.hyps is not None]
    if not ours or not baselines:
        return "(no ratios: a speechlm-batch row or every baseline is missing)"
    head = "| speechlm-batch row | " + " | ".join(f"× {b.name}" for b in baselines) + " | WER Δ vs transformers | clips differing |"
    lines = [head, "|---|" + "---:|" * (len(baselines) + 2)]
    hf = best(rows, "transformers")
    for r in ours:
        cells = [f"{r.rtfx / b.rtfx:.2f}" for b in baselines]
        delta = None if (hf is None or hf.wer is None or r.wer is None) else r.wer - hf.wer
        diff = differing(r.hyps, hf.hyps) if hf else None
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {_fmt(delta, '+.3f')} | {_fmt(diff, 'd')} |")
    return "\n".join(lines)


def scaling(rows: list[Row]) -> str:
    """Each K-engine row against the last one-engine end-to-end row before it (same run or call)."""
    pairs, single = [], None
    for r in rows:
        if r.engine == SB and r.name.startswith("speechlm-batch end to end ("):
            single = r
        elif r.engine == SB and " engines on " in r.name and single is not None:
            pairs.append((r, single))
    if not pairs:
        return ""
    lines = ["", "Scaling (RTFx against the one-engine end-to-end row before it):", "",
             "| row | RTFx | one engine RTFx | × one engine |", "|---|---:|---:|---:|"]
    lines += [f"| {r.name} | {r.rtfx:.1f} | {one.rtfx:.1f} | {r.rtfx / one.rtfx:.2f} |" for r, one in pairs]
    return "\n".join(lines) + "\n"


def render(meta: dict[str, Any], rows: list[Row]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in sorted(meta.get("versions", {}).items()))
    parts = [f"Device: {meta.get('device', '?')}", f"Versions: {versions}", f"Command: `{meta.get('command', '?')}`",
             "", table(rows), "", "Ratios of RTFx (same run, same audio, same model):", "", ratios(rows)]
    return "\n".join(parts) + "\n" + scaling(rows)


def load(paths: list[Path]) -> tuple[dict[str, Any], list[Row], list[str]]:
    """Merge result files: meta of the first, rows of all, the references they share."""
    meta: dict[str, Any] = {}
    rows: list[Row] = []
    refs: list[str] = []
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        if meta and data["meta"].get("command") not in meta["command"]:
            meta["command"] += "` then `" + data["meta"]["command"]  # several calls on one warm machine
        meta = meta or data["meta"]
        refs = refs or data["refs"]
        if data["refs"] != refs:
            raise SystemExit(f"{path}: another corpus than {paths[0]}: results cannot be compared")
        rows += [Row.from_dict(r) for r in data["rows"]]
    return meta, rows, refs


def save(path: Path, meta: dict[str, Any], rows: list[Row], refs: list[str], with_hyps: bool = True) -> None:
    write_json(path, {"meta": meta, "refs": refs if with_hyps else [], "rows": [r.to_dict(with_hyps) for r in rows]})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--out-json", type=Path)
    parser.add_argument("--out-md", type=Path)
    parser.add_argument("--no-hyps", action="store_true", help="--out-json without hypotheses and references (small)")
    args = parser.parse_args(argv)
    meta, rows, refs = load(args.results)
    score(rows, refs)
    text = render(meta, rows) + "".join(f"\n- skipped: {s}" for s in meta.get("skipped", []))
    print(text)
    if args.out_json:
        save(args.out_json, meta, rows, refs, with_hyps=not args.no_hyps)
    if args.out_md:
        args.out_md.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
