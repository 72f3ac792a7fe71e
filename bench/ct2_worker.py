"""faster-whisper (CTranslate2) baseline; runs in its own venv, so it imports neither torch nor speechlm_batch.

    VENV_CT2/bin/python bench/ct2_worker.py JOB.json RESULT.json

`BatchedInferencePipeline` batches the chunks of one input, not separate files, so all clips are joined
into one array and `clip_timestamps` marks one chunk per clip. Each clip is zero-padded to 30 s first:
faster-whisper pads short inputs' *features* with zeros, which reads as noise and makes greedy
no-timestamp decoding stop early (../shared/docs/cpu-baselines.md pitfall 10; SYSTRAN/faster-whisper#1084).
Padded audio gives each clip exactly the 30 s window the other engines see.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 30 * SAMPLE_RATE


def load_audio(corpus: Path) -> tuple[list[np.ndarray], float]:
    flat = np.load(corpus / "audio16k.npy", mmap_mode="r")
    offsets = np.load(corpus / "offsets.npy")
    audio = [np.array(flat[offsets[i] : offsets[i + 1]]) for i in range(len(offsets) - 1)]
    return audio, sum(len(a) for a in audio) / SAMPLE_RATE


def transcribe(pipe, audio: list[np.ndarray], batch: int, language: str | None) -> list[str]:
    joined = np.zeros(WINDOW * len(audio), dtype=np.float32)
    stamps = []
    for i, a in enumerate(audio):
        joined[i * WINDOW : i * WINDOW + len(a)] = a[:WINDOW]
        stamps.append({"start": i * 30.0, "end": (i + 1) * 30.0})
    segments, _ = pipe.transcribe(joined, clip_timestamps=stamps, batch_size=batch, beam_size=1,
                                  without_timestamps=True, language=language, condition_on_previous_text=False,
                                  vad_filter=False, temperature=0.0)
    texts = [""] * len(audio)
    for seg in segments:
        i = min(int(round(seg.start / 30.0)), len(audio) - 1)  # each chunk starts on its clip's 30 s slot
        texts[i] = (texts[i] + " " + seg.text).strip()
    return texts


def main(argv: list[str]) -> None:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    start = time.perf_counter()
    model = WhisperModel(job["model"], device="cpu", compute_type=job["compute_type"],
                         cpu_threads=os.cpu_count() or 1, num_workers=1)
    pipe = BatchedInferencePipeline(model)
    load_s = time.perf_counter() - start
    audio, audio_s = load_audio(Path(job["corpus"]))
    language = "en" if model.model.is_multilingual else None
    transcribe(pipe, audio[:2], job["batch"], language)  # warm-up
    started, t0 = time.time(), time.perf_counter()
    hyps = transcribe(pipe, audio, job["batch"], language)
    phase = {"name": f"{job['compute_type']}-b{job['batch']}", "started": started, "ended": time.time(),
             "wall_s": time.perf_counter() - t0, "hyps": hyps, "clips": len(audio), "audio_s": audio_s,
             "extra": {"batch": job["batch"], "compute_type": job["compute_type"], "pad30": True}}
    Path(argv[1]).write_text(json.dumps({"load_s": load_s, "phases": [phase]}), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
