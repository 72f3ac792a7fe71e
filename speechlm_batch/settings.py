"""One settings object per run, each default declared once.

The CLI builds a `RunSettings` from its options and passes it down whole; `report.json` embeds it, and
`fingerprint()` (the part that changes transcripts) guards resume and merge against mixing settings.
Every field is classified exactly once: `TRANSCRIPT_FIELDS` (fingerprinted) or `OPERATIONAL_FIELDS` (speed,
memory, how failures are handled); tests/test_settings.py fails when a new field is in neither.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DEFAULT_MODEL = "whisper-base"
DEFAULT_LANGUAGE = "en"
DEFAULT_SCORER = "2026"  # how WER is scored (speechlm_batch.scoring): the Open ASR Leaderboard's current rules
DEFAULT_TASK_PROMPT = "Transcribe the following:"  # NeMo Speech LM task prompt (NeMo-Skills backend default)
DEFAULT_AUDIO_PLACEHOLDER = "<|audio|>"
CPU_KV_CACHE_GIB = 2.0  # on CPU vLLM otherwise reserves a share of system RAM
# torch/OpenMP threads per process when the engine runs on a GPU. The host CPU only renders requests there;
# with one thread per core (32) a Whisper engine's processes burnt 24.6 cores, with 4 they used 5.8 and ran
# 15 % faster, and two engines on two GPUs scaled 1.80x instead of 0.82x (2x H200, docs/benchmarks.md).
GPU_HOST_THREADS = 4
# Front-end worker processes when --frontend-workers is not given, on a GPU machine (CPU builds: 0, the
# in-process path). Each worker is one more CUDA context time-slicing the GPU. On an H200 with 16 cores, 6 and
# 10 workers computing the log-mel on the GPU were within the run-to-run noise (each won one of two calls);
# 12 on the CPU were slower (docs/benchmarks.md). 6 holds less memory.
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
    max_tokens: int | None = None  # None = from the audio duration (see adapters.base.max_tokens_for)
    tokens_per_s: float = 12.0  # runaway guard budget: generous for speech (~3 words/s)
    collapse_loops: bool = False  # remove n-gram repetition loops from the output (counted in the report)
    # Timed segments per row: Whisper decodes with timestamp tokens (its prompt changes, so transcripts may);
    # other families get one segment per audio piece.
    timestamps: bool = False


@dataclass(frozen=True)
class ServerSettings:
    """Server mode: rows go to running `vllm serve` replicas (OpenAI-compatible) instead of a local engine."""

    urls: tuple[str, ...] = ()  # base URLs, e.g. http://node1:8000 (a trailing /v1 is accepted)
    concurrency: int = 16  # requests in flight per server; more wait in the client's queue
    retries: int = 3  # further attempts after a connection error, timeout, 5xx or 429, with backoff
    request_timeout_s: float = 300.0  # one request, connect to last byte
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the bearer token (read, never logged)
    launch: bool = False  # start a local `vllm serve` for the model, run, stop it
    api_server_count: int = 1  # `vllm serve --api-server-count`: API processes in front of one engine
    serve_args: str = ""  # further `vllm serve` arguments for --launch-server, one shell-quoted string

    @property
    def enabled(self) -> bool:
        return bool(self.urls) or self.launch


@dataclass(frozen=True)
class RunSettings:
    """Everything one `transcribe` / `eval` run needs besides its input."""

    engine: EngineSettings = field(default_factory=EngineSettings)
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    window_rows: int = 256  # rows decoded and sent to the engine at once; memory is bounded by this
    window_audio_s: float = 3600.0  # ... and by this much declared audio per window (rows with a duration)
    decode_workers: int = 2  # threads decoding / resampling the next window while the engine runs
    # Processes that read, resample and render requests ahead of the engine (speechlm_batch.frontend).
    # None: chosen from the machine (0 on CPU builds, up to GPU_FRONTEND_WORKERS_MAX on GPUs); 0: in-process.
    frontend_workers: int | None = None
    features_device: str | None = None  # "cpu" | "cuda": where the log-mel is computed; None: the adapter's choice
    # Whisper through front-end workers: log-mels cross without their 30 s padding, restored bit for bit in
    # the engine (speechlm_batch.whisper_features). True sends every frame, as vLLM's own render does.
    full_features: bool = False
    sort_by_duration: bool = True  # longest first inside a window: fuller batches
    strict: bool = False  # manifest problems are fatal before the engine starts
    scorer: str = DEFAULT_SCORER  # scoring only: not part of the fingerprint

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self, resolved_model: str, resolved_dtype: str | None = None) -> str:
        """Hash of what changes transcripts: resume and merge refuse to mix rows of two fingerprints.

        Args:
            resolved_model: the model folder the engine loads (aliases resolved).
            resolved_dtype: the dtype as the engine will run it (`engine.resolved_dtype`): "auto" is bf16 on
                one CPU and fp32 on another, so the setting alone would let their chunks merge.
        """
        payload = transcript_settings(self)
        payload["engine.model"] = resolved_model
        if resolved_dtype is not None:
            payload["engine.dtype"] = resolved_dtype
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Settings that change what text comes out: fingerprinted. Batch-shape knobs (max_num_seqs, windows) can move
# floating-point results by an ulp, like any batched run, but do not change what is computed: operational.
TRANSCRIPT_FIELDS = frozenset({
    "engine.model", "engine.dtype", "engine.max_model_len", "engine.trust_remote_code", "engine.plugin",
    "engine.hf_overrides", "engine.tokenizer", "engine.seed",
    "decode.family", "decode.language", "decode.prompt", "decode.audio_placeholder", "decode.max_tokens",
    "decode.tokens_per_s", "decode.collapse_loops", "decode.timestamps",
})
OPERATIONAL_FIELDS = frozenset({
    "engine.max_num_seqs", "engine.max_num_batched_tokens", "engine.gpu_memory_utilization",
    "engine.kv_cache_gib", "engine.tensor_parallel_size", "engine.enforce_eager",
    "window_rows", "window_audio_s", "decode_workers", "sort_by_duration", "strict",
    # where requests are rendered: predictions byte-identical on CPU (tests/e2e/test_frontend_pool.py); the
    # features' device changes float rounding only, as batch composition does
    "frontend_workers", "features_device", "full_features",
    "scorer",  # how finished rows are scored, not what they say: `report DIR --scorer` re-scores any run
    # server mode sends the same prompt to the same model, greedy: where rows go does not change their text
    "server.urls", "server.concurrency", "server.retries", "server.request_timeout_s", "server.api_key_env",
    "server.launch", "server.api_server_count", "server.serve_args",
})


def flat_settings(settings: RunSettings) -> dict[str, Any]:
    """Every leaf setting by dotted name ("engine.dtype", "window_rows")."""
    flat: dict[str, Any] = {}
    for key, value in asdict(settings).items():
        if isinstance(value, dict) and key in ("engine", "decode", "server"):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def transcript_settings(settings: RunSettings) -> dict[str, Any]:
    """The fingerprinted settings by dotted name."""
    return {k: v for k, v in flat_settings(settings).items() if k in TRANSCRIPT_FIELDS}
