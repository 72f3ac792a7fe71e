"""One settings object per run, each default declared once.

The CLI builds a `RunSettings` from its options and passes it down whole; `report.json` embeds it, and
`fingerprint()` (the part that changes transcripts) guards resume against mixing settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_MODEL = "whisper-base"
DEFAULT_LANGUAGE = "en"
DEFAULT_TASK_PROMPT = "Transcribe the following:"  # NeMo Speech LM task prompt (NeMo-Skills backend default)
DEFAULT_AUDIO_PLACEHOLDER = "<|audio|>"
CPU_KV_CACHE_GIB = 2.0  # on CPU vLLM otherwise reserves a share of system RAM
# torch/OpenMP threads per process when the engine runs on a GPU. The host CPU only renders requests there;
# with one thread per core (32) a Whisper engine's processes burnt 24.6 cores, with 4 they used 5.8 and ran
# 15 % faster, and two engines on two GPUs scaled 1.80x instead of 0.82x (2x H200, docs/benchmarks.md).
GPU_HOST_THREADS = 4
# Front-end worker processes when --frontend-workers is not given, on a GPU machine (CPU builds: 0, the
# in-process path). An H200 prototype peaked at 6 workers computing the log-mel on the GPU: each worker is
# one more CUDA context time-slicing the GPU (docs/benchmarks.md).
GPU_FRONTEND_WORKERS_MAX = 6


@dataclass(frozen=True)
class EngineSettings:
    """How vLLM is started. `None` means vLLM's own default for this platform."""

    model: str = DEFAULT_MODEL  # alias, local folder or hub id; resolved by models.store before the engine starts
    dtype: str = "auto"  # "auto": on CPU bfloat16 where native (AVX512-BF16/AMX) else float32; GPU: the checkpoint's
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None  # for Whisper also the encoder budget: 1500 tokens per clip
    gpu_memory_utilization: float = 0.9
    kv_cache_gib: float | None = None  # CPU: defaults to CPU_KV_CACHE_GIB
    tensor_parallel_size: int = 1
    # None: eager on CPU (compiling adds ~30 s of start-up there), compiled + CUDA graphs on GPU (measured on an
    # H200: eager Whisper ran at 0.77x of transformers' speed, compiled at 1.07x; docs/benchmarks.md).
    enforce_eager: bool | None = None
    trust_remote_code: bool = False
    plugin: str | None = None  # VLLM_PLUGINS value, set before vLLM is imported
    hf_overrides: Mapping[str, Any] | None = None
    tokenizer: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class DecodeSettings:
    """What the model is asked and how text is generated: everything here changes transcripts."""

    family: str | None = None  # adapter family; None = chosen from the model's architecture
    language: str = DEFAULT_LANGUAGE
    prompt: str = DEFAULT_TASK_PROMPT  # task prompt for chat-style speech LLMs
    audio_placeholder: str = DEFAULT_AUDIO_PLACEHOLDER
    temperature: float = 0.0  # greedy
    max_tokens: int | None = None  # None = from the audio duration (see adapters.base.max_tokens_for)
    tokens_per_s: float = 12.0  # runaway guard budget: generous for speech (~3 words/s)
    collapse_loops: bool = False  # remove n-gram repetition loops from the output (counted in the report)


@dataclass(frozen=True)
class RunSettings:
    """Everything one `transcribe` / `eval` run needs besides its input."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    window_rows: int = 256  # rows decoded and sent to the engine at once; memory is bounded by this
    decode_workers: int = 2  # threads decoding / resampling the next window while the engine runs
    # Processes that read, resample and render requests ahead of the engine (speechlm_batch.frontend).
    # None: chosen from the machine (0 on CPU builds, up to GPU_FRONTEND_WORKERS_MAX on GPUs); 0: in-process.
    frontend_workers: int | None = None
    features_device: str | None = None  # "cpu" | "cuda": where the log-mel is computed; None: the adapter's choice
    sort_by_duration: bool = True  # longest first inside a window: fuller batches
    strict: bool = False  # manifest problems are fatal before the engine starts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self, resolved_model: str) -> str:
        """Hash of what changes transcripts: resume refuses to mix rows made under another fingerprint."""
        payload = {"model": resolved_model, "dtype": self.engine.dtype, "decode": asdict(self.decode)}
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
