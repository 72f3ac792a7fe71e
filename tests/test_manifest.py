"""NeMo JSONL manifest reader: every line becomes exactly one Utterance or BadRow, never an exception."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speechlm_batch.errors import ManifestError
from speechlm_batch.sources import Source, open_manifest, source_len
from speechlm_batch.sources.manifest import count_rows, read_manifest, validate_manifest
from speechlm_batch.types import BadRow, ErrorKind, Utterance


def write_manifest(folder: Path, lines: list[str | bytes | dict], name: str = "m.jsonl") -> Path:
    path = folder / name
    parts = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line, ensure_ascii=False)
        parts.append(line if isinstance(line, bytes) else line.encode("utf-8"))
    path.write_bytes(b"\n".join(parts) + b"\n")
    return path


def only(path: Path) -> Utterance | BadRow:
    (item,) = list(read_manifest(path))
    return item


def test_relative_path_resolved_against_manifest_folder_absolute_kept(tmp_path):
    sub = tmp_path / "data"
    sub.mkdir()
    path = write_manifest(sub, [{"audio_filepath": "wav/a.wav"}, {"audio_filepath": "/abs/b.wav"}])
    a, b = read_manifest(path)
    assert a.audio_filepath == str(sub.absolute() / "wav" / "a.wav")
    assert b.audio_filepath == "/abs/b.wav"


def test_fields_parsed_and_row_kept_as_is(tmp_path):
    row = {"audio_filepath": "a.wav", "offset": 1, "duration": 2.5, "text": "hi", "speaker": 7}
    item = only(write_manifest(tmp_path, [row]))
    assert isinstance(item, Utterance)
    assert (item.offset_s, item.duration_s, item.text) == (1.0, 2.5, "hi")
    assert dict(item.row) == row
    assert item.position == 0


def test_defaults_when_optional_fields_absent_or_null(tmp_path):
    item = only(write_manifest(tmp_path, [{"audio_filepath": "a.wav", "duration": None, "text": None}]))
    assert isinstance(item, Utterance)
    assert (item.offset_s, item.duration_s, item.text) == (0.0, None, None)


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"audio_filepath": "a.wav", "offset": "1"}, "offset"),
        ({"audio_filepath": "a.wav", "offset": -0.5}, "offset"),
        ({"audio_filepath": "a.wav", "offset": True}, "offset"),
        ({"audio_filepath": "a.wav", "duration": 0}, "duration"),
        ({"audio_filepath": "a.wav", "duration": [1]}, "duration"),
        ({"audio_filepath": "a.wav", "text": 5}, "text"),
        ({"audio_filepath": 5}, "audio_filepath"),
        ({"audio_filepath": ""}, "audio_filepath"),
        ({"text": "no audio"}, "audio_filepath"),
        ({"audio_filepath": "a.wav", "id": {"x": 1}}, "id"),
    ],
)
def test_wrong_field_is_bad_row_naming_file_line_and_field(tmp_path, row, field):
    path = write_manifest(tmp_path, ["", row])  # a blank first line: the row is on line 2
    item = only(path)
    assert isinstance(item, BadRow)
    assert item.error.kind is ErrorKind.BAD_ROW
    assert item.error.message.startswith(f"{path}:2: ")
    assert repr(field) in item.error.message
    assert item.raw == json.dumps(row)
    assert item.id == "L2" and item.position == 0


def test_nan_duration_is_bad(tmp_path):
    item = only(write_manifest(tmp_path, ['{"audio_filepath": "a.wav", "duration": NaN}']))
    assert isinstance(item, BadRow) and "'duration'" in item.error.message


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('[{"audio_filepath": "a.wav"}]', "expected a JSON object, got an array"),
        ('"a.wav"', "expected a JSON object, got a string"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_non_object_lines_are_bad_rows(tmp_path, line, expected):
    path = write_manifest(tmp_path, [{"audio_filepath": "ok.wav"}, line])
    ok, bad = read_manifest(path)
    assert isinstance(ok, Utterance)
    assert isinstance(bad, BadRow)
    assert bad.error.message.startswith(f"{path}:2: {expected}")


def test_non_utf8_line_is_bad_row_and_the_next_line_still_reads(tmp_path):
    path = write_manifest(tmp_path, [b'{"audio_filepath": "\xff\xfe.wav"}', {"audio_filepath": "b.wav"}])
    bad, ok = read_manifest(path)
    assert isinstance(bad, BadRow)
    assert bad.error.kind is ErrorKind.BAD_ROW
    assert bad.error.message == f"{path}:1: not valid UTF-8 (byte 0xff at column 21)"
    assert "\\xff" in bad.raw
    assert isinstance(ok, Utterance) and ok.position == 1


def test_odd_unicode_text_kept_as_is(tmp_path):
    text = "Zoë 🎉 \u200b\u2028 مرحبا e\u0301 \U0001f3fb"
    item = only(write_manifest(tmp_path, [{"audio_filepath": "ü/ä.wav", "text": text}]))
    assert isinstance(item, Utterance)
    assert item.text == text
    assert item.audio_filepath.endswith("ü/ä.wav")


def test_utf8_bom_on_first_line_is_ignored(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"audio_filepath": "a.wav"}\n')
    assert isinstance(only(path), Utterance)


def test_ids_from_row_or_line_number_and_duplicates(tmp_path):
    path = write_manifest(
        tmp_path,
        [
            {"id": "u1", "audio_filepath": "a.wav"},
            "",
            {"audio_filepath": "b.wav"},  # line 3
            {"id": 7, "audio_filepath": "c.wav"},
            {"id": "u1", "audio_filepath": "d.wav"},  # line 5: duplicate
            {"id": "L3", "audio_filepath": "e.wav"},  # line 6: collides with line 3's line-number id
        ],
    )
    items = list(read_manifest(path))
    assert [i.id for i in items[:3]] == ["u1", "L3", "7"]
    dup, collide = items[3], items[4]
    assert isinstance(dup, BadRow) and dup.error.kind is ErrorKind.DUPLICATE_ID
    assert dup.error.message == f"{path}:5: id 'u1' was already used by an earlier row"
    assert dup.id == "L5"
    assert isinstance(collide, BadRow) and collide.error.kind is ErrorKind.DUPLICATE_ID
    assert [i.position for i in items] == [0, 1, 2, 3, 4]
    assert len({i.id for i in items}) == len(items)


def test_bad_row_id_never_collides(tmp_path):
    # Line 1 claims "L2", so line 2 (broken) must get another unique id.
    path = write_manifest(tmp_path, [{"id": "L2", "audio_filepath": "a.wav"}, "{broken"])
    first, second = read_manifest(path)
    assert first.id == "L2"
    assert isinstance(second, BadRow) and second.id == "L2.1"


def test_blank_lines_skipped_and_counted_in_line_numbers(tmp_path):
    path = write_manifest(tmp_path, ["", "  \t", {"audio_filepath": "a.wav"}, "\r", "{bad"])
    items = list(read_manifest(path))
    assert [i.position for i in items] == [0, 1]
    assert items[0].id == "L3"
    assert items[1].error.message.startswith(f"{path}:5:")
    assert count_rows(path) == 2


def test_crlf_line_endings(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'{"audio_filepath": "a.wav"}\r\n{"audio_filepath": "b.wav"}\r\n')
    items = list(read_manifest(path))
    assert all(isinstance(i, Utterance) for i in items) and len(items) == 2


def test_last_line_without_newline(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"audio_filepath": "a.wav"}\n{"audio_filepath": "b.wav"}')
    assert [i.audio_filepath[-5:] for i in read_manifest(path)] == ["a.wav", "b.wav"]
    assert count_rows(path) == 2


def test_validate_manifest_lists_bad_rows_in_order(tmp_path):
    path = write_manifest(tmp_path, [{"audio_filepath": "a.wav"}, "{x", {"audio_filepath": "a.wav", "id": "L1"}])
    bad = validate_manifest(path)
    assert [b.error.kind for b in bad] == [ErrorKind.BAD_ROW, ErrorKind.DUPLICATE_ID]
    assert validate_manifest(write_manifest(tmp_path, [{"audio_filepath": "a.wav"}], "ok.jsonl")) == []


def test_reader_is_lazy(tmp_path):
    path = write_manifest(tmp_path, [{"audio_filepath": "a.wav"}, {"audio_filepath": "b.wav"}])
    items = read_manifest(path)
    first = next(items)
    # Appending after the first row was read is seen: lines are read one at a time, not up front.
    with path.open("ab") as f:
        f.write(b'{"audio_filepath": "c.wav"}\n')
    assert first.id == "L1"
    assert len(list(items)) == 2


def test_open_manifest_source(tmp_path):
    path = write_manifest(tmp_path, [{"audio_filepath": "a.wav"}, "", {"audio_filepath": "b.wav"}], "dev.jsonl")
    source = open_manifest(path)
    assert isinstance(source, Source)
    assert source.name == "dev"
    assert source_len(source) == 2
    assert [i.id for i in source] == [i.id for i in source] == ["L1", "L3"]  # re-iterable


def test_open_manifest_missing_or_folder(tmp_path):
    with pytest.raises(ManifestError, match="no such file"):
        open_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="folder"):
        open_manifest(tmp_path)


def test_source_len_none_without_len():
    class Stream:
        name = "s"

        def __iter__(self):
            return iter(())

    assert source_len(Stream()) is None


_json_rows = st.dictionaries(
    st.sampled_from(["audio_filepath", "offset", "duration", "text", "id", "x"]),
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True), st.text(max_size=5)),
).map(lambda row: json.dumps(row).encode())
_lines = st.lists(
    st.one_of(
        st.text().map(lambda s: s.encode("utf-8", errors="surrogatepass")),
        st.binary(),
        _json_rows,
        st.sampled_from([b"", b" ", b"\r", b"\t \x0b\x0c"]),
    ).map(lambda b: b.replace(b"\n", b"")),
    max_size=20,
)


@settings(max_examples=200, deadline=None)
@given(lines=_lines, trailing_newline=st.booleans())
def test_property_one_item_per_non_blank_line_never_raises(lines, trailing_newline):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.jsonl"
        path.write_bytes(b"\n".join(lines) + (b"\n" if trailing_newline and lines else b""))
        items = list(read_manifest(path))
        non_blank = [line for line in lines if line.strip()]
        assert len(items) == len(non_blank) == count_rows(path)
        assert all(isinstance(i, Utterance | BadRow) for i in items)
        assert [i.position for i in items] == list(range(len(items)))
        assert len({i.id for i in items}) == len(items)
        for item in items:
            if isinstance(item, BadRow):
                assert item.error.message.startswith(f"{path}:")
