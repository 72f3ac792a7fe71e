"""sources.leaderboard: the named sets, the groups, mirror lookup and the offline message."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_hf_source import make_dataset

from speechlm_batch import leaderboard_files
from speechlm_batch.errors import OfflineAssetError, UsageError
from speechlm_batch.sources import leaderboard as lb


def test_classic_eight_and_2026_set():
    classic = lb.expand(["all-classic"])
    assert [s.name for s in classic] == [
        "ami", "earnings22", "gigaspeech", "librispeech_clean",
        "librispeech_other", "spgispeech", "tedlium", "voxpopuli",
    ]
    assert {s.path for s in classic} == {"hf-audio/esb-datasets-test-only-sorted"}
    clean = lb.REGISTRY["librispeech_clean"]
    assert (clean.config, clean.split) == ("librispeech", "test.clean")
    assert lb.REGISTRY["librispeech_other"].split == "test.other"
    new = lb.expand(["all"])
    assert new == lb.expand(["all-2026"])
    assert len(new) == 7 and {s.family for s in new} == {"2026"}
    configs = {(s.path, s.config, s.split) for s in new}
    assert ("hf-audio/open-asr-leaderboard", "ami_cleaned", "test") in configs
    assert ("hf-audio/open-asr-leaderboard", "voxpopuli_cleaned_aa", "test") in configs
    assert ("hf-audio/open-asr-leaderboard", "librispeech", "test.other") in configs
    chunked = [s for s in new if s.chunked]
    assert [(s.path, s.config) for s in chunked] == [("ArtificialAnalysis/Earnings22-Cleaned-AA-chunked", "")]
    assert not any(s.name == "tedlium" for s in new)


def test_longform_and_multilingual_tracks():
    assert [(s.path, s.config) for s in lb.expand(["longform"])] == [
        ("hf-audio/asr-leaderboard-longform", "earnings21"),
        ("hf-audio/asr-leaderboard-longform", "earnings22"),
        ("hf-audio/asr-leaderboard-longform", "tedlium"),
    ]
    assert lb.REGISTRY["coraal_atl"].path == "bezzam/coraal" and lb.REGISTRY["coraal_atl"].config == "ATL"
    # 13 multilingual columns on the board: de 2, fr 3, it 3, es 3, pt 2
    multilingual = [s for s in lb.REGISTRY.values() if s.family == "multilingual"]
    assert len(multilingual) == 13
    fr = lb.expand(["multilingual"], language="fr")
    assert [(s.config, s.language) for s in fr] == [("fleurs_fr", "fr"), ("mcv_fr", "fr"), ("mls_fr", "fr")]
    assert [s.name for s in lb.expand(["multilingual-pt"])] == ["fleurs_pt", "mls_pt"]
    assert {s.path for s in fr} == {"hf-audio/open-asr-leaderboard-multilingual-datasets"}
    with pytest.raises(UsageError, match="no multilingual sets for --language en"):
        lb.expand(["multilingual"])


def test_expand_dedupes_keeps_order_and_rejects_unknown():
    assert [s.name for s in lb.expand(["tedlium", "ami", "tedlium"])] == ["tedlium", "ami"]
    with pytest.raises(UsageError, match="unknown dataset 'amii'") as info:
        lb.expand(["amii"])
    assert "all-2026" in info.value.hint


def test_leaderboard_file_names_round_trip():
    ami = lb.REGISTRY["ami"]
    name = leaderboard_files.leaderboard_filename("openai/whisper-base", ami.path, ami.config, ami.split)
    assert name == "MODEL_openai-whisper-base_DATASET_hf-audio-esb-datasets-test-only-sorted_ami_test.jsonl"
    parsed = leaderboard_files.parse_leaderboard_filename(name)
    assert lb.name_for(parsed.dataset_path, parsed.config, parsed.split) == "ami"
    e22 = lb.REGISTRY["earnings22_cleaned_aa_chunked"]
    name = leaderboard_files.leaderboard_filename("m", e22.path, e22.config, e22.split)
    assert name == "MODEL_m_DATASET_ArtificialAnalysis-Earnings22-Cleaned-AA-chunked__test.jsonl"
    parsed = leaderboard_files.parse_leaderboard_filename(name)
    assert lb.name_for(parsed.dataset_path, parsed.config, parsed.split) == e22.name
    assert lb.name_for("x", "y", "z") is None


def test_mirror_layout(tmp_path):
    assert lb.REGISTRY["librispeech_other"].mirror_dir(tmp_path) == (
        tmp_path / "hf-audio" / "esb-datasets-test-only-sorted" / "librispeech" / "test.other"
    )
    assert lb.REGISTRY["earnings22_cleaned_aa_chunked"].mirror_dir(tmp_path) == (
        tmp_path / "ArtificialAnalysis" / "Earnings22-Cleaned-AA-chunked" / "test"
    )


def test_open_spec_reads_the_mirror_copy(tmp_path):
    spec = lb.REGISTRY["ami"]
    make_dataset({"text": ["hello", "world"], "id": ["m1", "m2"]}, [0.2, 0.2]).save_to_disk(
        str(spec.mirror_dir(tmp_path))
    )
    source = lb.open_spec(spec, mirror=tmp_path, limit=1)
    assert source.name == "ami"
    assert [u.id for u in source] == ["m1"]
    assert source.identity()["leaderboard"]["config"] == "ami"


def test_open_spec_offline_error_says_where_to_put_a_copy(tmp_path, monkeypatch):
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(OfflineAssetError) as info:
        lb.open_spec(lb.REGISTRY["tedlium"], mirror=tmp_path)
    assert "hf-audio/esb-datasets-test-only-sorted" in str(info.value) and "tedlium" in str(info.value)
    assert str(Path(tmp_path, "hf-audio", "esb-datasets-test-only-sorted", "tedlium", "test")) in info.value.hint
    assert "huggingface-cli download" in info.value.hint


def test_chunked_set_without_references_says_how_to_prepare_it(tmp_path):
    spec = lb.REGISTRY["earnings22_cleaned_aa_chunked"]
    make_dataset({"parent_id": ["c"], "chunk_index": [0]}, [0.5]).save_to_disk(str(spec.mirror_dir(tmp_path)))
    with pytest.raises(UsageError, match="no reference text") as info:
        lb.open_spec(spec, mirror=tmp_path)
    assert "ArtificialAnalysis/Earnings22-Cleaned-AA" in info.value.hint and "parent_id" in info.value.hint
