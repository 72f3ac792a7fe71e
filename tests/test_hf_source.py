"""sources.hf: local dataset layouts, transcript-column precedence, dropped rows, ids, lazy soundfile decoding."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from speechlm_batch import audio as audio_io
from speechlm_batch.errors import OfflineAssetError, UsageError
from speechlm_batch.sources import Source
from speechlm_batch.sources.hf import EncodedAudio, HfSource, find_text_column, keep_reference, open_hf, select_rows
from speechlm_batch.types import BadRow, ErrorKind, Utterance


def tone_bytes(seconds: float, rate: int = 8000, fmt: str = "WAV") -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate, format=fmt)
    return buf.getvalue()


def make_dataset(columns: dict, audio_seconds: list[float]):
    """A datasets.Dataset with an `Audio` column of embedded WAV bytes (8 kHz tones) plus `columns`."""
    from datasets import Audio, Dataset

    audio = [{"bytes": tone_bytes(s), "path": f"clip{i}.wav"} for i, s in enumerate(audio_seconds)]
    return Dataset.from_dict({"audio": audio, **columns}).cast_column("audio", Audio())


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """save_to_disk folder: 5 rows, one with an empty and one with an 'ignore' reference."""
    folder = tmp_path_factory.mktemp("hf") / "tiny_set"
    texts = ["Hello there.", "", "one two three", "ignore time segment in scoring", "[noise] Good bye"]
    ds = make_dataset(
        {"text": texts, "id": ["a", "b", "c", "d", "e"], "audio_length_s": [0.5, 0.6, 0.7, 0.8, 0.9]},
        [0.5, 0.6, 0.7, 0.8, 0.9],
    )
    ds.save_to_disk(str(folder))
    return folder


def test_transcript_column_precedence():
    assert find_text_column(["sentence", "text", "transcription"]) == "text"
    assert find_text_column(["transcription", "sentence"]) == "sentence"
    assert find_text_column(["transcript", "normalized_text"]) == "normalized_text"
    assert find_text_column(["audio", "transcription", "transcript"]) == "transcript"
    with pytest.raises(UsageError, match="no transcript column"):
        find_text_column(["audio", "label"])


def test_reference_filter_is_on_normalized_text():
    assert keep_reference("Hello.")
    assert not keep_reference("")
    assert not keep_reference("  Ignore time segment in scoring. ")  # normalizes to the marker
    assert not keep_reference("[laughter] (uh)")  # normalizes to empty
    assert not keep_reference(None)
    kept, scanned = select_rows(["a", "", "b", "c"], limit=2)
    assert (kept, scanned) == ([0, 2], 3)


def test_save_to_disk_rows_ids_and_drops(saved):
    source = open_hf(saved)
    assert isinstance(source, Source)
    assert source.name == "tiny_set"
    items = list(source)
    assert [u.id for u in items] == ["a", "c", "e"]
    assert [u.position for u in items] == [0, 1, 2]
    assert source.dropped_rows == 2 and len(source) == 3
    assert source.durations() == [0.5, 0.7, 0.9]
    first = items[0]
    assert first.text == "Hello there." and first.row["text"] == "Hello there."
    assert first.row["dataset_index"] == 0 and first.row["audio_filepath"] == "a"
    assert source.identity()["rows_dropped"] == 2
    assert list(source) == items  # re-iterable, same items


def test_audio_decodes_lazily_with_soundfile_and_resamples(saved):
    utt = next(iter(open_hf(saved)))
    samples, rate = utt.audio
    assert isinstance(samples, EncodedAudio) and rate == 8000  # nothing decoded yet
    decoded = audio_io.read(utt, 16000)
    assert decoded.sample_rate == 16000
    assert abs(decoded.duration_s - 0.5) < 0.01


def test_limit_counts_kept_rows(saved):
    source = open_hf(saved, limit=2)
    assert [u.id for u in source] == ["a", "c"]
    assert source.dropped_rows == 1  # only the rows read to find two usable ones


def test_sentence_column_without_id_uses_index(tmp_path):
    ds = make_dataset({"sentence": ["first one", "second one"], "transcription": ["x", "y"]}, [0.3, 0.4])
    ds.save_to_disk(str(tmp_path / "cv"))
    source = open_hf(tmp_path / "cv")
    items = list(source)
    assert source.text_column == "sentence"
    assert [(u.id, u.text) for u in items] == [("0", "first one"), ("1", "second one")]
    assert items[0].row["transcription"] == "x"  # other columns ride along unchanged
    assert source.durations() == [None, None]  # no duration column: sharding falls back to row counts


def test_duplicate_ids_stay_unique(tmp_path):
    ds = make_dataset({"text": ["a b", "c d"], "id": ["same", "same"]}, [0.2, 0.2])
    ds.save_to_disk(str(tmp_path / "dup"))
    assert [u.id for u in open_hf(tmp_path / "dup")] == ["same", "same#1"]


def test_unreadable_audio_is_a_bad_row(tmp_path):
    from datasets import Audio, Dataset

    audio = [{"bytes": b"not audio at all", "path": "x.wav"}, {"bytes": tone_bytes(0.2), "path": "y.wav"}]
    ds = Dataset.from_dict({"audio": audio, "text": ["x", "y"]}).cast_column("audio", Audio())
    ds.save_to_disk(str(tmp_path / "bad"))
    items = list(open_hf(tmp_path / "bad"))
    assert isinstance(items[0], BadRow) and items[0].error.kind is ErrorKind.UNREADABLE
    assert "bad[0]" in items[0].error.message
    assert isinstance(items[1], Utterance)


def test_parquet_file_and_folder(tmp_path):
    ds = make_dataset({"text": ["alpha", "beta"], "id": ["p1", "p2"]}, [0.3, 0.3])
    (tmp_path / "pq").mkdir()
    ds.to_parquet(str(tmp_path / "pq" / "test-00000-of-00001.parquet"))
    assert [u.id for u in open_hf(tmp_path / "pq" / "test-00000-of-00001.parquet")] == ["p1", "p2"]
    source = open_hf(tmp_path / "pq", split="test")
    assert [u.text for u in source] == ["alpha", "beta"]
    assert source.identity()["kind"] == "parquet"


def test_audio_folder_with_metadata(tmp_path):
    folder = tmp_path / "af"
    folder.mkdir()
    (folder / "one.flac").write_bytes(tone_bytes(0.4, fmt="FLAC"))
    (folder / "two.wav").write_bytes(tone_bytes(0.5))
    lines = [{"file_name": "one.flac", "transcription": "one"}, {"file_name": "two.wav", "transcription": "two"}]
    (folder / "metadata.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    items = list(open_hf(folder))
    assert [u.text for u in items] == ["one", "two"]
    assert items[0].audio is None and items[0].audio_filepath == str(folder / "one.flac")  # read as a file
    assert abs(audio_io.read(items[0], 16000).duration_s - 0.4) < 0.01
    (folder / "metadata.jsonl").unlink()
    (folder / "metadata.csv").write_text("file_name,sentence\none.flac,uno\nmissing.wav,dos\n")
    items = list(open_hf(folder))
    assert items[0].text == "uno"
    assert isinstance(items[1], BadRow) and items[1].error.kind is ErrorKind.MISSING_FILE


def test_not_a_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not a dataset folder"):
        open_hf(tmp_path / "empty")


def test_hub_id_offline_and_not_cached_names_dataset_and_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(OfflineAssetError) as info:
        open_hf("someone/not-cached-set", "cfg", "test")
    assert "someone/not-cached-set" in str(info.value)
    assert "huggingface-cli download --repo-type dataset someone/not-cached-set" in info.value.hint
    assert "save_to_disk" in info.value.hint


def test_source_is_usable_by_sharding_plan(saved):
    from speechlm_batch import runner, sharding

    plan = runner.plan_shard(open_hf(saved), sharding.ChunkSpec.parse("1/2"))
    assert plan.total_rows == 3 and list(plan.positions) in ([1, 2], [2])


def test_hf_source_repr_and_protocol(saved):
    source = open_hf(saved)
    assert isinstance(source, HfSource)
    assert "tiny_set" in repr(source)


def test_dataset_without_transcripts_is_transcribed_without_references(tmp_path):
    ds = make_dataset({"speaker": ["a", "b", "c"]}, [0.2, 0.3, 0.4])
    ds.save_to_disk(str(tmp_path / "unlabelled"))
    source = open_hf(tmp_path / "unlabelled", limit=2)
    items = list(source)
    assert source.text_column is None and source.dropped_rows == 0
    assert [(u.id, u.text, u.row["text"]) for u in items] == [("0", None, None), ("1", None, None)]


def test_a_shard_reads_only_its_own_rows_with_the_ids_of_a_whole_pass(tmp_path, monkeypatch):
    ds = make_dataset({"text": ["a", "b", "c", "d"], "id": ["x", "same", "same", "y"]}, [0.2, 0.2, 0.2, 0.2])
    ds.save_to_disk(str(tmp_path / "set"))
    source = open_hf(tmp_path / "set")
    whole = list(source)
    assert source.row_ids() == [u.id for u in whole] == ["x", "same", "same#2", "y"]
    built: list[int] = []
    original = HfSource._item

    def counting(self, row, index, position, seen):
        built.append(index)
        return original(self, row, index, position, seen)

    monkeypatch.setattr(HfSource, "_item", counting)
    shard = list(source.iter_positions(range(2, 4)))
    assert built == [2, 3]  # rows 0 and 1 (and their audio bytes) were never touched
    assert [(u.id, u.position) for u in shard] == [(u.id, u.position) for u in whole[2:]]
