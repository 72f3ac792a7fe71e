"""Audio front end: decode, downmix, resample, check, and split into model-sized pieces.

Decoding uses soundfile (libsndfile: wav, flac, ogg, mp3) rather than torchaudio / torchcodec, whose CUDA
builds fail to load beside torch+cpu and whose `datasets` 4.x integration breaks evaluations. Resampling uses
soxr (high quality, releases the GIL), so vLLM never resamples: every piece reaches it at the model's rate.
Files are read in blocks and resampled as a stream, so a one-hour 48 kHz file never sits in memory at its
native rate.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

from speechlm_batch.types import Audio, AudioPiece, ErrorKind, RowError, Seconds, Utterance

BLOCK_FRAMES = 1 << 18  # ~5 s at 48 kHz per read: bounded memory for long files
END_TOLERANCE_S = 0.05  # manifests round durations; allow a little past the end of the file
SPLIT_SEARCH_WINDOW_S = 1.0  # energy split: look for the quietest point in the last second of a piece
SILENCE_PEAK = 1e-4  # about -80 dBFS: below this a piece is digital silence, not quiet speech
SPLIT_ENERGY_WINDOW = 1600  # samples (100 ms at 16 kHz) per RMS window, as vLLM's server does


def read(utt: Utterance, sample_rate: int) -> Audio | RowError:
    """Decode one utterance to mono float32 at `sample_rate`, honouring offset and duration."""
    if utt.audio is not None:
        samples, native_rate = utt.audio
        audio = _from_array(samples, native_rate, sample_rate, utt)
    else:
        audio = _from_file(utt, sample_rate)
    if isinstance(audio, RowError):
        return audio
    return check(audio, utt.audio_filepath)


def check(audio: Audio, name: str) -> Audio | RowError:
    """Reject audio no model can use: no samples, or samples that are not finite."""
    if audio.samples.size == 0:
        return RowError(ErrorKind.EMPTY_AUDIO, f"{name}: no audio samples in the selected range")
    if not np.isfinite(audio.samples).all():
        return RowError(ErrorKind.BAD_SAMPLES, f"{name}: audio contains NaN or infinite samples")
    if is_silent(audio.samples):
        return RowError(ErrorKind.SILENT_AUDIO, f"{name}: audio is digital silence (peak below -80 dBFS)")
    return audio


def is_silent(samples: np.ndarray) -> bool:
    """True for digital silence. Models transcribe it as hallucinated words, so it is never sent to them."""
    return samples.size == 0 or float(np.max(np.abs(samples))) < SILENCE_PEAK


def _from_file(utt: Utterance, sample_rate: int) -> Audio | RowError:
    path = utt.audio_filepath
    if not os.path.isfile(path):
        return RowError(ErrorKind.MISSING_FILE, f"{path}: file not found")
    if os.path.getsize(path) == 0:  # libsndfile would call it "format not recognised": say what it is
        return RowError(ErrorKind.EMPTY_AUDIO, f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        return RowError(ErrorKind.UNREADABLE, f"{path}: cannot decode audio ({e})")
    span = _frame_span(utt, info.samplerate, info.frames)
    if isinstance(span, RowError):
        return span
    start, frames = span
    try:
        samples = _read_resampled(path, start, frames, info.samplerate, sample_rate)
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        return RowError(ErrorKind.UNREADABLE, f"{path}: decoding failed ({e})")
    return Audio(samples, sample_rate)


def _frame_span(utt: Utterance, native_rate: int, total_frames: int) -> tuple[int, int] | RowError:
    """Frames [start, start + count) selected by the row's offset and duration."""
    file_s = total_frames / native_rate if native_rate else 0.0
    if utt.offset_s > file_s + END_TOLERANCE_S or (utt.offset_s > 0 and utt.offset_s >= file_s):
        return RowError(
            ErrorKind.OUT_OF_RANGE, f"{utt.audio_filepath}: offset {utt.offset_s:.3f} s is past the end ({file_s:.3f} s)"
        )
    start = int(round(utt.offset_s * native_rate))
    if utt.duration_s is None:
        return start, total_frames - start
    if utt.offset_s + utt.duration_s > file_s + END_TOLERANCE_S:
        end_s = utt.offset_s + utt.duration_s
        return RowError(
            ErrorKind.OUT_OF_RANGE,
            f"{utt.audio_filepath}: offset + duration = {end_s:.3f} s is past the end of the file ({file_s:.3f} s)",
        )
    count = min(int(round(utt.duration_s * native_rate)), total_frames - start)
    return start, count


def _read_resampled(path: str, start: int, frames: int, native_rate: int, sample_rate: int) -> np.ndarray:
    """Read `frames` frames from `start` block by block, downmixing and resampling as a stream."""
    if frames <= 0:
        return np.zeros(0, dtype=np.float32)
    stream = None if native_rate == sample_rate else soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32")
    out: list[np.ndarray] = []
    blocks = sf.blocks(path, blocksize=BLOCK_FRAMES, start=start, frames=frames, dtype="float32", always_2d=True)
    for block in blocks:
        mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
        out.append(mono if stream is None else stream.resample_chunk(mono))
    if stream is not None:
        out.append(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True))
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, dtype=np.float32)


def _from_array(samples: np.ndarray, native_rate: int, sample_rate: int, utt: Utterance) -> Audio | RowError:
    """Audio that a source already decoded (HF datasets): downmix, cut offset/duration, resample."""
    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 2:  # (frames, channels) as soundfile returns it
        data = data.mean(axis=1, dtype=np.float32)
    span = _frame_span(utt, native_rate, len(data))
    if isinstance(span, RowError):
        return span
    start, count = span
    data = data[start : start + count]
    if native_rate != sample_rate and data.size:
        data = soxr.resample(data, native_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return Audio(data, sample_rate)


def split(audio: Audio, max_piece_s: Seconds, utterance_id: str) -> list[AudioPiece]:
    """Cut audio longer than the model's window into contiguous pieces at quiet points.

    Uses vLLM's own `split_audio` (the energy-based split its transcription server applies): each cut goes at
    the quietest 100 ms inside the last second before the limit, so nothing is dropped, overlapped or
    silently truncated.
    """
    if len(audio.samples) <= int(max_piece_s * audio.sample_rate):
        chunks = [audio.samples]
    else:
        from vllm.multimodal.audio import split_audio  # lazy: vLLM is heavy and only long audio needs it

        window = SPLIT_ENERGY_WINDOW * audio.sample_rate // 16000
        chunks = split_audio(audio.samples, audio.sample_rate, max_piece_s, SPLIT_SEARCH_WINDOW_S, window)
    count = len(chunks)
    starts = np.cumsum([0] + [len(c) for c in chunks[:-1]])  # contiguous: each piece starts where the last ended
    return [
        AudioPiece(utterance_id, i, count, c, audio.sample_rate, float(start) / audio.sample_rate)
        for i, (c, start) in enumerate(zip(chunks, starts, strict=True))
    ]
