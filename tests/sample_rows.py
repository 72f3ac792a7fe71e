"""Rows of the sample manifests with absolute audio paths, so tests can mix them into new manifests."""

from __future__ import annotations

import json
from pathlib import Path


def absolute_rows(manifests: Path, name: str) -> list[dict]:
    rows = []
    for line in (manifests / name).read_text().splitlines():
        row = json.loads(line)
        row["audio_filepath"] = str((manifests / row["audio_filepath"]).resolve())
        rows.append(row)
    return rows
