"""subtitles: rows grouped per audio file, collision-safe names, exact SRT / WebVTT text, the export files."""

from __future__ import annotations

import json

import pytest
import srt

from speechlm_batch.errors import UsageError
from speechlm_batch.subtitles import (
    Cue,
    SubtitleFormat,
    export,
    file_stems,
    group_rows,
    prediction_files,
    render,
    timestamp,
)

SRT, VTT = SubtitleFormat.srt, SubtitleFormat.vtt


def row(audio, text="hi", segments=None, offset=None, audio_s=2.0, rid=None, **extra):
    out = {"audio_filepath": audio, "pred_text": text, "_id": rid or f"{audio}@{offset}", "_audio_s": audio_s, **extra}
    if offset is not None:
        out["offset"] = offset
    if segments is not None:
        out["segments"] = [{"start_s": s, "end_s": e, "text": t} for s, e, t in segments]
    return out


@pytest.mark.parametrize(
    ("seconds", "srt_text", "vtt_text"),
    [
        (1.23, "00:00:01,230", "00:00:01.230"),
        (1.2299999, "00:00:01,230", "00:00:01.230"),  # rounded to the millisecond, not truncated
        (0.0, "00:00:00,000", "00:00:00.000"),
        (3723.456, "01:02:03,456", "01:02:03.456"),
        (59.9996, "00:01:00,000", "00:01:00.000"),
    ],
)
def test_timestamp_formats(seconds, srt_text, vtt_text):
    assert timestamp(seconds, SRT) == srt_text
    assert timestamp(seconds, VTT) == vtt_text


def test_srt_text_is_exact_and_parses():
    cues = [Cue(0.0, 2.5, "Hello there."), Cue(2.5, 4.02, "General Kenobi.")]
    text = render(cues, SRT)
    assert text == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n00:00:02,500 --> 00:00:04,020\nGeneral Kenobi.\n\n"
    )
    parsed = list(srt.parse(text))
    assert [(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in parsed] == [
        (0.0, 2.5, "Hello there."), (2.5, 4.02, "General Kenobi."),
    ]


def test_vtt_text_is_exact_and_escapes_markup():
    text = render([Cue(1.23, 3.0, "Tom & Jerry <3 -> ok"), Cue(3.0, 61.5, "line one\n\nline two")], VTT)
    assert text == (
        "WEBVTT\n\n"
        "1\n00:00:01.230 --> 00:00:03.000\nTom &amp; Jerry &lt;3 -&gt; ok\n\n"
        "2\n00:00:03.000 --> 00:01:01.500\nline one\nline two\n"
    )


def test_srt_keeps_cue_text_whole_but_drops_blank_lines():
    [parsed] = srt.parse(render([Cue(0, 1, "a {x} b \\N c\n\nd")], SRT))
    assert parsed.content == "a {x} b \\N c\nd"


def test_rows_of_one_file_share_a_track_on_its_timeline():
    rows = [
        row("talk.wav", offset=30.0, segments=[(0.0, 4.0, "second part")]),
        row("talk.wav", offset=0.0, segments=[(0.5, 3.0, "first"), (3.0, 29.0, "still first")]),
        row("other.wav", text="whole row", audio_s=7.5),  # no --timestamps: one cue over the row
        {"audio_filepath": "bad.wav", "pred_text": None, "error": {"kind": "missing_file"}, "_id": "x"},
    ]
    grouped = group_rows(rows)
    assert [t.audio for t in grouped.tracks] == ["talk.wav", "other.wav"]
    talk, other = grouped.tracks
    assert [(c.start_s, c.end_s, c.text) for c in talk.cues] == [
        (0.5, 3.0, "first"), (3.0, 29.0, "still first"), (30.0, 34.0, "second part"),
    ]
    assert [(c.start_s, c.end_s, c.text) for c in other.cues] == [(0.0, 7.5, "whole row")]
    assert (grouped.rows_timed, grouped.rows_untimed, grouped.rows_failed) == (2, 1, 1)


def test_empty_segment_texts_make_no_cues_and_audio_key_is_configurable():
    grouped = group_rows([row("x", segments=[(0, 1, "  "), (1, 2, " ok ")], path="clips/a.wav")], audio_key="path")
    [track] = grouped.tracks
    assert track.audio == "clips/a.wav" and [c.text for c in track.cues] == ["ok"]


def test_file_stems_are_unique_and_short():
    names = file_stems(["/data/a/x.wav", "/data/b/x.wav", "/data/a/y.flac", "rel/z.wav"])
    assert names == {"/data/a/x.wav": "a__x", "/data/b/x.wav": "b__x", "/data/a/y.flac": "y", "rel/z.wav": "z"}


def test_file_stems_fall_back_to_extension_then_number():
    names = file_stems(["a/x.wav", "a/x.flac", "a/X.wav", "../a/x.wav"])
    assert len(set(n.casefold() for n in names.values())) == 4
    assert names["a/x.flac"].endswith("x.flac")  # the extension tells it apart from a/x.wav
    assert all("/" not in n and not n.startswith("..") for n in names.values())


def test_export_writes_one_file_per_audio(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        row("/d/a/talk.wav", segments=[(0.0, 1.5, "Hello."), (1.5, 3.0, "Bye.")]),
        row("/d/b/talk.wav", segments=[(0.0, 2.0, "Other talk.")]),
    ]
    (run / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = export(run, run / "subtitles", SRT)
    assert sorted(p.name for p in done.files) == ["a__talk.srt", "b__talk.srt"]
    parsed = list(srt.parse((run / "subtitles" / "a__talk.srt").read_text()))
    assert [s.content for s in parsed] == ["Hello.", "Bye."]
    vtt = export(run / "predictions.jsonl", tmp_path / "vtt", VTT)
    assert (tmp_path / "vtt" / "b__talk.vtt").read_text().startswith("WEBVTT\n\n1\n00:00:00.000 --> 00:00:02.000\n")
    assert len(vtt.files) == 2


def test_prediction_files_reads_unmerged_chunks_and_says_when_none(tmp_path):
    for k in (1, 0):
        (tmp_path / f"predictions.chunk-000{k}-of-0002.jsonl").write_text("")
    assert [p.name for p in prediction_files(tmp_path)] == [
        "predictions.chunk-0000-of-0002.jsonl", "predictions.chunk-0001-of-0002.jsonl",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no predictions.jsonl"):
        prediction_files(tmp_path / "empty")
