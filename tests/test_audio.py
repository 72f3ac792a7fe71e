"""audio.read / audio.split on small generated files: offsets, resampling, channels, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from speechlm_batch import audio
from speechlm_batch.types import Audio, ErrorKind, RowError, Utterance


def _utt(path, offset=0.0, duration=None, samples=None) -> Utterance:
    return Utterance(id="u", position=0, audio_filepath=str(path), row={}, offset_s=offset, duration_s=duration, audio=samples)


def _tone(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    mono = 0.5 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_resamples_to_model_rate(tmp_path, rate):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(rate, 2.0), rate)
    result = audio.read(_utt(path), 16000)
    assert isinstance(result, Audio)
    assert result.sample_rate == 16000
    assert abs(len(result.samples) - 32000) <= 2  # 2 s at 16 kHz
    assert result.samples.dtype == np.float32


def test_stereo_is_downmixed(tmp_path):
    path = tmp_path / "s.wav"
    sf.write(path, _tone(16000, 1.0, channels=2), 16000)
    result = audio.read(_utt(path), 16000)
    assert result.samples.ndim == 1 and len(result.samples) == 16000


def test_offset_and_duration_select_frames(tmp_path):
    path = tmp_path / "ramp.wav"
    ramp = np.linspace(-1, 1, 16000 * 4, dtype=np.float32)  # 4 s, value encodes position
    sf.write(path, ramp, 16000, subtype="FLOAT")
    result = audio.read(_utt(path, offset=1.0, duration=2.0), 16000)
    assert len(result.samples) == 32000
    assert result.samples[0] == pytest.approx(ramp[16000], abs=1e-6)
    assert result.samples[-1] == pytest.approx(ramp[47999], abs=1e-6)


def test_missing_unreadable_out_of_range(tmp_path):
    assert audio.read(_utt(tmp_path / "nope.wav"), 16000).kind is ErrorKind.MISSING_FILE
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    assert audio.read(_utt(junk), 16000).kind is ErrorKind.UNREADABLE
    path = tmp_path / "a.wav"
    sf.write(path, _tone(16000, 1.0), 16000)
    assert audio.read(_utt(path, offset=5.0), 16000).kind is ErrorKind.OUT_OF_RANGE
    assert audio.read(_utt(path, offset=0.5, duration=2.0), 16000).kind is ErrorKind.OUT_OF_RANGE


def test_empty_and_nan(tmp_path):
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    assert audio.read(_utt(empty), 16000).kind is ErrorKind.EMPTY_AUDIO
    bad = np.ones(1600, dtype=np.float32)
    bad[10] = np.nan
    result = audio.read(_utt("mem", samples=(bad, 16000)), 16000)
    assert isinstance(result, RowError) and result.kind is ErrorKind.BAD_SAMPLES


def test_in_memory_audio_is_resampled(tmp_path):
    result = audio.read(_utt("mem", samples=(_tone(8000, 1.0), 8000)), 16000)
    assert isinstance(result, Audio) and abs(len(result.samples) - 16000) <= 2


def test_split_long_audio_at_quiet_points():
    rate = 16000
    samples = _tone(rate, 70.0)
    samples[int(29.5 * rate) : int(29.7 * rate)] = 0.0  # a pause inside the search window of the first cut
    pieces = audio.split(Audio(samples, rate), 30.0, "u")
    assert [p.index for p in pieces] == [0, 1, 2] and all(p.count == 3 for p in pieces)
    assert sum(len(p.samples) for p in pieces) == len(samples)  # nothing dropped or overlapped
    assert all(p.duration_s <= 30.0 for p in pieces)
    assert 29.0 <= pieces[0].duration_s <= 29.7


def test_short_audio_is_one_piece():
    pieces = audio.split(Audio(np.zeros(16000, dtype=np.float32), 16000), 30.0, "u")
    assert len(pieces) == 1 and pieces[0].count == 1


def test_pieces_know_where_they_start():
    rate = 16000
    samples = _tone(rate, 70.0)
    pieces = audio.split(Audio(samples, rate), 30.0, "u")
    assert pieces[0].offset_s == 0.0
    for before, after in zip(pieces, pieces[1:]):
        assert after.offset_s == pytest.approx(before.offset_s + before.duration_s)
    assert pieces[-1].offset_s + pieces[-1].duration_s == pytest.approx(70.0)
