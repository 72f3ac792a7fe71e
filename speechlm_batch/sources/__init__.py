"""Where utterances come from: anything iterable of `Utterance | BadRow`, behind one small protocol.

A source yields items in input order with positions 0, 1, 2, ... and ids unique within the source; bad rows
are yielded (as `BadRow`), never dropped, so they reach the output with their error. Iterating twice gives
the same items (sharding reads the input once to plan chunks, then again to transcribe).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from speechlm_batch.sources.manifest import ManifestSource, open_manifest_source
from speechlm_batch.types import BadRow, Utterance

__all__ = ["ManifestSource", "Source", "open_manifest", "source_len"]


@runtime_checkable
class Source(Protocol):
    """An input collection. `len(source)` is optional: implement `__len__` only when it is cheap."""

    name: str  # short name for reports (manifest stem, dataset name)

    def __iter__(self) -> Iterator[Utterance | BadRow]: ...


def source_len(source: Source) -> int | None:
    """`len(source)` when the source offers it, else None (a progress bar without a total)."""
    try:
        return len(source)  # type: ignore[arg-type]
    except TypeError:
        return None


def open_manifest(path: Path) -> Source:
    """Open a NeMo JSONL manifest; raises `errors.ManifestError` when it is missing or unreadable."""
    return open_manifest_source(Path(path))
