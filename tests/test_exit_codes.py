"""The CLI's exit codes and messages, through `cli.main` as the console script runs it, with no vLLM.

`Engine.create` and `resolve_adapter` are replaced by small fakes that "transcribe" every piece to a fixed
text, so the whole path (option parsing, --strict, resume, writer, report, summary, exit code) runs in a
second. Codes (errors.py): 0 complete (failed rows too), 2 usage / other input, 3 fatal, 70 a bug, 75 busy,
130 interrupted.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from fakes import FakeAdapter, FakeEngine, fake_model_info
from typer.testing import CliRunner

from speechlm_batch import cli, errors, runner
from speechlm_batch.cli import console as ui
from speechlm_batch.engine import Engine

FAKE_TEXT = "hello world"


@pytest.fixture
def fake_engine(monkeypatch):
    """Replace the engine and adapter; returns the list of engine starts (their kwargs)."""
    starts: list[dict[str, Any]] = []
    state: dict[str, Any] = {"signal_after": None}

    def create(settings, model_path, timestamps=True):
        kwargs = {"model": model_path, "trust_remote_code": settings.trust_remote_code}
        starts.append(kwargs)
        return FakeEngine(lambda _id: f" {FAKE_TEXT} ", fake_model_info(model_path), kwargs,
                          signal_after=state["signal_after"])

    monkeypatch.setattr(Engine, "create", staticmethod(create))
    monkeypatch.setattr(runner, "resolve_adapter", lambda info, decode: FakeAdapter())
    monkeypatch.setattr(ui.console, "width", 400)  # one line per message: no wrapping inside paths
    monkeypatch.setattr(ui.out, "width", 400)
    return starts, state


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """The CLI installs SIGINT / SIGTERM handlers in this process; put pytest's back afterwards."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def invoke(*args: str | Path) -> tuple[int, str]:
    """Run `speechlm-batch ARGS` through `cli.main` (the console script); return (exit code, stdout+stderr)."""
    with CliRunner().isolation() as (stdout, stderr, _output):
        argv = sys.argv
        sys.argv = ["speechlm-batch", *map(str, args)]
        try:
            cli.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            sys.argv = argv
        text = stdout.getvalue().decode() + stderr.getvalue().decode()
    return code, text


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A local model folder: resolve_model accepts it without fetching anything."""
    path = tmp_path / "fake-model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["Fake"]}))
    return path


@pytest.fixture
def clips(tmp_path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        sf.write(folder / f"c{i}.wav", (0.1 * rng.standard_normal(8000 + 800 * i)).astype(np.float32), 16000)
    return folder


def _manifest(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good(clips: Path, n: int) -> list[str]:
    return [json.dumps({"audio_filepath": str(clips / f"c{i}.wav"), "text": FAKE_TEXT, "id": f"c{i}"}) for i in range(n)]


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_all_rows_ok_exits_0(fake_engine, model_dir, clips, tmp_path):
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 4))
    out = tmp_path / "out"
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--window", "2")
    assert code == errors.EXIT_OK, text
    rows = _rows(out)  # in input order once the run completed
    assert [r["_id"] for r in rows] == ["c0", "c1", "c2", "c3"]
    assert all(r["pred_text"] == FAKE_TEXT and "error" not in r for r in rows)
    assert json.loads((out / "report.json").read_text())["rows"]["failed"] == 0


def test_failed_rows_exit_0_complete_and_are_counted_by_kind(fake_engine, model_dir, clips, tmp_path):
    lines = [*_good(clips, 2), json.dumps({"audio_filepath": str(tmp_path / "gone.wav"), "id": "gone"}), "{not json"]
    manifest = _manifest(tmp_path / "mixed.jsonl", lines)
    out = tmp_path / "out"
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out)
    assert code == errors.EXIT_OK, text  # complete: a Slurm `afterok` merge still runs
    rows = {r["_id"]: r for r in _rows(out)}
    assert rows["gone"]["error"]["kind"] == "missing_file"
    assert rows["L4"]["error"] == {"kind": "bad_row", "message": rows["L4"]["error"]["message"]}
    assert f"{manifest}:4" in rows["L4"]["error"]["message"]
    assert json.loads((out / "report.json").read_text())["rows"]["failed_by_kind"] == {"missing_file": 1, "bad_row": 1}
    assert "Failed rows by kind" in text and "missing_file" in text and "bad_row" in text


def test_strict_refuses_a_bad_manifest_before_the_engine_starts(fake_engine, model_dir, clips, tmp_path):
    starts, _ = fake_engine
    # Line 3 is blank, so the bad row is the 3rd row but the 4th line: the message must say line 4.
    manifest = _manifest(tmp_path / "bad.jsonl", [*_good(clips, 2), "", '{"audio_filepath": 5}'])
    out = tmp_path / "out"
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--strict")
    assert code == errors.EXIT_USAGE, text
    assert f"{manifest}:4" in text and "audio_filepath" in text
    assert f"{manifest}:3" not in text, text  # the location is the line, not the row's position
    assert starts == []
    assert not out.exists()


def test_strict_accepts_a_clean_manifest(fake_engine, model_dir, clips, tmp_path):
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 2))
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", tmp_path / "out", "--strict")
    assert code == errors.EXIT_OK, text


@pytest.mark.parametrize(
    "args",
    [
        ["transcribe", "{manifest}", "--bogus-option"],
        ["transcribe", "{missing}"],
        ["transcribe"],
        ["transcribe", "{manifest}", "--window", "many"],
        ["transcribe", "{manifest}", "--chunk", "7/4", "--model", "{model}"],
        ["transcribe", "{manifest}", "--chunk", "half", "--model", "{model}"],
        ["transcribe", "{manifest}", "--hf-overrides", "{{not json", "--model", "{model}"],
        ["transcribe", "{manifest}", "--model", "/no/such/model/folder"],
        ["no-such-command"],
    ],
    ids=["unknown-option", "missing-manifest", "no-manifest", "bad-int", "chunk-range", "chunk-syntax",
         "bad-json-option", "missing-model-folder", "unknown-command"],
)
def test_usage_errors_exit_2(fake_engine, model_dir, clips, tmp_path, args):
    starts, _ = fake_engine
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 1))
    fill = {"manifest": manifest, "missing": tmp_path / "missing.jsonl", "model": model_dir}
    code, text = invoke(*[a.format(**fill) for a in args], "--output-dir", tmp_path / "out")
    assert code == errors.EXIT_USAGE, text
    assert starts == []
    assert not (tmp_path / "out").exists()


def test_resume_with_other_settings_exits_2_and_keeps_the_rows(fake_engine, model_dir, clips, tmp_path):
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 2))
    out = tmp_path / "out"
    assert invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out)[0] == errors.EXIT_OK
    before = (out / "predictions.jsonl").read_bytes()
    (out / "predictions.done.json").unlink()  # an unfinished run: rows to protect
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--language", "de")
    assert code == errors.EXIT_USAGE, text
    assert "fingerprint" in text and "--overwrite" in text
    assert (out / "predictions.jsonl").read_bytes() == before
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--language", "de", "--overwrite")
    assert code == errors.EXIT_OK, text


def test_sigint_exits_130_then_the_rerun_completes_without_duplicates(fake_engine, model_dir, clips, tmp_path):
    starts, state = fake_engine
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 4))
    out = tmp_path / "out"
    state["signal_after"] = 2  # after the warm-up and one row: the window in flight (1 row) is finished
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--window", "1")
    assert code == errors.EXIT_INTERRUPTED, text
    assert "resume" in text
    written = [r["_id"] for r in _rows(out)]
    assert 1 <= len(written) < 4
    assert not (out / "predictions.done.json").exists()
    state["signal_after"] = None
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--window", "1")
    assert code == errors.EXIT_OK, text
    ids = [r["_id"] for r in _rows(out)]
    assert sorted(ids) == ["c0", "c1", "c2", "c3"] and len(ids) == len(set(ids))
    assert len(starts) == 2


def test_finished_output_is_not_redone(fake_engine, model_dir, clips, tmp_path):
    starts, _ = fake_engine
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 2))
    out = tmp_path / "out"
    assert invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out)[0] == errors.EXIT_OK
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out)
    assert code == errors.EXIT_OK and "nothing to do" in text
    assert len(starts) == 1


def test_trust_remote_code_is_off_unless_asked(fake_engine, model_dir, clips, tmp_path):
    starts, _ = fake_engine
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 1))
    invoke("transcribe", manifest, "--model", model_dir, "--output-dir", tmp_path / "a")
    invoke("transcribe", manifest, "--model", model_dir, "--output-dir", tmp_path / "b", "--trust-remote-code")
    assert [s["trust_remote_code"] for s in starts] == [False, True]
    settings = json.loads((tmp_path / "a" / "report.json").read_text())["settings"]
    assert settings["engine"]["trust_remote_code"] is False


def test_other_input_into_the_same_output_is_refused_before_the_engine_starts(fake_engine, model_dir, clips, tmp_path):
    starts, _ = fake_engine
    a = _manifest(tmp_path / "a.jsonl", _good(clips, 2))
    b = _manifest(tmp_path / "b.jsonl", _good(clips, 3)[1:])
    out = tmp_path / "out"
    assert invoke("transcribe", a, "--model", model_dir, "--output-dir", out)[0] == errors.EXIT_OK
    before = (out / "predictions.jsonl").read_bytes()
    code, text = invoke("transcribe", b, "--model", model_dir, "--output-dir", out)
    assert code == errors.EXIT_USAGE, text
    assert "another input" in text and "--overwrite" in text and "complete already" not in text
    # An appended manifest is another input too, even at the same path.
    a.write_text(a.read_text() + _good(clips, 3)[2] + "\n")
    code, text = invoke("transcribe", a, "--model", model_dir, "--output-dir", out)
    assert code == errors.EXIT_USAGE and "rows: 2 -> 3" in text, text
    assert len(starts) == 1 and (out / "predictions.jsonl").read_bytes() == before
    code, text = invoke("transcribe", a, "--model", model_dir, "--output-dir", out, "--overwrite")
    assert code == errors.EXIT_OK and len(_rows(out)) == 3, text


def test_a_busy_output_exits_75_naming_the_holder(fake_engine, model_dir, clips, tmp_path):
    import os

    from speechlm_batch.outputs import PredictionWriter

    starts, _ = fake_engine
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 2))
    out = tmp_path / "out"
    holder = PredictionWriter.open(out, None, "other", {}, False)
    try:
        code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out)
    finally:
        holder.close()
    assert code == errors.EXIT_BUSY, text
    assert f"pid {os.getpid()}" in text and starts == []


@pytest.mark.parametrize(
    ("error", "expected"),
    [(OSError(28, "No space left on device"), errors.EXIT_FATAL), (RuntimeError("a bug"), errors.EXIT_BUG)],
    ids=["disk-full", "bug"],
)
def test_unexpected_failures_get_their_own_codes(fake_engine, model_dir, clips, tmp_path, monkeypatch, error, expected):
    def broken(*args, **kwargs):
        raise error

    monkeypatch.setattr(runner.pipeline, "run", broken)
    manifest = _manifest(tmp_path / "ok.jsonl", _good(clips, 2))
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", tmp_path / "out")
    assert code == expected, text
    assert str(error.args[-1]) in text


def test_retry_failed_redoes_only_the_failed_rows(fake_engine, model_dir, clips, tmp_path):
    starts, _ = fake_engine
    late = tmp_path / "late.wav"
    lines = [*_good(clips, 2), json.dumps({"audio_filepath": str(late), "text": FAKE_TEXT, "id": "late"})]
    manifest = _manifest(tmp_path / "m.jsonl", lines)
    out = tmp_path / "out"
    assert invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out)[0] == errors.EXIT_OK
    first = {r["_id"]: r for r in _rows(out)}
    assert first["late"]["error"]["kind"] == "missing_file"
    sf.write(late, np.zeros(4000, dtype=np.float32) + 0.05, 16000)  # the file system hiccup is over
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--retry-failed", "engine")
    assert code == errors.EXIT_OK and "nothing to do" in text, text  # no engine failures to redo
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--retry-failed", "all")
    assert code == errors.EXIT_OK, text
    rows = _rows(out)
    assert [r["_id"] for r in rows] == ["c0", "c1", "late"] and "error" not in rows[2]
    assert [r for r in rows[:2]] == [first["c0"], first["c1"]]  # kept as they were
    assert len(starts) == 2
    code, text = invoke("transcribe", manifest, "--model", model_dir, "--output-dir", out, "--retry-failed", "bogus")
    assert code == errors.EXIT_USAGE and "unknown error kind bogus" in text, text
