"""The committed sample manifests and the sample fetcher's offline parts (no network here)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import pytest

from speechlm_batch import samples
from speechlm_batch.errors import OfflineAssetError

MANIFESTS = sorted(samples.MANIFESTS_DIR.glob("*.jsonl"))
EXPECTED = {"jfk": 1, "librivox": 5, "cards": 5, "asterisk-long": 3}
AUDIO_PRESENT = (samples.MANIFESTS_DIR / samples.AUDIO_DIRNAME).is_dir()


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_all_manifests_are_committed() -> None:
    names = {p.stem for p in MANIFESTS}
    assert {"jfk", "librivox", "cards", "asterisk", "asterisk-long", "demo"} <= names


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_rows_are_well_formed(path: Path) -> None:
    rows = _lines(path)
    assert rows, f"{path.name} is empty"
    for row in rows:
        assert set(row) == {"audio_filepath", "duration", "text", "id"}
        assert isinstance(row["id"], str) and row["id"]
        assert isinstance(row["text"], str) and row["text"].strip()
        assert isinstance(row["duration"], float) and row["duration"] > 0
        assert round(row["duration"], 3) == row["duration"]
        rel = PurePosixPath(row["audio_filepath"])
        assert not rel.is_absolute() and ".." not in rel.parts
        assert rel.parts[0] == "audio" and rel.suffix == ".wav"
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate ids"


@pytest.mark.parametrize(("name", "count"), sorted(EXPECTED.items()))
def test_manifest_sizes(name: str, count: int) -> None:
    assert len(_lines(samples.MANIFESTS_DIR / f"{name}.jsonl")) == count


def test_asterisk_sets() -> None:
    rows = _lines(samples.MANIFESTS_DIR / "asterisk.jsonl")
    ids = [r["id"] for r in rows]
    assert ids == sorted(ids)
    assert not any(i.startswith("asterisk/silence/") for i in ids)
    assert "asterisk/beep" in ids  # tone-only prompts stay in; scoring drops empty references
    long_ids = {r["id"] for r in rows if r["duration"] > 30}
    assert long_ids == {r["id"] for r in _lines(samples.MANIFESTS_DIR / "asterisk-long.jsonl")}
    assert max(r["duration"] for r in rows) == pytest.approx(73.3, abs=0.1)


def test_demo_is_a_few_minutes_and_includes_the_long_prompt() -> None:
    rows = _lines(samples.MANIFESTS_DIR / "demo.jsonl")
    total_s = sum(r["duration"] for r in rows)
    assert 180 <= total_s <= 240
    ids = {r["id"] for r in rows}
    assert {"jfk", "asterisk/demo-instruct"} <= ids
    assert sum(i.startswith("librivox/") for i in ids) == 5


@pytest.mark.skipif(not AUDIO_PRESENT, reason="manifests/audio absent: run `python -m speechlm_batch.samples`")
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_audio_files_match_the_manifest(path: Path) -> None:
    soundfile = pytest.importorskip("soundfile")
    for row in _lines(path):
        wav = path.parent / row["audio_filepath"]
        assert wav.is_file(), f"{wav} missing"
        assert soundfile.info(str(wav)).duration == pytest.approx(row["duration"], abs=0.01)


def test_parse_asterisk_transcripts() -> None:
    text = (
        "; Core Asterisk Sounds in English\n"
        "\n"
        "agent-pass: Please enter your password followed by the pound key.\n"
        "beep: [this is a simple beep tone]\n"
        "digits/1: one\n"
        "at-tone: At the tone, the time will be: exactly...  \n"
    )
    assert samples.parse_asterisk_transcripts(text) == {
        "agent-pass": "Please enter your password followed by the pound key.",
        "beep": "[this is a simple beep tone]",
        "digits/1": "one",
        "at-tone": "At the tone, the time will be: exactly...",
    }


def test_parse_sphinx_transcription() -> None:
    text = (
        "<s> he was not an ill disposed young man </s> (sense_and_sensibility_01_austen_64kb-0880)\n"
        "<s> ten of clubs  </s> (001)\n"
        "not a transcription line\n"
    )
    assert samples.parse_sphinx_transcription(text) == {
        "sense_and_sensibility_01_austen_64kb-0880": "he was not an ill disposed young man",
        "001": "ten of clubs",
    }


def test_verify_names_package_and_version_on_hash_mismatch(tmp_path: Path) -> None:
    bogus = tmp_path / samples.NODEJS_WHISPER.filename
    bogus.write_bytes(b"not the package")
    with pytest.raises(OfflineAssetError, match=r"nodejs-whisper@0\.3\.1.*differs"):
        samples.verify(samples.NODEJS_WHISPER, bogus)


def test_fetch_is_a_no_op_when_all_audio_is_present(tmp_path: Path) -> None:
    wav = tmp_path / "audio" / "jfk" / "jfk.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF")
    row = samples.ManifestRow("jfk", "audio/jfk/jfk.wav", 11.0, "x")
    (tmp_path / "jfk.jsonl").write_text(row.to_json() + "\n", encoding="utf-8")
    report = samples.fetch(tmp_path, downloads_dir=tmp_path / "never-used")
    assert report == samples.FetchReport(sources_unpacked=(), files_present=1)
    assert not (tmp_path / "never-used").exists()


def test_manifest_row_round_trips(tmp_path: Path) -> None:
    row = samples.ManifestRow("a/b", "audio/a/b.wav", 1.234, 'say "hi"')
    (tmp_path / "m.jsonl").write_text(row.to_json() + "\n", encoding="utf-8")
    assert samples.read_manifest(tmp_path / "m.jsonl") == [row]
