"""File writes that never leave a half-replaced file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    atomic_write_chunks(path, [text.encode("utf-8")])


def atomic_write_chunks(path: Path, chunks: Iterable[bytes]) -> None:
    """Stream `chunks` into a temporary file beside `path`, fsync, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; reports are meant to be shared like other files
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def cache_dir(environ: dict[str, str] | None = None) -> Path:
    """Where models and fetched packages live: $SPEECHLM_BATCH_CACHE, else ~/.cache/speechlm-batch."""
    env = os.environ if environ is None else environ
    root = env.get("SPEECHLM_BATCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "speechlm-batch")
    return Path(root)
