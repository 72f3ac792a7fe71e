"""The Open ASR Leaderboard's named test sets, and where a local copy of each is looked for.

Families (say which one a number comes from; docs: leaderboard-and-peers.md §1.1 and the leaderboard README):
    * "2026": the current public English set from `hf-audio/open-asr-leaderboard` (cleaned AMI / GigaSpeech
      / VoxPopuli, LibriSpeech, SPGISpeech) plus `ArtificialAnalysis/Earnings22-Cleaned-AA-chunked`, whose
      chunk predictions are joined per call (`parent_id`, by `chunk_index`) before scoring; TED-LIUM is gone.
      `--dataset all` (or `all-2026`) runs these seven.
    * "classic" (July 2024 - July 2026): eight English sets from `hf-audio/esb-datasets-test-only-sorted`;
      `--dataset all-classic`.
    * "longform": `hf-audio/asr-leaderboard-longform` (earnings21, earnings22, tedlium), `--dataset longform`;
      the CORAAL subsets of `bezzam/coraal` by name (coraal_atl, ...).
    * "multilingual": `hf-audio/open-asr-leaderboard-multilingual-datasets`, FLEURS / MCV / MLS in de, fr,
      it, es, pt (config `{set}_{language}`), scored with that language's normalizer. `--dataset multilingual`
      runs the sets of `--language`; `multilingual-de` ... name one language's sets.

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

Family = Literal["classic", "2026", "longform", "multilingual"]
CLASSIC_PATH = "hf-audio/esb-datasets-test-only-sorted"
PUBLIC_2026_PATH = "hf-audio/open-asr-leaderboard"
EARNINGS_CHUNKED_PATH = "ArtificialAnalysis/Earnings22-Cleaned-AA-chunked"
EARNINGS_PARENT_PATH = "ArtificialAnalysis/Earnings22-Cleaned-AA"  # the calls' reference transcripts
LONGFORM_PATH = "hf-audio/asr-leaderboard-longform"
CORAAL_PATH = "bezzam/coraal"
CORAAL_SUBSETS = ("ATL", "DCA", "DCB", "DTA", "LES", "PRV", "ROC", "VLD")
MULTILINGUAL_PATH = "hf-audio/open-asr-leaderboard-multilingual-datasets"
# Which multilingual sets each language has on the board (upstream eval_utils `ML_LANG_DATASETS`).
MULTILINGUAL_SETS = {
    "de": ("fleurs", "mcv"),
    "fr": ("fleurs", "mcv", "mls"),
    "it": ("fleurs", "mcv", "mls"),
    "es": ("fleurs", "mcv", "mls"),
    "pt": ("fleurs", "mls"),
}


@dataclass(frozen=True)
class DatasetSpec:
    """One named leaderboard set.

    Attributes:
        name: what `--dataset` takes and reports show.
        path: the hub dataset id.
        config: the dataset config; "" for a dataset without configs (its leaderboard file then reads
            `..._DATASET_{path}__{split}.jsonl`, as upstream writes it).
        split: the split.
        family: "classic", "2026", "longform" or "multilingual".
        chunked: rows are chunks of longer recordings, joined per `parent_id` before scoring.
        language: the spoken language, which picks the normalizer.
    """

    name: str
    path: str
    config: str
    split: str
    family: Family
    chunked: bool = False
    language: str = "en"

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
    _public("ami_cleaned", "ami_cleaned"),
    DatasetSpec("earnings22_cleaned_aa_chunked", EARNINGS_CHUNKED_PATH, "", "test", "2026", chunked=True),
    _public("gigaspeech_cleaned", "gigaspeech_cleaned"),
    _public("librispeech_clean_2026", "librispeech", "test.clean"),
    _public("librispeech_other_2026", "librispeech", "test.other"),
    _public("spgispeech_2026", "spgispeech"),
    _public("voxpopuli_cleaned_aa", "voxpopuli_cleaned_aa"),
    _classic("ami", "ami"),
    _classic("earnings22", "earnings22"),
    _classic("gigaspeech", "gigaspeech"),
    _classic("librispeech_clean", "librispeech", "test.clean"),
    _classic("librispeech_other", "librispeech", "test.other"),
    _classic("spgispeech", "spgispeech"),
    _classic("tedlium", "tedlium"),
    _classic("voxpopuli", "voxpopuli"),
    *(DatasetSpec(f"{c}_longform", LONGFORM_PATH, c, "test", "longform") for c in ("earnings21", "earnings22", "tedlium")),
    *(DatasetSpec(f"coraal_{sub.lower()}", CORAAL_PATH, sub, "test", "longform") for sub in CORAAL_SUBSETS),
    *(
        DatasetSpec(f"{name}_{lang}", MULTILINGUAL_PATH, f"{name}_{lang}", "test", "multilingual", language=lang)
        for lang, names in MULTILINGUAL_SETS.items()
        for name in names
    ),
)
REGISTRY: Mapping[str, DatasetSpec] = MappingProxyType({s.name: s for s in _SPECS})
_PUBLIC = tuple(s.name for s in _SPECS if s.family == "2026")
GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "all": _PUBLIC,
        "all-2026": _PUBLIC,
        "all-classic": tuple(s.name for s in _SPECS if s.family == "classic"),
        "longform": tuple(f"{c}_longform" for c in ("earnings21", "earnings22", "tedlium")),
        "multilingual": (),  # the sets of --language, filled in by `expand`
        **{f"multilingual-{lang}": tuple(f"{n}_{lang}" for n in names) for lang, names in MULTILINGUAL_SETS.items()},
    }
)


def expand(names: Iterable[str], language: str = "en") -> list[DatasetSpec]:
    """Specs for `--dataset` values (names or groups), in order, each once; `multilingual` = `language`'s sets.

    Raises:
        UsageError: an unknown name (the message lists the known ones), or `multilingual` for a language the
            board has no sets in.
    """
    specs: list[DatasetSpec] = []
    for name in names:
        members = GROUPS.get(name, (name,))
        if name == "multilingual":
            members = GROUPS.get(f"multilingual-{language}", ())
            if not members:
                langs = ", ".join(MULTILINGUAL_SETS)
                raise UsageError(f"no multilingual sets for --language {language}", hint=f"the board has {langs}")
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
    where = spec.mirror_dir(mirror) if mirror is not None else f"$SPEECHLM_BATCH_DATASETS/{spec.mirror_dir(Path())}"
    if mirror is not None and spec.mirror_dir(mirror).exists():
        source = open_hf(spec.mirror_dir(mirror), None, spec.split, limit=limit, name=spec.name, identity_extra=extra)
    else:
        try:
            source = open_hf(
                spec.path, spec.config or None, spec.split, limit=limit, name=spec.name, identity_extra=extra
            )
        except OfflineAssetError as e:
            e.hint = f"{e.hint}. For --dataset {spec.name} a local copy is looked for at {where}"
            raise
    if spec.chunked and source.text_column is None:
        # The hub's chunked set keeps the call transcripts in a separate parent set; the leaderboard's loader
        # joins them by parent_id. Scoring without them would be no score at all, so say how to prepare it.
        raise UsageError(
            f"--dataset {spec.name}: the rows have no reference text",
            hint=f"prepare a copy at {where} whose rows carry parent_id, chunk_index and the call's reference "
            f"as `text` (from {EARNINGS_PARENT_PATH}, by id = parent_id)",
        )
    return source


def name_for(dataset_slug: str, config: str, split: str) -> str | None:
    """The registry name of a leaderboard file's dataset part (`path` with "/" -> "-"), if it is one."""
    for spec in REGISTRY.values():
        if (spec.path.replace("/", "-"), spec.config, spec.split) == (dataset_slug, config, split):
            return spec.name
    return None
