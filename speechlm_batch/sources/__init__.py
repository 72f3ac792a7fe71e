"""Where utterances come from: anything iterable of `Utterance | BadRow`, behind one small protocol.

A source yields items in input order with positions 0, 1, 2, ... and ids unique within the source; bad rows
are yielded (as `BadRow`), never dropped, so they reach the output with their error. Iterating twice gives
the same items (sharding reads the input once to plan chunks, then again to transcribe).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from speechlm_batch.errors import UsageError
from speechlm_batch.sources.files import FilesSource, folder_source, list_source
from speechlm_batch.sources.manifest import DEFAULT_KEYS, ManifestSource, open_manifest_source
from speechlm_batch.types import BadRow, Utterance

__all__ = ["FilesSource", "ManifestSource", "Source", "open_input", "open_manifest", "source_len"]
MANIFEST_SUFFIXES = (".jsonl", ".json", ".ndjson")
STDIN = "-"


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


def open_input(spec: str, keys: tuple[str, str] = DEFAULT_KEYS, stdin_copy: Path | None = None) -> Source:
    """What `transcribe INPUT` reads: a JSONL manifest, a folder of audio files, a text file of paths, or `-`.

    `-` reads a manifest from standard input; it is copied to `stdin_copy` first, because a source is read
    more than once (sharding plans, then transcribes) and a rerun must be able to resume.
    """
    if spec == STDIN:
        if stdin_copy is None:
            raise UsageError("a manifest on standard input needs a file to copy it to")
        stdin_copy.parent.mkdir(parents=True, exist_ok=True)
        stdin_copy.write_bytes(sys.stdin.buffer.read())
        return open_manifest_source(stdin_copy, keys)
    path = Path(spec)
    if path.is_dir():
        source = folder_source(path)
        if not len(source):
            raise UsageError(f"{path} holds no audio files", hint="audio files end in .wav, .flac, .mp3, .ogg ...")
        return source
    if not path.is_file():
        raise UsageError(f"{path}: no such file or folder", hint="give a manifest (.jsonl), a folder, a list of paths, or -")
    if path.suffix.lower() in MANIFEST_SUFFIXES or _starts_with_json(path):
        return open_manifest_source(path, keys)
    return list_source(path)


def _starts_with_json(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(64).lstrip()
    return head.startswith(b"{")
