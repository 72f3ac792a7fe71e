"""Audio files without a manifest: a folder (searched recursively by extension) or a text file of paths.

Rows have no reference text, so such runs report no WER. Ids are the paths relative to the folder (or as
listed), so a rerun resumes by file; positions follow sorted paths (folders) or the list's order.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from speechlm_batch.types import BadRow, ErrorKind, RowError, Utterance

# What libsndfile (soundfile) decodes: audio.py reads every one of these.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf")


class FilesSource:
    """A fixed list of audio paths as a `Source`; each row is `{"audio_filepath": path}`."""

    def __init__(self, paths: Sequence[str], name: str, ids: Sequence[str] | None = None) -> None:
        self.paths = list(paths)
        self.ids = list(ids) if ids is not None else list(paths)
        self.name = name

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Utterance | BadRow]:
        seen: set[str] = set()
        for position, (path, row_id) in enumerate(zip(self.paths, self.ids, strict=True)):
            if row_id in seen:
                error = RowError(ErrorKind.DUPLICATE_ID, f"{path}: listed more than once")
                yield BadRow(f"{row_id}#{position}", position, path, error)
                continue
            seen.add(row_id)
            yield Utterance(id=row_id, position=position, audio_filepath=path, row={"audio_filepath": path})

    def identity(self) -> dict[str, object]:
        return {"name": self.name, "files": len(self.paths)}


def folder_source(folder: Path, extensions: Sequence[str] = AUDIO_EXTENSIONS) -> FilesSource:
    """Every file below `folder` whose extension (case-insensitive) is an audio one, in sorted path order."""
    folder = Path(folder).absolute()
    wanted = {e.lower() for e in extensions}
    found = sorted(
        os.path.join(root, f) for root, _dirs, files in os.walk(folder) for f in files
        if os.path.splitext(f)[1].lower() in wanted
    )
    ids = [os.path.relpath(p, folder) for p in found]
    return FilesSource(found, folder.name, ids)


def list_source(list_file: Path) -> FilesSource:
    """One path per non-blank line (`#` starts a comment line); relative paths are relative to the list."""
    base = Path(list_file).absolute().parent
    lines = [line.strip() for line in Path(list_file).read_text(encoding="utf-8").splitlines()]
    listed = [line for line in lines if line and not line.startswith("#")]
    paths = [line if os.path.isabs(line) else str(base / line) for line in listed]
    return FilesSource(paths, Path(list_file).stem, listed)
