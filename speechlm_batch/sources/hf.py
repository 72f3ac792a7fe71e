"""Hugging Face datasets as a `Source`: a hub id, a `save_to_disk` folder, parquet files, or an audio folder.

Rules follow the Open ASR Leaderboard's `normalizer/data_utils.py`:
    * the transcript column is the first of `text`, `sentence`, `normalized_text`, `transcript`,
      `transcription` that the dataset has;
    * rows whose normalized reference is empty or "ignore time segment in scoring" are dropped before
      inference and counted (`HfSource.dropped_rows`, reported beside the WER).

Audio is never decoded by `datasets` (whose 4.x / 5.x versions need torchcodec even to *encode* a path):
the audio column is cast to `Audio(decode=False)` and read with soundfile. Embedded bytes are decoded
lazily, by the pipeline's decode threads, through `EncodedAudio`; audio stored as a file path is handed to the
pipeline as a path (streamed and resampled block by block, like manifest rows). Rows are read from the
memory-mapped Arrow table one batch at a time, so memory does not grow with the dataset.

Ids: the dataset's `id` column (as a string) when present, else the dataset row index; a repeated id gets
`#<index>` appended so ids stay unique. Positions count kept rows only (0, 1, 2, ...).

Audio folders: a folder with `metadata.csv` or `metadata.jsonl` whose `file_name` column names audio files
relative to the folder (the `datasets` "audiofolder" layout). It is read with the `csv` / `json` builders
rather than "audiofolder", which needs torchcodec in `datasets` >= 4.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechlm_batch.errors import OfflineAssetError, UsageError
from speechlm_batch.types import BadRow, ErrorKind, RowError, Utterance

TEXT_COLUMNS = ("text", "sentence", "normalized_text", "transcript", "transcription")
DURATION_COLUMNS = ("audio_length_s", "duration")
AUDIO_PATH_COLUMNS = ("audio", "file_name", "audio_filepath", "path")  # string columns naming audio files
METADATA_FILES = ("metadata.jsonl", "metadata.csv")
IGNORE_REFERENCE = "ignore time segment in scoring"
BATCH_ROWS = 64  # rows read from Arrow at once: bounded memory, few Python round trips


class EncodedAudio:
    """Compressed audio bytes that decode (soundfile) only when `np.asarray` asks for the samples.

    `Utterance.audio` holds one of these, so a dataset's audio is decoded in the pipeline's decode threads,
    one window at a time, and rows that resume or sharding skip are never decoded. A decoding failure gives an
    empty array, which the audio front end reports as an `empty_audio` row error.
    """

    __slots__ = ("data", "label")

    def __init__(self, data: bytes, label: str) -> None:
        self.data = data
        self.label = label

    def decode(self) -> np.ndarray:
        import soundfile as sf

        try:
            samples, _rate = sf.read(io.BytesIO(self.data), dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError, ValueError):
            return np.zeros(0, dtype=np.float32)
        return samples

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        samples = self.decode()
        return samples if dtype is None else samples.astype(dtype, copy=False)

    def __len__(self) -> int:
        return len(self.decode())

    def __repr__(self) -> str:
        return f"EncodedAudio({self.label!r}, {len(self.data)} bytes)"


class HfSource:
    """A `datasets.Dataset` (already loaded, memory-mapped) as a re-iterable `Source`.

    Attributes:
        name: short name for reports.
        text_column: the transcript column chosen by the leaderboard's precedence.
        audio_column: the audio column (an `Audio` feature or a string path column).
    """

    def __init__(
        self,
        dataset: Any,
        *,
        name: str,
        identity: Mapping[str, Any] | None = None,
        base_dir: Path | None = None,
        limit: int | None = None,
    ) -> None:
        self.name = name
        # None: a dataset without transcripts is transcribed all the same, and gets no WER.
        self.text_column = next((c for c in TEXT_COLUMNS if c in dataset.column_names), None)
        self.audio_column = _find_audio_column(dataset)
        self.id_column = "id" if "id" in dataset.column_names else None
        self.duration_column = next((c for c in DURATION_COLUMNS if c in dataset.column_names), None)
        self._dataset = _without_decoding(dataset, self.audio_column)
        self._identity = dict(identity or {})
        self._base_dir = base_dir
        self._limit = limit
        self._kept: list[int] | None = None  # dataset indices of the rows to transcribe, computed once
        self._scanned = 0  # dataset rows looked at to find them

    # -- which rows ------------------------------------------------------------------------------------

    def kept_indices(self) -> list[int]:
        """Dataset indices of the rows that will be transcribed (references checked, `limit` applied)."""
        if self._kept is None and self.text_column is None:
            count = len(self._dataset) if self._limit is None else min(self._limit, len(self._dataset))
            self._kept, self._scanned = list(range(count)), count
        if self._kept is None:
            self._kept, self._scanned = select_rows(self._dataset[self.text_column], self._limit)
        return self._kept

    @property
    def dropped_rows(self) -> int:
        """Rows skipped because their normalized reference is empty or "ignore time segment in scoring"."""
        kept = self.kept_indices()
        return self._scanned - len(kept)

    def __len__(self) -> int:
        return len(self.kept_indices())

    def durations(self) -> list[float | None]:
        """Seconds per kept row from `audio_length_s` / `duration`; None each when the dataset has neither."""
        kept = self.kept_indices()
        if self.duration_column is None:
            return [None] * len(kept)
        column = self._dataset.select_columns([self.duration_column])
        values = column.select(kept)[self.duration_column] if kept else []
        return [_finite(v) for v in values]

    def identity(self) -> dict[str, Any]:
        """What the input was: recorded in the predictions' meta file and read back by `report`."""
        return {
            **self._identity,
            "name": self.name,
            "rows": len(self._dataset),
            "rows_kept": len(self),
            "rows_dropped": self.dropped_rows,
            "limit": self._limit,
            "text_column": self.text_column,
            "audio_column": self.audio_column,
        }

    # -- the rows --------------------------------------------------------------------------------------

    def row_ids(self) -> list[str]:
        """Each kept row's id as iteration gives it, from the id column alone (no audio is read)."""
        kept = self.kept_indices()
        if self.id_column and kept:
            values = self._dataset.select_columns([self.id_column]).select(kept)[self.id_column]
        else:
            values = [None] * len(kept)
        ids: list[str] = []
        seen: set[str] = set()
        for index, value in zip(kept, values, strict=True):
            row_id = _row_id(value, index, seen)
            seen.add(row_id)
            ids.append(row_id)
        return ids

    def __iter__(self) -> Iterator[Utterance | BadRow]:
        return self.iter_positions(range(len(self.kept_indices())))

    def iter_positions(self, positions: range) -> Iterator[Utterance | BadRow]:
        """The rows at `positions` only: a shard reads its own rows' audio, not that of every earlier row."""
        kept = self.kept_indices()
        columns = [c for c in self._dataset.column_names if c == self.audio_column or _is_scalar(self._dataset, c)]
        table = self._dataset.select_columns(columns)
        first, stop = max(positions.start, 0), min(positions.stop, len(kept))
        seen: set[str] = set(self.row_ids()[:first]) if first else set()  # ids renamed as in a whole pass
        for start in range(first, stop, BATCH_ROWS):
            indices = kept[start : min(start + BATCH_ROWS, stop)]
            batch = table[indices]  # one Arrow take per batch: a dict of column lists
            for offset, index in enumerate(indices):
                row = {c: batch[c][offset] for c in columns}
                item = self._item(row, index, start + offset, seen)
                seen.add(item.id)
                yield item

    def _item(self, row: dict[str, Any], index: int, position: int, seen: set[str]) -> Utterance | BadRow:
        row_id = _row_id(row.get(self.id_column) if self.id_column else None, index, seen)
        audio_value = row.pop(self.audio_column)
        out_row = self._out_row(row, index, row_id, audio_value)
        label = f"{self.name}[{index}] ({row_id})"
        try:
            audio, path = self._audio(audio_value, label)
        except _AudioProblem as e:
            raw = json.dumps(out_row, ensure_ascii=False, default=str)
            return BadRow(row_id, position, raw, RowError(e.kind, f"{label}: {e}"))
        return Utterance(
            id=row_id,
            position=position,
            audio_filepath=path or out_row["audio_filepath"],
            row=out_row,
            text=out_row["text"],
            audio=audio,
        )

    def _out_row(self, row: dict[str, Any], index: int, row_id: str, audio_value: Any) -> dict[str, Any]:
        """The row written back beside the prediction: scalar columns, `text`, `audio_filepath`, `duration`."""
        text = row.pop(self.text_column) if self.text_column else None
        out = {k: v for k, v in row.items() if k not in ("pred_text", "error")}
        path = _audio_path(audio_value)
        out["audio_filepath"] = row_id if self.id_column else (path or f"sample_{index}")
        out["text"] = text
        out["dataset_index"] = index
        if self.duration_column and "duration" not in out:
            out["duration"] = _finite(row.get(self.duration_column))
        return out

    def _audio(self, value: Any, label: str) -> tuple[tuple[EncodedAudio, int] | None, str | None]:
        """(lazy samples and rate, None) for embedded bytes, or (None, file path) for audio stored as a path."""
        data = value.get("bytes") if isinstance(value, Mapping) else None
        if data:
            return (EncodedAudio(data, label), _sample_rate(data)), None
        path = _audio_path(value)
        if not path:
            raise _AudioProblem(ErrorKind.MISSING_FILE, "the row has no audio (neither bytes nor a path)")
        if not os.path.isabs(path) and self._base_dir is not None:
            path = str(self._base_dir / path)
        if not os.path.isfile(path):
            raise _AudioProblem(ErrorKind.MISSING_FILE, f"audio file {path} not found")
        return None, path

    def __repr__(self) -> str:
        return f"HfSource({self.name!r}, text={self.text_column!r}, audio={self.audio_column!r})"


def _row_id(value: Any, index: int, seen: set[str]) -> str:
    """The dataset's id (else the row's index), made unique by its index when seen before."""
    row_id = str(value) if value is not None else str(index)
    return f"{row_id}#{index}" if row_id in seen else row_id


class _AudioProblem(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# ---------------------------------------------------------------------------------------------- rules


def find_text_column(columns: Sequence[str]) -> str:
    """The transcript column by the leaderboard's precedence; UsageError naming the columns when none fits."""
    for name in TEXT_COLUMNS:
        if name in columns:
            return name
    raise UsageError(
        f"no transcript column: expected one of {', '.join(TEXT_COLUMNS)}; the dataset has {', '.join(columns)}"
    )


def keep_reference(text: Any) -> bool:
    """The leaderboard's filter: the normalized reference is not empty and not "ignore time segment in scoring"."""
    from speechlm_batch.metrics import normalize

    if not isinstance(text, str):
        return False
    norm = normalize(text).strip()
    return bool(norm) and norm != IGNORE_REFERENCE


def select_rows(texts: Sequence[Any], limit: int | None = None) -> tuple[list[int], int]:
    """Indices of rows whose reference is kept, stopping after `limit` kept rows; also how many rows were read."""
    kept: list[int] = []
    scanned = 0
    for index, text in enumerate(texts):
        if limit is not None and len(kept) >= limit:
            break
        scanned += 1
        if keep_reference(text):
            kept.append(index)
    return kept, scanned


def _find_audio_column(dataset: Any) -> str:
    from datasets import Audio

    for name, feature in dataset.features.items():
        if isinstance(feature, Audio):
            return name
    for name in AUDIO_PATH_COLUMNS:
        if name in dataset.column_names:
            return name
    raise UsageError(f"no audio column: no Audio feature and none of {', '.join(AUDIO_PATH_COLUMNS)}")


def _without_decoding(dataset: Any, column: str) -> Any:
    """Cast an `Audio` column to `decode=False` ({"bytes", "path"}): a metadata change, no data is read."""
    from datasets import Audio

    feature = dataset.features[column]
    if isinstance(feature, Audio) and feature.decode:
        return dataset.cast_column(column, Audio(decode=False))
    return dataset


def _is_scalar(dataset: Any, column: str) -> bool:
    """Columns copied into the output rows: plain values (strings, numbers, booleans) only."""
    from datasets import Value

    return isinstance(dataset.features[column], Value)


def _audio_path(value: Any) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        return value.get("path") or None
    return None


def _sample_rate(data: bytes) -> int:
    """The native rate from the header only (cheap); an unreadable header is a row error, not a crash."""
    import soundfile as sf

    try:
        return sf.info(io.BytesIO(data)).samplerate
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise _AudioProblem(ErrorKind.UNREADABLE, f"cannot decode audio ({e})") from None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------- opening


def open_hf(
    path_or_id: str | Path,
    config: str | None = None,
    split: str | None = "test",
    *,
    limit: int | None = None,
    name: str | None = None,
    identity_extra: Mapping[str, Any] | None = None,
) -> HfSource:
    """Open a dataset as a `Source`.

    Args:
        path_or_id: a local `save_to_disk` folder, a parquet file or folder of parquet files, an audio folder
            with `metadata.csv` / `metadata.jsonl` (or that metadata file), else a hub id (read from the local
            HF cache when `HF_HUB_OFFLINE=1` / `HF_DATASETS_OFFLINE=1`).
        config: the dataset's config (hub ids only; None for datasets without configs).
        split: the split (hub ids and `DatasetDict` folders; parquet file names starting with it).
        limit: transcribe at most this many rows (counted after dropping unusable references).
        name: name in reports; default the config, else the folder / dataset name.
        identity_extra: extra fields for `HfSource.identity()` (eval records the leaderboard naming there).

    Raises:
        OfflineAssetError: a hub id that is neither cached nor reachable; the message says how to get it.
        UsageError: a local path that is none of the supported layouts, or no transcript / audio column.
    """
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    local = Path(path_or_id).expanduser()
    if local.exists():
        dataset, base_dir, kind = _load_local(local, split)
        identity = {"kind": kind, "path": str(local.resolve()), "split": split}
    else:
        dataset, base_dir = _load_hub(str(path_or_id), config, split), None
        identity = {"kind": "hub", "dataset": str(path_or_id), "config": config, "split": split}
    identity = {**identity, **(identity_extra or {})}
    name = name or default_name(path_or_id, config)
    return HfSource(dataset, name=name, identity=identity, base_dir=base_dir, limit=limit)


def default_name(path_or_id: str | Path, config: str | None = None) -> str:
    """A dataset's name in reports: a local file's stem or folder's name, else the config or the id's last part."""
    local = Path(path_or_id).expanduser()
    if local.exists():
        return local.stem if local.is_file() else local.resolve().name
    return config or str(path_or_id).rsplit("/", 1)[-1]


def _load_local(path: Path, split: str | None) -> tuple[Any, Path | None, str]:
    """(dataset, folder relative audio paths are resolved against, layout name) for a local path."""
    if path.is_file():
        if path.suffix == ".parquet":
            return _load_builder("parquet", [path]), path.parent, "parquet"
        if path.name in METADATA_FILES or path.suffix in (".csv", ".jsonl"):
            return _load_metadata(path), path.parent, "audiofolder"
        raise UsageError(f"{path}: expected a .parquet file, a metadata .csv / .jsonl file, or a dataset folder")
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _load_saved(path, split), None, "save_to_disk"
    for meta in METADATA_FILES:
        if (path / meta).is_file():
            return _load_metadata(path / meta), path, "audiofolder"
    parquet = _parquet_files(path, split)
    if parquet:
        return _load_builder("parquet", parquet), path, "parquet"
    raise UsageError(
        f"{path}: not a dataset folder",
        hint="expected a `save_to_disk` folder, parquet files, or audio files with metadata.csv / metadata.jsonl",
    )


def _load_saved(path: Path, split: str | None) -> Any:
    from datasets import DatasetDict, load_from_disk

    loaded = load_from_disk(str(path))
    if not isinstance(loaded, DatasetDict):
        return loaded
    if split in loaded:
        return loaded[split]
    if split is None and len(loaded) == 1:
        return next(iter(loaded.values()))
    raise UsageError(f"{path}: no split {split!r}; it has {', '.join(loaded)}")


def _parquet_files(folder: Path, split: str | None) -> list[Path]:
    files = sorted(folder.rglob("*.parquet"))
    if split:
        named = [f for f in files if f.name.startswith((f"{split}-", f"{split}.")) or f.parent.name == split]
        return named or files
    return files


def _load_metadata(path: Path) -> Any:
    dataset = _load_builder("json" if path.suffix == ".jsonl" else "csv", [path])
    if "file_name" not in dataset.column_names:
        raise UsageError(f"{path}: an audio-folder metadata file needs a `file_name` column")
    return dataset


def _load_builder(builder: str, files: Sequence[Path]) -> Any:
    from datasets import load_dataset

    return load_dataset(builder, data_files=[str(f) for f in files], split="train")


def _load_hub(dataset_id: str, config: str | None, split: str | None) -> Any:
    from datasets import load_dataset

    try:
        return load_dataset(dataset_id, config or None, split=split)
    except (ConnectionError, FileNotFoundError, OSError, ValueError) as e:
        raise offline_error(dataset_id, config, split, e) from e


def offline_error(
    dataset_id: str, config: str | None, split: str | None, cause: BaseException | None = None
) -> OfflineAssetError:
    """The error for a hub dataset that is neither in the local HF cache nor reachable, with ways to get it."""
    parts = (dataset_id, f"config {config!r}" if config else "", f"split {split!r}" if split else "")
    what = " ".join(p for p in parts if p)
    reason = ""
    if cause is not None and str(cause):
        reason = f" ({type(cause).__name__}: {str(cause).splitlines()[0][:200]})"
    hint = (
        f"on a machine with network run `huggingface-cli download --repo-type dataset {dataset_id}` (or "
        f"`datasets.load_dataset({dataset_id!r}, {config!r}, split={split!r})`) and copy ~/.cache/huggingface to "
        "this machine, then set HF_HUB_OFFLINE=1; or `save_to_disk` the split there and pass the folder with "
        "--hf-dataset (named sets: put it at $SPEECHLM_BATCH_DATASETS/<path>/<config>/<split>)"
    )
    message = f"dataset {what} is not in the local Hugging Face cache and the hub cannot be reached{reason}"
    return OfflineAssetError(message, hint)
