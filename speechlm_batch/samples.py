"""Real English speech for tests and demos, fetched from the package registries.

These machines reach only PyPI, Debian apt and npm, so the sample audio comes from packages there (facts in the
project's offline-assets notes, §2.4-2.7): Asterisk's English IVR prompts (Debian), pocketsphinx's LibriVox and "cards"
test clips (Debian) and whisper.cpp's JFK clip (inside the npm package nodejs-whisper). Each package is pinned
to one version and one sha256: they are small packages that can be withdrawn or rebuilt, and a silent change
would change every WER we report.

Downloads are cached in `fsutil.cache_dir()/downloads`; only the wavs the manifests reference are copied into
`manifests/audio/` (git-ignored) at their native sample rate. The manifests themselves are committed;
`--write-manifests` regenerates them, byte for byte the same from the same packages.

    python -m speechlm_batch.samples                     # fetch + unpack what the manifests need
    python -m speechlm_batch.samples --write-manifests   # also regenerate manifests/*.jsonl and README.md
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from speechlm_batch.errors import OfflineAssetError
from speechlm_batch.fsutil import atomic_write_text, cache_dir

MANIFESTS_DIR = Path(__file__).resolve().parent.parent / "manifests"
AUDIO_DIRNAME = "audio"
LONG_PROMPT_S = 30.0  # Whisper's window: longer prompts exercise the long-form path
DEMO_ASTERISK_STRIDE = 25  # every 25th short Asterisk prompt goes into the demo set


@dataclass(frozen=True, slots=True)
class Package:
    """One pinned registry artifact.

    Attributes:
        registry: "apt" (fetched with `apt-get download`) or "npm" (fetched with `npm pack`).
        name: package name in that registry.
        version: exact version.
        filename: the name the artifact is cached under.
        sha256: hex digest of the downloaded file.
        size_bytes: its size, for messages only.
    """

    registry: str
    name: str
    version: str
    filename: str
    sha256: str
    size_bytes: int

    @property
    def label(self) -> str:
        sep = "@" if self.registry == "npm" else "="
        return f"{self.registry} package {self.name}{sep}{self.version}"


ASTERISK_EN = Package(
    registry="apt",
    name="asterisk-core-sounds-en",
    version="1.6.1-1",
    filename="asterisk-core-sounds-en_1.6.1-1_all.deb",
    sha256="973e797d28e37fa6ca3c0a9d6fa717e77cf1268ae916bf09fd3503113cdffa50",
    size_bytes=22_844,
)
ASTERISK_EN_WAV = Package(
    registry="apt",
    name="asterisk-core-sounds-en-wav",
    version="1.6.1-1",
    filename="asterisk-core-sounds-en-wav_1.6.1-1_all.deb",
    sha256="2be3ea287d83299d143815fa804f11179a75b7affd4a758b98b55f5afc18a35d",
    size_bytes=18_272_864,
)
POCKETSPHINX_TESTDATA = Package(
    registry="apt",
    name="pocketsphinx-testdata",
    version="0.8+5prealpha+1-15",
    filename="pocketsphinx-testdata_0.8+5prealpha+1-15_all.deb",
    sha256="eaeb7a01d54f20b799d1a81ef110ec544b2cb47ea006614078220737a33019f0",
    size_bytes=1_822_580,
)
NODEJS_WHISPER = Package(
    registry="npm",
    name="nodejs-whisper",
    version="0.3.1",
    filename="nodejs-whisper-0.3.1.tgz",
    sha256="92041caf2b26c74b7f489fedf37bd093f216eebd61df512045ec2d19d0531d37",
    size_bytes=5_660_411,
)

_ASTERISK_SOUNDS = "usr/share/asterisk/sounds/en_US_f_Allison"
_ASTERISK_TEXT = "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
_SPHINX_DATA = "usr/share/pocketsphinx/test/data"
_JFK_WAV = "package/cpp/whisper.cpp/bindings/go/samples/jfk.wav"
_JFK_TEXT = "package/cpp/whisper.cpp/tests/parakeet-expected-jfk-output.txt"
_GONE_HINT = (
    "Check the network and the registry; a withdrawn package needs a new source pinned in speechlm_batch/samples.py."
)
_SPHINX_LINE = re.compile(r"^<s>(?P<text>.*)</s>\s*\((?P<id>[^()]+)\)\s*$")


# --------------------------------------------------------------------------- transcript parsers


def parse_asterisk_transcripts(text: str) -> dict[str, str]:
    """Parse Asterisk's `core-sounds-en.txt`: `name: text` lines; `;` comments and blank lines are skipped.

    Names may contain a folder (`digits/1`). The text is kept as written, only stripped at both ends.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        name, sep, said = line.partition(":")
        if sep:
            out[name.strip()] = said.strip()
    return out


def parse_sphinx_transcription(text: str) -> dict[str, str]:
    """Parse a Sphinx `transcription` file: `<s> words </s> (utterance-id)` per line -> {id: words}."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        match = _SPHINX_LINE.match(line.strip())
        if match:
            out[match["id"].strip()] = " ".join(match["text"].split())
    return out


# --------------------------------------------------------------------------- downloads


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify(package: Package, path: Path) -> None:
    """Raise OfflineAssetError unless `path` has the pinned sha256 of `package`."""
    actual = sha256_of(path)
    if actual != package.sha256:
        raise OfflineAssetError(
            f"{package.label}: sha256 {actual} differs from the pinned {package.sha256}",
            hint="The registry now serves a different file; check it and update the pin in speechlm_batch/samples.py.",
        )


def _run(cmd: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise OfflineAssetError(f"{cmd[0]} is not installed; it is needed to fetch the sample audio") from exc


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stderr + proc.stdout).strip().splitlines()
    return " | ".join(lines[-3:])


def _apt_download(package: Package, workdir: Path) -> Path:
    # A fresh machine may have empty apt lists: `apt-get update` once, then retry.
    cmd = ["apt-get", "download", f"{package.name}={package.version}"]
    proc = _run(cmd, workdir)
    if proc.returncode != 0:
        update = _run(["apt-get", "update"], workdir)
        if update.returncode != 0:
            raise OfflineAssetError(f"apt-get update failed while fetching {package.label}: {_tail(update)}")
        proc = _run(cmd, workdir)
    debs = sorted(workdir.glob("*.deb"))
    if proc.returncode != 0 or len(debs) != 1:
        raise OfflineAssetError(
            f"{package.label} could not be downloaded (gone from the archive?): {_tail(proc)}",
            hint=_GONE_HINT,
        )
    return debs[0]


def _npm_pack(package: Package, workdir: Path) -> Path:
    proc = _run(["npm", "pack", f"{package.name}@{package.version}"], workdir)
    tgzs = sorted(workdir.glob("*.tgz"))
    if proc.returncode != 0 or len(tgzs) != 1:
        raise OfflineAssetError(
            f"{package.label} could not be downloaded (unpublished?): {_tail(proc)}",
            hint=_GONE_HINT,
        )
    return tgzs[0]


def download(package: Package, downloads_dir: Path) -> Path:
    """Return the cached artifact of `package`, downloading it first when absent or corrupt.

    The file enters the cache only after its hash matched, so a cached file is always the pinned one.
    """
    target = downloads_dir / package.filename
    if target.is_file() and sha256_of(target) == package.sha256:
        return target
    downloads_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=downloads_dir) as tmp:
        fetch = _apt_download if package.registry == "apt" else _npm_pack
        got = fetch(package, Path(tmp))
        verify(package, got)
        os.replace(got, target)
    return target


# --------------------------------------------------------------------------- unpacking and clips


@dataclass(frozen=True, slots=True)
class Clip:
    """One utterance found in an unpacked package.

    Attributes:
        id: unique across all manifests, e.g. `asterisk/digits/1`.
        audio_filepath: where the wav goes, relative to the manifests folder (`audio/...`).
        text: the reference transcript exactly as the source gives it (outer whitespace stripped).
        unpacked: the wav inside the temporary unpacked tree.
    """

    id: str
    audio_filepath: str
    text: str
    unpacked: Path


def _unpack_debs(debs: Iterable[Path], tree: Path) -> None:
    for deb in debs:
        proc = _run(["dpkg-deb", "-x", str(deb), str(tree)], tree)
        if proc.returncode != 0:
            raise OfflineAssetError(f"dpkg-deb could not unpack {deb.name}: {_tail(proc)}")


def _unpack_tgz_members(tgz: Path, members: Iterable[str], tree: Path) -> None:
    # Only the named members: the package holds 1,862 files we do not need.
    with tarfile.open(tgz, "r:gz") as tar:
        for name in members:
            src = tar.extractfile(name)
            if src is None:
                raise OfflineAssetError(f"{tgz.name} has no file {name}")
            dest = tree / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(src.read())


def _collect_asterisk(tree: Path) -> list[Clip]:
    texts = parse_asterisk_transcripts(gzip.decompress((tree / _ASTERISK_TEXT).read_bytes()).decode("utf-8"))
    sounds = tree / _ASTERISK_SOUNDS
    clips = []
    for wav in sounds.rglob("*.wav"):
        name = wav.relative_to(sounds).with_suffix("").as_posix()
        # silence/N are silent fillers: nothing to transcribe, no point scoring them.
        if name.startswith("silence/") or name not in texts:
            continue
        clips.append(Clip(f"asterisk/{name}", f"{AUDIO_DIRNAME}/asterisk/{name}.wav", texts[name], wav))
    return sorted(clips, key=lambda c: c.id)


def _collect_sphinx(tree: Path, folder: str, transcription: str) -> list[Clip]:
    data = tree / _SPHINX_DATA / folder
    texts = parse_sphinx_transcription((data / transcription).read_text(encoding="utf-8"))
    clips = []
    for utt_id, text in sorted(texts.items()):
        wav = data / f"{utt_id}.wav"
        if wav.is_file():
            clips.append(Clip(f"{folder}/{utt_id}", f"{AUDIO_DIRNAME}/{folder}/{utt_id}.wav", text, wav))
    return clips


def _unpack_jfk(files: Sequence[Path], tree: Path) -> None:
    _unpack_tgz_members(files[0], (_JFK_WAV, _JFK_TEXT), tree)


def _collect_jfk(tree: Path) -> list[Clip]:
    text = (tree / _JFK_TEXT).read_text(encoding="utf-8").strip()
    return [Clip("jfk", f"{AUDIO_DIRNAME}/jfk/jfk.wav", text, tree / _JFK_WAV)]


@dataclass(frozen=True, slots=True)
class Source:
    """A group of packages that fills some folders under `audio/`.

    Attributes:
        name: short name for messages.
        packages: what to download.
        audio_folders: the folders under `audio/` whose files come from here (decides what a fetch needs).
        unpack: puts the needed parts of the downloaded files into a tree.
        collect: reads the clips out of that tree.
    """

    name: str
    packages: tuple[Package, ...]
    audio_folders: tuple[str, ...]
    unpack: Callable[[Sequence[Path], Path], None]
    collect: Callable[[Path], list[Clip]]


def _collect_pocketsphinx(tree: Path) -> list[Clip]:
    return _collect_sphinx(tree, "librivox", "transcription") + _collect_sphinx(tree, "cards", "cards.transcription")


SOURCES: tuple[Source, ...] = (
    Source("asterisk", (ASTERISK_EN, ASTERISK_EN_WAV), ("asterisk",), _unpack_debs, _collect_asterisk),
    Source("pocketsphinx", (POCKETSPHINX_TESTDATA,), ("librivox", "cards"), _unpack_debs, _collect_pocketsphinx),
    Source("jfk", (NODEJS_WHISPER,), ("jfk",), _unpack_jfk, _collect_jfk),
)


def _copy_atomic(src: Path, dest: Path) -> None:
    # temp + rename: an interrupted copy never leaves a short file that a later check would accept.
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def _unpack_source(
    source: Source, downloads_dir: Path, manifests_dir: Path, tree: Path, wanted: set[str] | None
) -> list[Clip]:
    """Download and unpack one source; copy its wavs that are missing (and wanted) into manifests/audio."""
    files = [download(p, downloads_dir) for p in source.packages]
    source.unpack(files, tree)
    clips = source.collect(tree)
    for clip in clips:
        dest = manifests_dir / clip.audio_filepath
        if (wanted is None or clip.audio_filepath in wanted) and not dest.is_file():
            _copy_atomic(clip.unpacked, dest)
    return clips


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One NeMo JSONL line; `audio_filepath` is relative to the manifest's folder."""

    id: str
    audio_filepath: str
    duration_s: float
    text: str

    def to_json(self) -> str:
        row = {"audio_filepath": self.audio_filepath, "duration": self.duration_s, "text": self.text, "id": self.id}
        return json.dumps(row, ensure_ascii=False)


def read_manifest(path: Path) -> list[ManifestRow]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            rows.append(ManifestRow(d["id"], d["audio_filepath"], float(d["duration"]), d["text"]))
    return rows


def referenced_audio(manifests_dir: Path) -> set[str]:
    """Every `audio_filepath` the committed manifests name."""
    return {row.audio_filepath for m in sorted(manifests_dir.glob("*.jsonl")) for row in read_manifest(m)}


def _duration_s(path: Path) -> float:
    import soundfile  # the project's audio reader; imported here so `--help` stays instant

    return round(soundfile.info(str(path)).duration, 3)


def build_manifests(clips: dict[str, list[Clip]], manifests_dir: Path) -> dict[str, list[ManifestRow]]:
    """Turn the collected clips into the named manifests (durations measured on the copied wavs)."""

    def rows(cs: Iterable[Clip]) -> list[ManifestRow]:
        return [ManifestRow(c.id, c.audio_filepath, _duration_s(manifests_dir / c.audio_filepath), c.text) for c in cs]

    pocket = clips["pocketsphinx"]
    asterisk = rows(clips["asterisk"])
    long_rows = [r for r in asterisk if r.duration_s > LONG_PROMPT_S]
    short_rows = [r for r in asterisk if r.duration_s <= LONG_PROMPT_S]
    jfk = rows(clips["jfk"])
    librivox = rows(c for c in pocket if c.id.startswith("librivox/"))
    return {
        "jfk": jfk,
        "librivox": librivox,
        "cards": rows(c for c in pocket if c.id.startswith("cards/")),
        "asterisk": asterisk,
        "asterisk-long": long_rows,
        # jfk + librivox + the long prompts (73.3, 31.1, 30.3 s) + a stride of short ones: about 3.6 min
        "demo": jfk + librivox + long_rows + short_rows[::DEMO_ASTERISK_STRIDE],
    }


_ABOUT = {
    "jfk": "JFK's inaugural address excerpt, `bindings/go/samples/jfk.wav` (16 kHz) from whisper.cpp as shipped in "
    "npm `nodejs-whisper@0.3.1`; reference from `tests/parakeet-expected-jfk-output.txt`. Public domain "
    "(US-government speech).",
    "librivox": "LibriVox *Sense and Sensibility* ch. 1 excerpts (16 kHz) from Debian `pocketsphinx-testdata` "
    "0.8+5prealpha+1-15, references from `librivox/transcription` (lower case, no punctuation; 0920 keeps the "
    "spoken disfluency). LibriVox recordings are public domain; the package is BSD-2.",
    "cards": "Playing-card phrases, `cards/00N.wav` (16 kHz) from Debian `pocketsphinx-testdata` "
    "0.8+5prealpha+1-15 with `cards.transcription`. BSD-2 (CMU / Alpha Cephei).",
    "asterisk": "Every Asterisk English IVR prompt (voice: Allison Smith; 8 kHz telephone band, one speaker) "
    "that has both a wav and a transcript, from Debian `asterisk-core-sounds-en-wav` and `asterisk-core-sounds-en` "
    "1.6.1-1 (`core-sounds-en.txt`); the `silence/N` fillers are left out, tone-only lines such as "
    "`[this is a simple beep tone]` are kept (scoring drops empty normalized references). CC-BY-SA-3.0 "
    "(one item CC-BY-3.0).",
    "asterisk-long": "The Asterisk prompts longer than 30 s (Whisper's window), for long-form tests. "
    "Same source and license as asterisk.jsonl (CC-BY-SA-3.0).",
    "demo": "Quick set for `make demo` on a small CPU: jfk + librivox + the 3 Asterisk prompts longer than "
    f"30 s (long-form path) + every {DEMO_ASTERISK_STRIDE}th Asterisk prompt of at most 30 s. "
    "Licenses as in the sets it draws from.",
}


def render_readme(manifests: dict[str, list[ManifestRow]]) -> str:
    parts = [
        "# Sample manifests",
        "",
        (
            "NeMo JSONL (`audio_filepath` relative to this folder, `duration` in s, `text` = the source's raw "
            "reference, `id`). The audio is not committed: `python -m speechlm_batch.samples` fetches the pinned "
            "packages (sha256-checked) and unpacks it into `manifests/audio/`; `--write-manifests` regenerates "
            "these files and this README."
        ),
        "",
    ]
    for name, rows in manifests.items():
        total_s = sum(r.duration_s for r in rows)
        head = f"**{name}.jsonl** — {len(rows)} clips, {total_s:.1f} s ({total_s / 60:.1f} min)."
        parts += [f"{head} {_ABOUT[name]}", ""]
    return "\n".join(parts)


def write_manifests(manifests: dict[str, list[ManifestRow]], manifests_dir: Path) -> None:
    for name, rows in manifests.items():
        atomic_write_text(manifests_dir / f"{name}.jsonl", "".join(r.to_json() + "\n" for r in rows))
    atomic_write_text(manifests_dir / "README.md", render_readme(manifests))


# --------------------------------------------------------------------------- entry points


@dataclass(frozen=True, slots=True)
class FetchReport:
    """What `fetch` did: which sources it unpacked and how many wavs are now in place."""

    sources_unpacked: tuple[str, ...]
    files_present: int


def _missing_by_source(manifests_dir: Path, wanted: set[str]) -> dict[str, set[str]]:
    missing = {p for p in wanted if not (manifests_dir / p).is_file()}
    out: dict[str, set[str]] = {}
    for source in SOURCES:
        prefixes = tuple(f"{AUDIO_DIRNAME}/{f}/" for f in source.audio_folders)
        mine = {p for p in missing if p.startswith(prefixes)}
        if mine:
            out[source.name] = mine
    return out


def fetch(manifests_dir: Path = MANIFESTS_DIR, downloads_dir: Path | None = None) -> FetchReport:
    """Put every wav the committed manifests reference into `manifests_dir/audio/`.

    Quick when all are present: nothing is downloaded or unpacked. Without manifests, unpacks every source.
    """
    downloads_dir = downloads_dir or cache_dir() / "downloads"
    wanted = referenced_audio(manifests_dir) if manifests_dir.is_dir() else set()
    # None = copy every clip of that source (no manifests yet to say which are needed)
    todo: dict[str, set[str] | None] = {s.name: None for s in SOURCES}
    if wanted:
        todo = dict(_missing_by_source(manifests_dir, wanted))
    for source in SOURCES:
        if source.name in todo:
            with tempfile.TemporaryDirectory(prefix="speechlm-samples-") as tmp:
                _unpack_source(source, downloads_dir, manifests_dir, Path(tmp), todo[source.name])
    left = _missing_by_source(manifests_dir, wanted)
    if left:
        first = min(p for ps in left.values() for p in ps)
        raise OfflineAssetError(f"{first} (and {sum(map(len, left.values())) - 1} more) not found in the packages")
    return FetchReport(tuple(todo), len(wanted))


def regenerate(manifests_dir: Path = MANIFESTS_DIR, downloads_dir: Path | None = None) -> dict[str, list[ManifestRow]]:
    """Unpack every source, copy all its clips, and rewrite the manifests and their README."""
    downloads_dir = downloads_dir or cache_dir() / "downloads"
    clips: dict[str, list[Clip]] = {}
    for source in SOURCES:
        with tempfile.TemporaryDirectory(prefix="speechlm-samples-") as tmp:
            clips[source.name] = _unpack_source(source, downloads_dir, manifests_dir, Path(tmp), None)
    manifests = build_manifests(clips, manifests_dir)
    write_manifests(manifests, manifests_dir)
    return manifests


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speechlm_batch.samples", description=__doc__.splitlines()[0])
    parser.add_argument("--write-manifests", action="store_true", help="also regenerate manifests/*.jsonl + README")
    parser.add_argument("--manifests-dir", type=Path, default=MANIFESTS_DIR)
    parser.add_argument("--downloads-dir", type=Path, default=None, help="default: <cache>/downloads")
    args = parser.parse_args(argv)
    try:
        if args.write_manifests:
            for name, rows in regenerate(args.manifests_dir, args.downloads_dir).items():
                print(f"{name}.jsonl: {len(rows)} clips, {sum(r.duration_s for r in rows):.1f} s")
        else:
            report = fetch(args.manifests_dir, args.downloads_dir)
            done = ", ".join(report.sources_unpacked) or "nothing (all present)"
            print(f"{report.files_present} wavs in {args.manifests_dir / AUDIO_DIRNAME}; unpacked: {done}")
    except OfflineAssetError as exc:
        print(f"error: {exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
