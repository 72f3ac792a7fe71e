"""procgroup: children started while engine_processes_apart() is active leave the caller's process group."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap

from speechlm_batch import procgroup


def _report_group(queue) -> None:
    queue.put((os.getpid(), os.getpgid(0)))


def _child_group(method: str) -> tuple[int, int]:
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=_report_group, args=(queue,))
    child.start()
    found = queue.get(timeout=60)
    child.join(timeout=60)
    return found


def test_forked_children_leave_the_group_only_inside_the_block():
    with procgroup.engine_processes_apart():
        pid, group = _child_group("fork")
        assert os.environ[procgroup.APART_ENV] == "1"
    assert group == pid != os.getpgid(0)
    assert procgroup.APART_ENV not in os.environ
    _pid, group = _child_group("fork")
    assert group == os.getpgid(0)  # the hook went with the block


def test_spawned_children_leave_it_through_the_main_module(tmp_path):
    method = "spawn"
    # A main module that imports speechlm_batch (as the CLI's does), so that spawned children import it too.
    main = tmp_path / "main.py"
    main.write_text(textwrap.dedent(f"""
        import multiprocessing, os
        import speechlm_batch  # noqa: F401  (as the CLI imports it)

        def report(queue):
            queue.put(os.getpgid(0) == os.getpid())

        if __name__ == "__main__":
            from speechlm_batch import procgroup
            context = multiprocessing.get_context({method!r})
            with procgroup.engine_processes_apart():
                queue = context.Queue()
                child = context.Process(target=report, args=(queue,))
                child.start()
                print("apart" if queue.get(timeout=60) else "same", flush=True)
                child.join(timeout=60)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(main)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "apart"


def test_spawned_children_leave_it_when_the_cli_runs_as_python_dash_m(tmp_path):
    # `python -m pkg`: spawn does not re-import a package's __main__ in the child, so no import-time hook runs
    # there; the launcher that replaces the spawn executable inside the block must do it.
    package = tmp_path / "clipkg"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent("""
        import os

        def report(queue):
            queue.put(os.getpgid(0) == os.getpid())
    """))
    (package / "__main__.py").write_text(textwrap.dedent("""
        import multiprocessing
        from clipkg import report
        from speechlm_batch import procgroup

        if __name__ == "__main__":
            context = multiprocessing.get_context("spawn")
            inside, outside = context.Queue(), context.Queue()
            with procgroup.engine_processes_apart():
                child = context.Process(target=report, args=(inside,))
                child.start()
            after = context.Process(target=report, args=(outside,))  # outside the block: stays in the group
            after.start()
            print(inside.get(timeout=60), outside.get(timeout=60), flush=True)
            child.join(timeout=60)
            after.join(timeout=60)
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "clipkg"], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "False"]
