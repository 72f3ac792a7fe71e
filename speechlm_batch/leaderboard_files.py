"""The Open ASR Leaderboard's result manifests: names, rows, reading and writing.

One JSON object per line, `audio_filepath, duration, time, text, pred_text` (plus `parent_id` / `chunk_index`
for chunked sets), named `MODEL_{model}_DATASET_{path}_{config}_{split}.jsonl` with "/" -> "-" (upstream
`normalizer/eval_utils.py` `write_manifest`). Text stays raw: the scorer normalizes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm_batch.fsutil import atomic_write_text
from speechlm_batch.metrics import CHUNK_INDEX_KEY, CHUNK_PARENT_KEY
from speechlm_batch.scoring import failure_kind, is_ok, reference_text

FIELDS = ("audio_filepath", "duration", "time", "text", "pred_text")
ERROR_KEY = "error"  # ours, on failed rows only; the leaderboard's scorer reads only FIELDS


@dataclass(frozen=True)
class LeaderboardName:
    """The parts of a leaderboard manifest name. "/" became "-", so `model` / `dataset_path` are slugs."""

    model: str
    dataset_path: str
    config: str
    split: str

    def filename(self) -> str:
        return f"MODEL_{self.model}_DATASET_{self.dataset_path}_{self.config}_{self.split}.jsonl"


def leaderboard_filename(model_id: str, dataset_path: str, config: str, split: str) -> str:
    """`MODEL_{model_id / -> -}_DATASET_{dataset_path / -> -}_{config}_{split}.jsonl`, as the leaderboard writes."""
    return LeaderboardName(model_id.replace("/", "-"), dataset_path.replace("/", "-"), config, split).filename()


_NAME_RE = re.compile(r"MODEL_(?P<model>.+?)_DATASET_(?P<rest>.+)\.jsonl")


def parse_leaderboard_filename(name: str) -> LeaderboardName | None:
    """Split a manifest name back into its parts; None when it is not one.

    The dataset slug ends at the first "_" after DATASET_ and the split starts after the last "_", so a
    config may contain "_" (`ami_cleaned`) or be empty (`..._Earnings22-Cleaned-AA-chunked__test`).
    """
    match = _NAME_RE.fullmatch(Path(name).name)
    if match is None or match["rest"].count("_") < 2:
        return None
    head, split = match["rest"].rsplit("_", 1)
    dataset_path, config = head.split("_", 1)
    return LeaderboardName(match["model"], dataset_path, config, split)


def _leaderboard_row(row: Mapping[str, Any], index: int, time_s: float) -> dict[str, Any]:
    audio_s = row.get("_audio_s")
    duration = audio_s if isinstance(audio_s, (int, float)) and audio_s > 0 else row.get("duration")
    ok = is_ok(row)
    out = {
        "audio_filepath": row.get("audio_filepath") or row.get("_id") or f"sample_{index}",
        "duration": duration,
        "time": time_s,
        "text": reference_text(row),
        "pred_text": row["pred_text"] if ok else "",
    }
    for key in (CHUNK_PARENT_KEY, CHUNK_INDEX_KEY):
        if key in row:
            out[key] = row[key]
    if not ok:
        out[ERROR_KEY] = failure_kind(row)
    return out


def write_leaderboard_manifest(path: Path, rows: Iterable[Mapping[str, Any]], total_time_s: float) -> int:
    """Write rows in the leaderboard's manifest format, `total_time_s` spread evenly over the rows written.

    Rows without a reference (`scoring.reference_text`) are skipped (nothing to score against). A failed row gets `pred_text` ""
    (the leaderboard's scorer counts its words as deleted, as ours does) and an `error` field naming its
    kind, so `report` can still count it apart. `duration` is the decoded audio (`_audio_s`) when known.

    Returns:
        The number of lines written.
    """
    kept = [row for row in rows if reference_text(row) is not None]
    per_row = total_time_s / len(kept) if kept else 0.0
    lines = [json.dumps(_leaderboard_row(row, i, per_row), ensure_ascii=False) for i, row in enumerate(kept)]
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return len(lines)


def read_leaderboard_manifests(directory: Path) -> dict[LeaderboardName, list[dict[str, Any]]]:
    """Read every `MODEL_*_DATASET_*.jsonl` below `directory` (recursively, as the scorer does)."""
    found: dict[LeaderboardName, list[dict[str, Any]]] = {}
    for path in sorted(Path(directory).rglob("MODEL_*_DATASET_*.jsonl")):
        name = parse_leaderboard_filename(path.name)
        if name is None:
            continue
        with path.open(encoding="utf-8") as f:
            found[name] = [json.loads(line) for line in f if line.strip()]
    return found
