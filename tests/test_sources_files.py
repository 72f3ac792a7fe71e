"""Inputs without a manifest (folders, lists of paths), manifests with other keys, and `open_input`'s dispatch."""

from __future__ import annotations

import io
import json
import sys

import pytest

from speechlm_batch.errors import UsageError
from speechlm_batch.sources import FilesSource, ManifestSource, open_input
from speechlm_batch.types import BadRow


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_is_searched_recursively_by_extension(tmp_path):
    for name in ("b.wav", "sub/a.FLAC", "sub/deeper/c.mp3", "notes.txt", "sub/img.png"):
        _touch(tmp_path / "rec" / name)
    source = open_input(str(tmp_path / "rec"))
    assert isinstance(source, FilesSource)
    items = list(source)
    assert [u.id for u in items] == ["b.wav", "sub/a.FLAC", "sub/deeper/c.mp3"]
    assert [u.position for u in items] == [0, 1, 2]
    assert items[1].audio_filepath == str(tmp_path / "rec" / "sub" / "a.FLAC") and items[1].text is None


def test_empty_folder_and_missing_path_are_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no audio files"):
        open_input(str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="no such file"):
        open_input(str(tmp_path / "nope.jsonl"))


def test_list_of_paths_relative_to_the_list_with_comments_and_duplicates(tmp_path):
    listing = tmp_path / "files.txt"
    listing.write_text("# my clips\nclips/a.wav\n\n/abs/b.wav\nclips/a.wav\n")
    items = list(open_input(str(listing)))
    assert [i.id for i in items[:2]] == ["clips/a.wav", "/abs/b.wav"]
    assert items[0].audio_filepath == str(tmp_path / "clips" / "a.wav")
    assert isinstance(items[2], BadRow) and items[2].error.kind == "duplicate_id"


def test_manifest_with_other_keys_copies_the_reference_to_text(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"path": "a.wav", "sentence": "hello"}) + "\n" + json.dumps({"sentence": "x"}) + "\n")
    source = open_input(str(manifest), ("path", "sentence"))
    assert isinstance(source, ManifestSource)
    good, bad = list(source)
    assert good.audio_filepath == str(tmp_path / "a.wav") and good.text == "hello" and good.row["text"] == "hello"
    assert isinstance(bad, BadRow) and "'path' is missing" in bad.error.message


def test_stdin_manifest_is_copied_so_it_can_be_read_twice(tmp_path, monkeypatch):
    lines = json.dumps({"audio_filepath": "/x/a.wav", "text": "hi"}) + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines.encode())))
    source = open_input("-", stdin_copy=tmp_path / "out" / "stdin.jsonl")
    assert [u.text for u in source] == ["hi"] and [u.text for u in source] == ["hi"]
    assert (tmp_path / "out" / "stdin.jsonl").read_text() == lines
