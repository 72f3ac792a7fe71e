"""Every option `transcribe` and `eval` share, declared once, grouped into help panels.

`RUN_OPTIONS` is the one table: each `RunOption` names its parameter, type, default (taken from the settings
dataclasses, where each default is declared once), flags, help text, panel, and the `RunSettings` field it fills.
`@run_options("transcribe")` appends the options of that command to the command's signature (so Typer shows
and parses them) and hands the command one `RunArgs`: the built `RunSettings` plus the options that are not
settings (chunk, overwrite, log level).

Adding an option is one entry in `RUN_OPTIONS` (plus its settings field, when it fills one):

    RunOption("frontend_workers", int, R.frontend_workers, ("--frontend-workers",), ENGINE,
              "Processes computing features ahead of the engine.", target="run.frontend_workers"),

`commands=("transcribe",)` limits it to one command; `parse=` converts the raw value (JSON text, enum).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from speechlm_batch import settings as s
from speechlm_batch.adapters import FAMILIES
from speechlm_batch.errors import UsageError
from speechlm_batch.types import ErrorKind
from speechlm_batch.scoring import Scorer

E, D, R, S = s.EngineSettings(), s.DecodeSettings(), s.RunSettings(), s.ServerSettings()

# Help panels, in the order `--help` shows them.
INPUT = "Input"
MODEL = "Model"
DECODING = "Decoding"
ENGINE = "Engine (vLLM)"
SERVER = "Server mode (vllm serve)"
OUTPUT = "Output and logs"
SCORING = "Scoring"
SHARDING = "Sharding and resume"
PANELS = (INPUT, MODEL, DECODING, ENGINE, SERVER, OUTPUT, SCORING, SHARDING)
BOTH = ("transcribe", "eval")
SCORED = ("eval", "report")

Family = StrEnum("Family", {name: name for name in FAMILIES})  # --family choices come from the adapters


class Dtype(StrEnum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class FeaturesDevice(StrEnum):
    cpu = "cpu"
    cuda = "cuda"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


@dataclass(frozen=True)
class RunOption:
    """One command-line option shared by commands.

    Attributes:
        name: the parameter name Typer passes (and the key `RunArgs.values` holds).
        type: its Python type (Optional[...] when the default is None).
        default: its default; settings-backed options take it from the settings dataclass.
        flags: the option's names, long first.
        panel: the `--help` panel it is listed in.
        help: what it does, its unit, and what the default means.
        target: "engine.<f>", "decode.<f>", "server.<f>" or "run.<f>": the RunSettings field it fills; None
            for the rest.
        commands: the commands that take it.
        parse: turns the parsed value into the settings value (enum -> str, JSON text -> dict).
        extra: further typer.Option keyword arguments (min=, max=, count=, envvar=).
    """

    name: str
    type: Any
    default: Any
    flags: tuple[str, ...]
    panel: str
    help: str
    target: str | None = None
    commands: tuple[str, ...] = BOTH
    parse: Callable[[Any], Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def parameter(self) -> inspect.Parameter:
        option = typer.Option(*self.flags, help=self.help, rich_help_panel=self.panel, **self.extra)
        return inspect.Parameter(
            self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default, annotation=Annotated[self.type, option]
        )


def _value(choice: Any) -> Any:
    return choice.value if isinstance(choice, Enum) else choice


def parse_json_object(name: str) -> Callable[[str | None], dict | None]:
    def parse(value: str | None) -> dict | None:
        if value is None:
            return None
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise UsageError(f"{name} is not valid JSON: {e}") from e
        if not isinstance(parsed, dict):
            raise UsageError(f"{name} must be a JSON object, e.g. '{{\"architectures\": [\"X\"]}}'")
        return parsed

    return parse


def parse_retry_kinds(value: str | None) -> frozenset[str] | None:
    """--retry-failed: None (not asked), every kind (empty set), or the named error kinds."""
    if value is None:
        return None
    names = {part.strip() for part in value.split(",") if part.strip()}
    if names in ({"all"}, set()):
        return frozenset()
    known = {kind.value for kind in ErrorKind}
    unknown = sorted(names - known)
    if unknown:
        raise UsageError(f"--retry-failed: unknown error kind {', '.join(unknown)}; known: all, {', '.join(sorted(known))}")
    return frozenset(names)


RUN_OPTIONS: tuple[RunOption, ...] = (
    # -- input (transcribe's own input kinds)
    RunOption(
        "strict", bool, R.strict, ("--strict",), INPUT,
        "Refuse the whole input before the engine starts when any manifest row is bad (default: bad rows are "
        "written with an `error` and the rest is transcribed).",
        target="run.strict", commands=("transcribe",),
    ),
    RunOption(
        "audio_key", str, "audio_filepath", ("--audio-key",), INPUT,
        "Manifest field holding the audio path (NeMo's is audio_filepath).",
        commands=("transcribe",), extra={"metavar": "KEY"},
    ),
    RunOption(
        "text_key", str, "text", ("--text-key",), INPUT,
        "Manifest field holding the reference transcript (copied to `text` in the output, for WER).",
        commands=("transcribe",), extra={"metavar": "KEY"},
    ),
    # -- model
    RunOption(
        "model", str, E.model, ("--model", "-m"), MODEL,
        "Offline alias (whisper-base, whisper-tiny.en), a local Hugging Face folder, or a hub id (needs network "
        "or the HF cache).",
        target="engine.model", extra={"metavar": "NAME|DIR"},
    ),
    RunOption(
        "family", Optional[Family], D.family, ("--family",), MODEL,
        f"How the model is prompted: {', '.join(FAMILIES)}. Default: picked from the model's architecture "
        "(`speechlm-batch models` lists the families).",
        target="decode.family", parse=_value, extra={"metavar": "FAMILY"},
    ),
    RunOption(
        "tokenizer", Optional[str], E.tokenizer, ("--tokenizer",), MODEL,
        "Tokenizer folder or hub id. Default: the model's own.",
        target="engine.tokenizer", extra={"metavar": "NAME|DIR"},
    ),
    RunOption(
        "trust_remote_code", bool, E.trust_remote_code, ("--trust-remote-code",), MODEL,
        "Run Python code shipped with the model (needed by some hub models; off for safety).",
        target="engine.trust_remote_code",
    ),
    RunOption(
        "plugin", Optional[str], E.plugin, ("--plugin",), MODEL,
        "vLLM general plugin(s) to load, comma-separated (sets VLLM_PLUGINS), e.g. nemo_speechlm. Default: "
        "every installed plugin.",
        target="engine.plugin", extra={"metavar": "NAMES"},
    ),
    RunOption(
        "hf_overrides", Optional[str], None, ("--hf-overrides",), MODEL,
        "JSON object merged into the model's Hugging Face config, e.g. '{\"architectures\": [\"X\"]}'.",
        target="engine.hf_overrides", parse=parse_json_object("--hf-overrides"), extra={"metavar": "JSON"},
    ),
    # -- decoding
    RunOption(
        "language", str, D.language, ("--language", "-l"), DECODING,
        "Spoken language, ISO 639-1 code (en, de, fr...), for multilingual models; English-only checkpoints "
        "(*.en) ignore it.",
        target="decode.language", extra={"metavar": "CODE"},
    ),
    RunOption(
        "prompt", str, D.prompt, ("--prompt",), DECODING,
        "Task prompt for chat-style speech LLMs (families chat-audio, nemo-speechlm); Whisper ignores it.",
        target="decode.prompt", extra={"metavar": "TEXT"},
    ),
    RunOption(
        "audio_placeholder", str, D.audio_placeholder, ("--audio-placeholder",), DECODING,
        "Text standing for the audio in a chat prompt. Default: the model's own placeholder where it declares one.",
        target="decode.audio_placeholder", extra={"metavar": "TEXT"},
    ),
    RunOption(
        "max_tokens", Optional[int], D.max_tokens, ("--max-tokens",), DECODING,
        "Most tokens generated per audio piece. Default: ceil(tokens-per-second × piece seconds) + 16, never "
        "above what fits the context.",
        target="decode.max_tokens", extra={"metavar": "N"},
    ),
    RunOption(
        "tokens_per_second", float, D.tokens_per_s, ("--tokens-per-second",), DECODING,
        "Runaway-output guard: tokens allowed per second of audio when --max-tokens is not given (speech is "
        "about 3 words/s).",
        target="decode.tokens_per_s", extra={"metavar": "N"},
    ),
    RunOption(
        "collapse_loops", bool, D.collapse_loops, ("--collapse-loops",), DECODING,
        "Remove n-gram repetition loops from transcripts (counted per row as _loops_collapsed and in the report).",
        target="decode.collapse_loops",
    ),
    RunOption(
        "timestamps", bool, D.timestamps, ("--timestamps",), DECODING,
        "Add timed `segments` (start_s, end_s, text) to each row: from Whisper's timestamp tokens, else one per "
        "audio piece. `speechlm-batch export srt|vtt` makes subtitles of them.",
        target="decode.timestamps",
    ),
    # -- engine
    RunOption(
        "dtype", Dtype, Dtype(E.dtype), ("--dtype",), ENGINE,
        "Weights and activations: auto, float32, bfloat16 or float16. auto: on CPU bfloat16 where the CPU "
        "computes it natively (AVX512-BF16 / AMX), else float32; on GPU the checkpoint's dtype.",
        target="engine.dtype", parse=_value, extra={"metavar": "DTYPE"},
    ),
    RunOption(
        "max_model_len", Optional[int], E.max_model_len, ("--max-model-len",), ENGINE,
        "Context length in tokens (prompt + audio tokens + output). Default: the model's (448 for Whisper).",
        target="engine.max_model_len", extra={"metavar": "TOKENS"},
    ),
    RunOption(
        "max_num_seqs", Optional[int], E.max_num_seqs, ("--max-num-seqs",), ENGINE,
        "Most requests (audio pieces) the scheduler batches in one step. Default: vLLM's for the platform.",
        target="engine.max_num_seqs", extra={"metavar": "N"},
    ),
    RunOption(
        "max_num_batched_tokens", Optional[int], E.max_num_batched_tokens, ("--max-num-batched-tokens",), ENGINE,
        "Most tokens per scheduler step; for Whisper also the encoder budget (1500 tokens per 30 s clip). "
        "Default: vLLM's.",
        target="engine.max_num_batched_tokens", extra={"metavar": "TOKENS"},
    ),
    RunOption(
        "gpu_memory_utilization", float, E.gpu_memory_utilization, ("--gpu-memory-utilization",), ENGINE,
        "Fraction (0-1] of each GPU's memory vLLM may use for weights, activations and KV cache; lower it to "
        "run two engines on one GPU. Ignored on CPU.",
        target="engine.gpu_memory_utilization", extra={"metavar": "FRACTION"},
    ),
    RunOption(
        "kv_cache_gib", Optional[float], E.kv_cache_gib, ("--kv-cache-gib",), ENGINE,
        f"KV cache size in GiB. Default: {s.CPU_KV_CACHE_GIB:g} on CPU; on GPU whatever the GPU memory share "
        "leaves after weights and activations.",
        target="engine.kv_cache_gib", extra={"metavar": "GIB"},
    ),
    RunOption(
        "tensor_parallel_size", int, E.tensor_parallel_size, ("--tensor-parallel-size",), ENGINE,
        "GPUs one model is split across (for models too large for one GPU; for speed run --chunk per GPU).",
        target="engine.tensor_parallel_size", extra={"metavar": "GPUS"},
    ),
    RunOption(
        "enforce_eager", Optional[bool], E.enforce_eager, ("--enforce-eager/--compile",), ENGINE,
        "Eager: skip torch.compile and CUDA graphs (faster start, slower run). Default: eager on CPU, "
        "compiled on GPU.",
        target="engine.enforce_eager",
    ),
    RunOption(
        "window", int, R.window_rows, ("--window",), ENGINE,
        "Rows decoded, sent and written per window: bounds memory and what a kill can lose.",
        target="run.window_rows", extra={"metavar": "ROWS"},
    ),
    RunOption(
        "window_seconds", float, R.window_audio_s, ("--window-seconds",), ENGINE,
        "Most declared audio seconds (manifest `duration`) per window, besides --window rows: bounds memory "
        "for long files.",
        target="run.window_audio_s", extra={"metavar": "SECONDS"},
    ),
    RunOption(
        "decode_workers", int, R.decode_workers, ("--decode-workers",), ENGINE,
        "Threads decoding and resampling the next window's audio while the engine runs.",
        target="run.decode_workers", extra={"metavar": "N"},
    ),
    # -- server mode
    RunOption(
        "server", Optional[list[str]], None, ("--server",), SERVER,
        "Send rows to this running `vllm serve` (OpenAI-compatible base URL, repeatable) instead of starting an "
        "engine; --model is the served model name. Engine options then do not apply.",
        target="server.urls", parse=lambda urls: tuple(urls or ()), extra={"metavar": "URL"},
    ),
    RunOption(
        "concurrency", int, S.concurrency, ("--concurrency",), SERVER,
        "Requests in flight per server; rows wait in the client beyond that.",
        target="server.concurrency", extra={"metavar": "N", "min": 1},
    ),
    RunOption(
        "retries", int, S.retries, ("--retries",), SERVER,
        "Further attempts of a request after a connection error, timeout, 5xx or 429 (with backoff); then the "
        "row fails with kind `server` and a rerun redoes it.",
        target="server.retries", extra={"metavar": "N", "min": 0},
    ),
    RunOption(
        "request_timeout", float, S.request_timeout_s, ("--request-timeout",), SERVER,
        "Seconds one request may take, connect to last byte.",
        target="server.request_timeout_s", extra={"metavar": "S"},
    ),
    RunOption(
        "api_key_env", str, S.api_key_env, ("--api-key-env",), SERVER,
        "Environment variable holding the servers' API key (sent as a bearer token; never logged or written).",
        target="server.api_key_env", extra={"metavar": "VAR"},
    ),
    RunOption(
        "launch_server", bool, S.launch, ("--launch-server",), SERVER,
        "Start a local `vllm serve` for --model on a free port, run the job through it, stop it.",
        target="server.launch",
    ),
    RunOption(
        "api_server_count", int, S.api_server_count, ("--api-server-count",), SERVER,
        "API server processes in front of the one engine (vllm serve --api-server-count), with --launch-server.",
        target="server.api_server_count", extra={"metavar": "N", "min": 1},
    ),
    RunOption(
        "serve_args", str, S.serve_args, ("--serve-args",), SERVER,
        "Further vllm serve arguments for --launch-server, one quoted string, e.g. '--max-num-seqs 512'.",
        target="server.serve_args", extra={"metavar": "ARGS"},
    ),
    # -- front end
    RunOption(
        "frontend_workers", Optional[int], R.frontend_workers, ("--frontend-workers",), ENGINE,
        "Processes that decode, resample and render requests ahead of the engine; 0: in this process. "
        f"Default: 0 on CPU, on GPUs one per spare core up to {s.GPU_FRONTEND_WORKERS_MAX}.",
        target="run.frontend_workers", extra={"metavar": "N", "min": 0},
    ),
    RunOption(
        "features_device", Optional[FeaturesDevice], R.features_device, ("--features-device",), ENGINE,
        "Where audio features (Whisper's log-mel) are computed: cpu or cuda. Default: the engine's device.",
        target="run.features_device", parse=_value, extra={"metavar": "DEVICE"},
    ),
    RunOption(
        "full_features", bool, R.full_features, ("--full-features",), ENGINE,
        "Whisper with front-end workers: send all 3,000 log-mel frames of each clip. Default: without the "
        "padding frames, which the engine restores bit for bit.",
        target="run.full_features",
    ),
    # -- output and logs
    RunOption(
        "log_level", LogLevel, LogLevel.error, ("--log-level",), OUTPUT,
        "Lowest level of vLLM / torch log lines shown in the terminal: debug, info, warning or error. The full "
        "log (info and up; debug with --log-level debug) always goes to OUTPUT_DIR/logs/.",
        parse=_value, extra={"metavar": "LEVEL"},
    ),
    RunOption(
        "verbose", int, 0, ("--verbose", "-v"), OUTPUT,
        "Show more engine logs in the terminal: -v warnings, -vv info, -vvv debug (overrides --log-level).",
        extra={"count": True},
    ),
    # -- scoring
    RunOption(
        "scorer", Scorer, Scorer(R.scorer), ("--scorer",), SCORING,
        "How WER is scored: 2026 (the Open ASR Leaderboard now: its 2026 normalizer, kaldialign with compound "
        "merging) or classic (2024-2026 board: Whisper normalizer, jiwer). Non-English sets use the "
        "multilingual normalizer of their language.",
        target="run.scorer", commands=SCORED, parse=_value, extra={"metavar": "NAME"},
    ),
    # -- sharding and resume
    RunOption(
        "chunk", Optional[str], None, ("--chunk",), SHARDING,
        "Transcribe shard i of N (0-based, e.g. 3/16), balanced by audio duration. Default: from "
        "SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when set, else the whole input.", extra={"metavar": "I/N"},
    ),
    RunOption(
        "overwrite", bool, False, ("--overwrite",), SHARDING,
        "Delete this shard's earlier predictions and start over. Default: resume, skipping rows already written.",
    ),
    RunOption(
        "retry_failed", Optional[str], None, ("--retry-failed",), SHARDING,
        "Redo the rows that failed, keeping the others: all, or error kinds, comma-separated (e.g. "
        "engine,unreadable).",
        parse=parse_retry_kinds, extra={"metavar": "KINDS"},
    ),
)


@dataclass(frozen=True)
class RunArgs:
    """What a command gets from its shared options: the settings, plus the options that are not settings."""

    settings: s.RunSettings
    chunk: str | None
    overwrite: bool
    log_level: str  # effective terminal level for engine logs (after -v)
    values: Mapping[str, Any]  # every shared option's raw value, by parameter name


def options_for(command: str) -> tuple[RunOption, ...]:
    return tuple(o for o in RUN_OPTIONS if command in o.commands)


def build_settings(values: Mapping[str, Any]) -> s.RunSettings:
    """RunSettings from shared option values; fields whose option a command lacks keep their defaults."""
    parts: dict[str, dict[str, Any]] = {"engine": {}, "decode": {}, "server": {}, "run": {}}
    for option in RUN_OPTIONS:
        if option.target is None or option.name not in values:
            continue
        group, attr = option.target.split(".", 1)
        value = values[option.name]
        parts[group][attr] = option.parse(value) if option.parse else value
    return s.RunSettings(
        engine=s.EngineSettings(**parts["engine"]), decode=s.DecodeSettings(**parts["decode"]),
        server=s.ServerSettings(**parts["server"]), **parts["run"],
    )


def effective_log_level(level: Any, verbose: int) -> str:
    """-v / -vv / -vvv win over --log-level."""
    if verbose:
        return ("warning", "info", "debug")[min(verbose, 3) - 1]
    return _value(level) or LogLevel.error.value


def run_options(command: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: add `command`'s shared options to the function's signature; the function gets `run: RunArgs`."""
    shared = options_for(command)

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(func, eval_str=True)
        kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values() if p.name != "run"]
        params = sorted(kept + [o.parameter() for o in shared], key=_panel_rank)  # --help lists panels in order

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            values = {o.name: kwargs.pop(o.name) for o in shared}
            args = RunArgs(
                settings=build_settings(values),
                chunk=values.get("chunk"),
                overwrite=bool(values.get("overwrite")),
                log_level=effective_log_level(values.get("log_level"), values.get("verbose") or 0),
                values=values,
            )
            return func(**kwargs, run=args)

        wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def _panel_rank(param: inspect.Parameter) -> int:
    """Arguments and panel-less options first, then the panels in PANELS order (stable within a panel)."""
    extras = getattr(param.annotation, "__metadata__", ())
    panel = next((getattr(x, "rich_help_panel", None) for x in extras if hasattr(x, "rich_help_panel")), None)
    return PANELS.index(panel) + 1 if panel in PANELS else 0


def settings_fields() -> set[str]:
    """Every "group.field" a RunOption may fill (tests check each option's field exists)."""
    names = {f"engine.{f.name}" for f in fields(s.EngineSettings)}
    names |= {f"decode.{f.name}" for f in fields(s.DecodeSettings)}
    names |= {f"server.{f.name}" for f in fields(s.ServerSettings)}
    names |= {f"run.{f.name}" for f in fields(s.RunSettings) if f.name not in ("engine", "decode", "server")}
    return names


# Options of one command only (and of `slurm`), in the plain Annotated style.
OutputDirOpt = Annotated[
    Path, typer.Option("--output-dir", "-o", help="Folder for predictions, report and logs.", rich_help_panel=OUTPUT)
]
