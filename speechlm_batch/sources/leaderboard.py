"""The Open ASR Leaderboard's named test sets, and where a local copy of each is looked for.

Two families (say which one a number comes from; ../docs and the leaderboard README):
    * "classic" (July 2024 - July 2026): eight English sets from `hf-audio/esb-datasets-test-only-sorted`.
      `--dataset all` runs these eight.
    * "2026": the current public set from `hf-audio/open-asr-leaderboard` (cleaned AMI / GigaSpeech /
      VoxPopuli, LibriSpeech, SPGISpeech) plus `ArtificialAnalysis/Earnings22-Cleaned-AA-chunked`, whose
      chunk predictions are joined per call (`parent_id`, by `chunk_index`) before scoring.
      `--dataset all-2026` runs these seven. Scores here use the classic scorer rules (see metrics).

Local copies: a mirror folder (`--datasets-dir`, or the SPEECHLM_BATCH_DATASETS variable read by the CLI)
holding `<path>/<config>/<split>` (`<path>/<split>` for sets without a config), each a `save_to_disk` folder,
parquet files or an audio folder. A mirror copy wins over the HF cache; without one the hub id is loaded
(from the cache when offline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

from speechlm_batch.errors import OfflineAssetError, UsageError
from speechlm_batch.sources.hf import HfSource, open_hf

Family = Literal["classic", "2026"]
CLASSIC_PATH = "hf-audio/esb-datasets-test-only-sorted"
PUBLIC_2026_PATH = "hf-audio/open-asr-leaderboard"
EARNINGS_CHUNKED_PATH = "ArtificialAnalysis/Earnings22-Cleaned-AA-chunked"


@dataclass(frozen=True)
class DatasetSpec:
    """One named leaderboard set.

    Attributes:
        name: what `--dataset` takes and reports show.
        path: the hub dataset id.
        config: the dataset config; "" for a dataset without configs (its leaderboard file then reads
            `..._DATASET_{path}__{split}.jsonl`, as upstream writes it).
        split: the split.
        family: "classic" or "2026".
        chunked: rows are chunks of longer recordings, joined per `parent_id` before scoring.
    """

    name: str
    path: str
    config: str
    split: str
    family: Family
    chunked: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def mirror_dir(self, root: Path) -> Path:
        """Where a local copy of this set lives below a mirror root."""
        parts = [*self.path.split("/"), *([self.config] if self.config else []), self.split]
        return Path(root).joinpath(*parts)


def _classic(name: str, config: str, split: str = "test") -> DatasetSpec:
    return DatasetSpec(name, CLASSIC_PATH, config, split, "classic")


def _public(name: str, config: str, split: str = "test") -> DatasetSpec:
    return DatasetSpec(name, PUBLIC_2026_PATH, config, split, "2026")


_SPECS = (
    _classic("ami", "ami"),
    _classic("earnings22", "earnings22"),
    _classic("gigaspeech", "gigaspeech"),
    _classic("librispeech_clean", "librispeech", "test.clean"),
    _classic("librispeech_other", "librispeech", "test.other"),
    _classic("spgispeech", "spgispeech"),
    _classic("tedlium", "tedlium"),
    _classic("voxpopuli", "voxpopuli"),
    _public("ami_cleaned", "ami_cleaned"),
    DatasetSpec("earnings22_cleaned_aa_chunked", EARNINGS_CHUNKED_PATH, "", "test", "2026", chunked=True),
    _public("gigaspeech_cleaned", "gigaspeech_cleaned"),
    _public("librispeech_clean_2026", "librispeech", "test.clean"),
    _public("librispeech_other_2026", "librispeech", "test.other"),
    _public("spgispeech_2026", "spgispeech"),
    _public("voxpopuli_cleaned_aa", "voxpopuli_cleaned_aa"),
)
REGISTRY: Mapping[str, DatasetSpec] = MappingProxyType({s.name: s for s in _SPECS})
GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "all": tuple(s.name for s in _SPECS if s.family == "classic"),
        "all-2026": tuple(s.name for s in _SPECS if s.family == "2026"),
    }
)


def expand(names: Iterable[str]) -> list[DatasetSpec]:
    """Specs for `--dataset` values (names or the groups `all` / `all-2026`), in order, each once.

    Raises:
        UsageError: an unknown name; the message lists the known ones.
    """
    specs: list[DatasetSpec] = []
    for name in names:
        members = GROUPS.get(name, (name,))
        for member in members:
            if member not in REGISTRY:
                known = ", ".join([*GROUPS, *REGISTRY])
                raise UsageError(f"unknown dataset {name!r}", hint=f"known names: {known}; or use --hf-dataset")
            if REGISTRY[member] not in specs:
                specs.append(REGISTRY[member])
    return specs


def open_spec(spec: DatasetSpec, *, mirror: Path | None = None, limit: int | None = None) -> HfSource:
    """Open a named set: the mirror copy when there is one, else the hub id (the HF cache when offline).

    Raises:
        OfflineAssetError: neither a mirror copy nor a cached / reachable hub copy; says how to get one.
    """
    extra = {"leaderboard": spec.to_dict()}
    if mirror is not None and spec.mirror_dir(mirror).exists():
        return open_hf(spec.mirror_dir(mirror), None, spec.split, limit=limit, name=spec.name, identity_extra=extra)
    try:
        return open_hf(spec.path, spec.config or None, spec.split, limit=limit, name=spec.name, identity_extra=extra)
    except OfflineAssetError as e:
        where = spec.mirror_dir(mirror) if mirror is not None else f"$SPEECHLM_BATCH_DATASETS/{spec.mirror_dir(Path())}"
        e.hint = f"{e.hint}. For --dataset {spec.name} a local copy is looked for at {where}"
        raise


def name_for(dataset_slug: str, config: str, split: str) -> str | None:
    """The registry name of a leaderboard file's dataset part (`path` with "/" -> "-"), if it is one."""
    for spec in REGISTRY.values():
        if (spec.path.replace("/", "-"), spec.config, spec.split) == (dataset_slug, config, split):
            return spec.name
    return None
