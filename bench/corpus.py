"""The benchmark's audio: a manifest's clips, replicated, written as files and pre-decoded once.

Replica r of every clip is its samples scaled by (1 - 1e-3 * r), written as a new file, so no cache can hit
on identical bytes and the end-to-end row really decodes every file. Replica 0 is the original file. All
rows read the same corpus: the end-to-end row reads `manifest.jsonl`; the others read `audio16k.npy`, the
same files decoded by `speechlm_batch.audio.read` (soundfile + soxr) before any timing starts.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
SCALE_PER_REPLICA = 1e-3


@dataclass(frozen=True)
class Clip:
    id: str
    path: str  # absolute
    text: str
    duration_s: float


@dataclass(frozen=True)
class Corpus:
    """A prepared corpus in `folder`: manifest.jsonl, clips.json, audio16k.npy + offsets.npy."""

    folder: Path
    clips: list[Clip]

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.jsonl"

    @property
    def audio_s(self) -> float:
        return sum(c.duration_s for c in self.clips)

    def audio(self) -> list[np.ndarray]:
        """Every clip's 16 kHz float32 samples, as views of one memory-mapped array (corpus order)."""
        flat = np.load(self.folder / "audio16k.npy", mmap_mode="r")
        offsets = np.load(self.folder / "offsets.npy")
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]

    @classmethod
    def load(cls, folder: Path) -> Corpus:
        data = json.loads((folder / "clips.json").read_text(encoding="utf-8"))
        return cls(folder, [Clip(**c) for c in data["clips"]])


def source_clips(manifest: Path, max_clip_s: float, every: int) -> list[Clip]:
    """Rows of a NeMo manifest with a reference and at most `max_clip_s` long; every `every`-th of them."""
    clips: list[Clip] = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if float(row.get("duration") or 0.0) > max_clip_s or not isinstance(row.get("text"), str):
            continue
        path = Path(row["audio_filepath"])
        path = path if path.is_absolute() else (manifest.parent / path)
        clips.append(Clip(str(row.get("id") or path.stem), str(path.resolve()), row["text"], float(row["duration"])))
    return clips[::every]


def prepare(manifest: Path, folder: Path, *, replicas: int, max_clip_s: float, every: int, workers: int) -> Corpus:
    """Build (or reuse, when the same recipe is already there) the replicated, pre-decoded corpus."""
    recipe = {"manifest": str(manifest.resolve()), "replicas": replicas, "max_clip_s": max_clip_s, "every": every}
    done = folder / "clips.json"
    if done.exists() and json.loads(done.read_text(encoding="utf-8")).get("recipe") == recipe:
        return Corpus.load(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = source_clips(manifest, max_clip_s, every)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        clips = [c for batch in pool.map(lambda r: _replica(base, r, folder), range(replicas)) for c in batch]
        decoded = list(pool.map(_decode, clips))
    clips = [Clip(c.id, c.path, c.text, len(a) / SAMPLE_RATE) for c, a in zip(clips, decoded)]
    offsets = np.cumsum([0] + [len(a) for a in decoded]).astype(np.int64)
    np.save(folder / "audio16k.npy", np.concatenate(decoded).astype(np.float32))
    np.save(folder / "offsets.npy", offsets)
    with (folder / "manifest.jsonl").open("w", encoding="utf-8") as f:
        for c in clips:
            f.write(json.dumps({"id": c.id, "audio_filepath": c.path, "text": c.text, "duration": c.duration_s}) + "\n")
    payload = {"recipe": recipe, "clips": [c.__dict__ for c in clips]}
    done.write_text(json.dumps(payload), encoding="utf-8")  # last: marks the folder complete
    return Corpus(folder, clips)


def _replica(base: list[Clip], replica: int, folder: Path) -> list[Clip]:
    if replica == 0:
        return [Clip(f"r0/{c.id}", c.path, c.text, c.duration_s) for c in base]
    import soundfile as sf

    out_dir = folder / "audio" / f"r{replica}"
    out_dir.mkdir(parents=True, exist_ok=True)
    clips: list[Clip] = []
    scale = 1.0 - SCALE_PER_REPLICA * replica
    for i, c in enumerate(base):
        data, rate = sf.read(c.path, dtype="float32", always_2d=True)
        info = sf.info(c.path)
        target = out_dir / f"{i:05d}.wav"
        subtype = info.subtype if info.subtype in ("PCM_16", "PCM_24", "FLOAT") else "PCM_16"
        sf.write(target, data * scale, rate, subtype=subtype)
        clips.append(Clip(f"r{replica}/{c.id}", str(target), c.text, c.duration_s))
    return clips


def _decode(clip: Clip) -> np.ndarray:
    from speechlm_batch import audio as audio_io
    from speechlm_batch.types import Audio, Utterance

    utt = Utterance(clip.id, 0, clip.path, {}, text=clip.text)
    result = audio_io.read(utt, SAMPLE_RATE)
    if not isinstance(result, Audio):
        raise RuntimeError(f"cannot decode {clip.path}: {result.message}")
    return result.samples
