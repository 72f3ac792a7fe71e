"""Where log lines go: the terminal shows what the user asked for, a file in the output folder gets the rest.

A clean CPU run of Whisper makes vLLM, torch and their children print about 200 lines (config dumps, OpenMP
binding, one warning per weight cast from float16, Triton notes). None of them needs the user, so by default
the terminal shows engine lines at `error` only, and `OUTPUT_DIR/logs/<stem>.log` gets everything at `info`
and up (`debug` with `--log-level debug`); the CLI says how many warnings the file holds.

vLLM configures its logging when it is imported, from `VLLM_LOGGING_CONFIG_PATH` (a `logging.dictConfig`
JSON file), in this process and again in every engine-core and worker process it spawns. So the same JSON
config is written next to the log and named in the environment before vLLM is imported; torch's Python and
C++ loggers read `TORCH_LOGS` / `TORCH_CPP_LOG_LEVEL` at import, and spawned children take Python warnings
filters from `PYTHONWARNINGS`. Variables the user set already are left alone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOG_DIR = "logs"
LINE_FORMAT = "%(levelname)s %(asctime)s %(process)d [%(name)s:%(lineno)d] %(message)s"
DATE_FORMAT = "%m-%d %H:%M:%S"
# Loggers of this process routed to the terminal and the file; vLLM's children configure "vllm" themselves.
ROUTED_LOGGERS = ("vllm", "transformers", "datasets", "py.warnings", "speechlm_batch")
# Their info lines are whole config and vocabulary dumps (thousands of lines per start): warnings and up only.
WARNING_FLOOR = ("transformers", "datasets")
LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class LogPlan:
    """Where logs go for one run.

    Attributes:
        path: the full log file.
        config_path: the dictConfig JSON vLLM (and its children) load at import.
        terminal_level / file_level: lowest level shown in the terminal / written to the file.
        environ: variables to set before vLLM and torch are imported (only those the user has not set).
    """

    path: Path
    config_path: Path
    terminal_level: str
    file_level: str
    environ: Mapping[str, str]


def plan(output_dir: Path, stem: str, terminal_level: str, environ: Mapping[str, str] | None = None) -> LogPlan:
    """The log file `OUTPUT_DIR/logs/<stem>.log` and the environment that routes vLLM and torch logs there."""
    if terminal_level not in LEVELS:
        raise ValueError(f"log level {terminal_level!r} is not one of {', '.join(LEVELS)}")
    env = os.environ if environ is None else environ
    folder = Path(output_dir) / LOG_DIR
    path, config_path = folder / f"{stem}.log", folder / f"{stem}.vllm-logging.json"
    file_level = "debug" if terminal_level == "debug" else "info"
    wanted = {
        "VLLM_CONFIGURE_LOGGING": "1",
        "VLLM_LOGGING_CONFIG_PATH": str(config_path.absolute()),
        "TORCH_CPP_LOG_LEVEL": "INFO" if terminal_level in ("debug", "info") else terminal_level.upper(),
    }
    if terminal_level == "error":
        wanted["TORCH_LOGS"] = "-torch"  # torch's own handler prints warnings otherwise, in every process
        wanted["PYTHONWARNINGS"] = "ignore"  # read by spawned children only; this process captures them
    changes = {k: v for k, v in wanted.items() if k not in env}
    return LogPlan(path, config_path, terminal_level, file_level, changes)


def vllm_config(log: LogPlan) -> dict:
    """The dictConfig vLLM loads: its records to stderr at the terminal level, and to the file."""
    lowest = min(log.terminal_level, log.file_level, key=LEVELS.index).upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LINE_FORMAT, "datefmt": DATE_FORMAT}},
        "handlers": {
            "terminal": {
                "class": "logging.StreamHandler", "formatter": "plain", "level": log.terminal_level.upper(),
                "stream": "ext://sys.stderr",
            },
            "file": {
                "class": "logging.FileHandler", "formatter": "plain", "level": log.file_level.upper(),
                "filename": str(log.path.absolute()), "mode": "a", "encoding": "utf-8",
            },
        },
        "loggers": {"vllm": {"handlers": ["terminal", "file"], "level": lowest, "propagate": False}},
    }


@contextmanager
def routed(log: LogPlan) -> Iterator[LogPlan]:
    """Route this process's logs (and, through the environment, vLLM's children's) for the run's duration."""
    log.path.parent.mkdir(parents=True, exist_ok=True)
    log.config_path.write_text(json.dumps(vllm_config(log), indent=2), encoding="utf-8")
    saved_env = {k: os.environ.get(k) for k in log.environ}
    os.environ.update(log.environ)
    _initialise_transformers_logger()
    terminal = logging.StreamHandler(sys.stderr)
    terminal.setLevel(log.terminal_level.upper())
    file = logging.FileHandler(log.path, mode="a", encoding="utf-8")
    file.setLevel(log.file_level.upper())
    for handler in (terminal, file):
        handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
    lowest = min(log.terminal_level, log.file_level, key=LEVELS.index).upper()
    saved = {
        name: _swap_handlers(name, [terminal, file], "WARNING" if name in WARNING_FLOOR and lowest != "DEBUG" else lowest)
        for name in ROUTED_LOGGERS
    }
    logging.captureWarnings(True)
    try:
        yield log
    finally:
        logging.captureWarnings(False)
        for name, (handlers, level, propagate) in saved.items():
            _restore_handlers(name, handlers, level, propagate)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def count_levels(path: Path) -> dict[str, int]:
    """How many warning and error lines the log file holds (every process's, since they share the file)."""
    counts = {"warning": 0, "error": 0}
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as f:
            for line in f:
                head = line.split(" ", 1)[0]
                if head == "WARNING":
                    counts["warning"] += 1
                elif head in ("ERROR", "CRITICAL"):
                    counts["error"] += 1
    except OSError:
        pass
    return counts


def _swap_handlers(name: str, handlers: list[logging.Handler], level: str):
    logger = logging.getLogger(name)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    logger.handlers = list(handlers)
    logger.setLevel(level)
    logger.propagate = False
    return saved


def _restore_handlers(name: str, handlers: list[logging.Handler], level: int, propagate: bool) -> None:
    logger = logging.getLogger(name)
    for handler in logger.handlers:  # ours, or the ones vLLM's import built from our config file
        if handler not in handlers:
            handler.close()
    logger.handlers = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def _initialise_transformers_logger() -> None:
    """transformers adds its own stderr handler on first use: make that happen now, so the swap replaces it."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.get_logger("transformers")
