"""vLLM's engine processes in a process group of their own, so that signals for the CLI reach the CLI only.

A terminal's Ctrl-C, `kill -- -PGID` and job schedulers signal a whole process group. vLLM's engine core
exits on SIGINT / SIGTERM (aborting every request in flight), so the CLI's next step met `EngineDeadError`
and the rows in flight were lost. Outside the CLI's group, the engine keeps running while the CLI finishes
the rows in flight, writes them and shuts the engine down itself.

How: while `engine_processes_apart()` is active, every multiprocessing child leaves the group at start-up.
Forked children run a `multiprocessing.util.register_after_fork` hook (inherited with the parent's memory);
spawned ones run no such hooks, but re-import the CLI's main module, hence this module, which leaves the
group at import when the environment variable below (inherited) says so. (Measured: this works for children
started in-process, tests/test_procgroup.py and a direct `runner.run_source`; under the CLI the engine core
was still seen in the CLI's group, cause not found: docs/reliability.md.) Each child also asks the kernel for SIGTERM
when its parent dies (PR_SET_PDEATHSIG): out of the group, a `kill -9` of the CLI would otherwise orphan it.
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing.spawn
import multiprocessing.util
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

APART_ENV = "SPEECHLM_BATCH_ENGINE_APART"  # "1": a child started while engine_processes_apart() was active
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _Hook:
    """The registry holds its entries weakly: this object's lifetime is the hook's."""


def leave_process_group(_hook: object | None = None) -> None:
    """In a child: start a process group of its own, and get SIGTERM when the parent dies."""
    try:
        os.setpgid(0, 0)
    except OSError:  # a session leader, or a platform without process groups: nothing to leave
        pass
    sigterm_on_parent_death()


def sigterm_on_parent_death() -> None:
    """Ask the kernel for SIGTERM when the parent dies, even by SIGKILL (when its cleanup cannot run).

    The kernel means the parent *thread*: call it in a child started from a thread that outlives the child.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux
        pass


# Spawned children are started as `python -c "from multiprocessing.spawn import spawn_main; ..."`: they run
# no fork hooks, and a main module run with `-m pkg` (`python -m speechlm_batch`) is not re-imported in them.
# So the spawn executable is swapped, inside the block, for this launcher: it leaves the group, asks for
# SIGTERM on the parent's death (both survive exec) and execs the real interpreter with the same arguments.
_LAUNCHER = """#!{python}
import ctypes, os, signal, sys
os.setpgid(0, 0)
try:
    ctypes.CDLL(None, use_errno=True).prctl({pdeathsig}, int(signal.SIGTERM), 0, 0, 0)
except (OSError, AttributeError):
    pass
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
_SHEBANG_MAX = 120  # Linux reads at most 127 bytes of a #! line; a longer interpreter path keeps spawn as is


def _write_launcher() -> str:
    """The launcher script, removed when this process exits (a child may still be reading it after the
    block has ended: the kernel hands the path to the interpreter, which opens it a moment later)."""
    folder = tempfile.mkdtemp(prefix="speechlm-batch-spawn-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    launcher = os.path.join(folder, "python")
    with open(launcher, "w", encoding="utf-8") as f:
        f.write(_LAUNCHER.format(python=sys.executable, pdeathsig=_PR_SET_PDEATHSIG))
    os.chmod(launcher, 0o755)
    return launcher


@contextmanager
def engine_processes_apart() -> Iterator[None]:
    """Children started inside this block (vLLM's engine core and its workers) leave the caller's group."""
    hook = _Hook()
    multiprocessing.util.register_after_fork(hook, leave_process_group)
    previous = os.environ.get(APART_ENV)
    os.environ[APART_ENV] = "1"
    previous_exe = multiprocessing.spawn.get_executable()
    try:
        if len(sys.executable) <= _SHEBANG_MAX:
            multiprocessing.spawn.set_executable(_write_launcher())
        yield
    finally:
        multiprocessing.spawn.set_executable(previous_exe)
        if previous is None:
            os.environ.pop(APART_ENV, None)
        else:
            os.environ[APART_ENV] = previous
        del hook  # drops the registry entry: later children stay in the group


# A spawned child imports this module with the parent's main module (the CLI; spawn's `prepare`), before
# its target runs. Only a process started inside the block has the variable. (A parent whose main module
# does not import speechlm_batch, e.g. pytest, leaves spawned children in its group; forked ones leave it.)
if os.environ.get(APART_ENV) == "1":
    leave_process_group()
