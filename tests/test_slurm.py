"""The sbatch script (rendered, then run by bash against fake `sbatch` / CLI programs) and `merge`'s CLI."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from speechlm_batch import errors
from speechlm_batch.cli import app
from speechlm_batch.errors import UsageError
from speechlm_batch.outputs import PredictionWriter, read_predictions
from speechlm_batch.sharding import ChunkSpec, plan
from speechlm_batch.slurm import SbatchOptions, render_sbatch
from speechlm_batch.types import RowResult, Utterance

MANIFEST = Path("/data/sets/my set.jsonl")
OUT = Path("/scratch/run1")
EXTRA = ["--model", "whisper-base", "--prompt", "it's $HOME; `id`", "--window", "64"]


def directives(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if line.startswith("#SBATCH --"):
            key, _, value = line.removeprefix("#SBATCH --").partition("=")
            found[key] = value
    return found


def test_array_covers_every_chunk_and_resources_are_set():
    text = render_sbatch(MANIFEST, 16, OUT, options=SbatchOptions(partition="gpu", time="04:00:00", mem="32G"))
    d = directives(text)
    assert d["array"] == "0-15"
    resources = (d["partition"], d["time"], d["mem"], d["gpus-per-task"], d["ntasks"])
    assert resources == ("gpu", "04:00:00", "32G", "1", "1")
    assert d["output"] == "/scratch/run1/slurm-%A_%a.out"
    assert d["signal"] == "B:TERM@120"  # the CLI writes its window in flight before the time limit


def test_one_chunk_and_cpu_only():
    d = directives(render_sbatch(MANIFEST, 1, OUT, options=SbatchOptions(gpus_per_task=0)))
    assert d["array"] == "0-0"
    assert "gpus-per-task" not in d and "partition" not in d and "signal" not in d


@pytest.mark.parametrize("chunks", [0, -3])
def test_chunk_count_must_be_positive(chunks):
    with pytest.raises(UsageError):
        render_sbatch(MANIFEST, chunks, OUT)


def test_whitespace_in_a_directive_is_refused():
    with pytest.raises(UsageError, match="whitespace"):
        render_sbatch(MANIFEST, 2, Path("/scratch/run 1"))


def test_task_line_passes_the_chunk_explicitly_and_quotes_extra_options():
    text = render_sbatch(MANIFEST, 4, OUT, extra_args=EXTRA, command="/venv/bin/speechlm-batch")
    exec_line = next(line for line in text.splitlines() if line.startswith("exec "))
    # What bash would pass, with the array index substituted.
    words = shlex.split(exec_line.replace("${SLURM_ARRAY_TASK_ID}", "3"))
    assert words == [
        "exec", "/venv/bin/speechlm-batch", "transcribe", str(MANIFEST),
        "--chunk", "3/4", "--output-dir", str(OUT), *EXTRA,
    ]


def _fake_program(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fake_bin(tmp_path):
    """`sbatch` that logs its arguments (JSON, one call a line) and answers job ids; a CLI that logs too."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    py = "import json,sys; open(sys.argv[1],'a').write(json.dumps(sys.argv[2:])+'\\n')"
    _fake_program(
        bin_dir / "sbatch",
        f'python3 -c "{py}" {log} sbatch "$@"\n'
        f'n=$(wc -l < {log}); echo "$((100 + n));cluster"\n',
    )
    _fake_program(bin_dir / "speechlm-batch", f'python3 -c "{py}" {log} cli "$@"\n')
    return bin_dir, log


def _calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_array_task_runs_transcribe_for_its_chunk(tmp_path, fake_bin):
    bin_dir, log = fake_bin
    script = tmp_path / "run.sbatch"
    script.write_text(render_sbatch(MANIFEST, 4, OUT, extra_args=EXTRA, command=str(bin_dir / "speechlm-batch")))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_ARRAY_TASK_ID": "2", "SLURM_JOB_ID": "7"}
    subprocess.run(["bash", str(script)], env=env, check=True)
    assert _calls(log) == [["cli", "transcribe", str(MANIFEST), "--chunk", "2/4", "--output-dir", str(OUT), *EXTRA]]


def test_bash_submits_the_array_then_a_dependent_merge(tmp_path, fake_bin):
    bin_dir, log = fake_bin
    out = tmp_path / "out dir"
    script = tmp_path / "run.sbatch"
    # Whitespace is fine on the command line (not in #SBATCH lines), so build the script for a plain folder.
    script.write_text(render_sbatch(MANIFEST, 3, tmp_path / "out", command=str(bin_dir / "speechlm-batch")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    done = subprocess.run(["bash", str(script), "--qos=high"], env=env, check=True, capture_output=True, text=True)
    assert "array job 101" in done.stdout and "merge job 102" in done.stdout
    array_call, merge_call = _calls(log)
    assert array_call == ["sbatch", "--parsable", "--qos=high", str(script)]
    assert "--dependency=afterok:101" in merge_call and "--kill-on-invalid-dep=yes" in merge_call
    wrap = next(a for a in merge_call if a.startswith("--wrap=")).removeprefix("--wrap=")
    subprocess.run(["sh", "-c", wrap], env=env, check=True)  # what the merge job runs
    assert _calls(log)[-1] == ["cli", "merge", str(tmp_path / "out"), "--script", str(script)]
    assert (tmp_path / "out").is_dir() and not out.exists()


# ---------------------------------------------------------------------------------------------- merge CLI

N_ROWS = 7


def _result(position: int) -> RowResult:
    utt = Utterance(
        id=f"u{position}", position=position, audio_filepath="a.wav",
        row={"audio_filepath": "a.wav", "text": f"word {position}"},
    )
    return RowResult(utt, f"word {position}" if position != 5 else "wrong 5", None, audio_s=2.0, pieces=1)


def write_chunks(folder: Path, count: int = 3, skip=(), unfinished=()) -> None:
    """Chunk files as array tasks leave them, plus each finished chunk's report."""
    for k, rows in enumerate(plan([None] * N_ROWS, count)):
        spec = ChunkSpec(k, count)
        if k in skip:
            continue
        writer = PredictionWriter.open(folder, spec, "fp", {"model": "m", "input_rows": N_ROWS}, False)
        writer.write_window([_result(p) for p in reversed(rows)])
        if k in unfinished:
            writer.close()
            continue
        writer.finish()
        report = {
            "model": "whisper-tiny.en", "created": f"2026-01-0{k + 1}T00:00:00", "device": "cpu",
            "versions": {}, "settings": {"model": "whisper-tiny.en"},
            "timings": {"load_s": 30.0, "warmup_s": 1.0, "decode_s": 0.1, "engine_s": 1.0, "write_s": 0.0,
                        "wall_s": float(k + 1)},
            "rtfx": {"audio_s": 2.0 * len(rows)},
            "rows": {"this_run": len(rows), "resumed": 0},
        }
        (folder / f"report.{spec.label}.json").write_text(json.dumps(report))


def test_merge_lists_missing_chunks_and_the_rerun_command(tmp_path):
    write_chunks(tmp_path, count=4, skip=(1,), unfinished=(2,))
    result = CliRunner().invoke(app, ["merge", str(tmp_path), "--script", "/jobs/run.sbatch"])
    assert result.exit_code == errors.EXIT_MERGE_INCOMPLETE, result.output
    assert "missing chunks: 1" in result.output
    assert "unfinished chunks (no matching done marker): 2" in result.output
    assert "sbatch --array=1-2 /jobs/run.sbatch" in result.output
    assert not (tmp_path / "predictions.jsonl").exists() and not (tmp_path / "report.json").exists()


def test_merge_without_script_names_a_placeholder(tmp_path):
    write_chunks(tmp_path, count=3, skip=(0, 2))
    result = CliRunner().invoke(app, ["merge", str(tmp_path)])
    assert result.exit_code == errors.EXIT_MERGE_INCOMPLETE
    assert "sbatch --array=0,2 <your array script>" in result.output


def test_merge_writes_rows_in_input_order_and_a_combined_report(tmp_path):
    write_chunks(tmp_path, count=3)
    result = CliRunner().invoke(app, ["merge", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = list(read_predictions(tmp_path / "predictions.jsonl"))
    assert [r["_id"] for r in rows] == [f"u{p}" for p in range(N_ROWS)]
    report = json.loads((tmp_path / "report.json").read_text())
    text = json.dumps(report)
    # WER over the whole set: 1 substitution in 14 reference words, not a mean of the chunks' WERs.
    assert '"substitutions": 1' in text and '"reference_words": 14' in text
    # RTFx = 14 s of audio over 1 + 2 + 3 s of wall time (not the mean of 6, 4 and 2/3 ... per chunk).
    assert report["timings"]["wall_s"] == pytest.approx(6.0)
    assert report["timings"]["load_s"] == pytest.approx(90.0)
    assert report["created"] == "2026-01-03T00:00:00"
    assert any(n == pytest.approx(14 / 6) for n in _numbers(report))


def test_merge_is_idempotent(tmp_path):
    write_chunks(tmp_path, count=3)
    assert CliRunner().invoke(app, ["merge", str(tmp_path)]).exit_code == 0
    first = [(tmp_path / name).read_bytes() for name in ("predictions.jsonl", "report.json")]
    assert CliRunner().invoke(app, ["merge", str(tmp_path)]).exit_code == 0
    assert [(tmp_path / name).read_bytes() for name in ("predictions.jsonl", "report.json")] == first


def _numbers(value) -> list[float]:
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return [value] if isinstance(value, float) else []


def test_slurm_command_prints_a_script_with_absolute_paths(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n')
    result = CliRunner().invoke(
        app, ["slurm", str(manifest), "--chunks", "5", "-o", str(tmp_path / "o"), "--command", "sb",
              "--", "--model", "whisper-base"],
    )
    assert result.exit_code == 0, result.output
    assert directives(result.stdout)["array"] == "0-4"
    task = f'exec sb transcribe {manifest} --chunk "${{SLURM_ARRAY_TASK_ID}}/5" --output-dir {tmp_path / "o"}'
    assert f"{task} --model whisper-base\n" in result.stdout


def test_slurm_command_writes_an_executable_file(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n')
    target = tmp_path / "run.sbatch"
    result = CliRunner().invoke(app, ["slurm", str(manifest), "--chunks", "2", "--write", str(target)])
    assert result.exit_code == 0, result.output
    assert directives(target.read_text())["array"] == "0-1"
    assert os.access(target, os.X_OK)
    assert f"bash {target}" in result.output


def test_slurm_command_refuses_a_chunk_after_the_separator(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n')
    result = CliRunner().invoke(app, ["slurm", str(manifest), "--chunks", "2", "--", "--chunk", "0/2"])
    assert result.exit_code != 0
    assert isinstance(result.exception, UsageError) or "set by the script" in result.output
