"""The shared option table (cli/options.py) and the help it renders: every option explained, in a panel,
closed choices listed, the same declaration in `transcribe` and `eval`, readable at 80 columns."""

from __future__ import annotations

import pytest
import typer.main
from typer.testing import CliRunner

from speechlm_batch.adapters import FAMILIES
from speechlm_batch.cli import app
from speechlm_batch.cli import options as o
from speechlm_batch.settings import RunSettings

COMMANDS = ("transcribe", "eval")


def _command(name: str):
    group = typer.main.get_command(app)
    return group.commands[name]


def _options(name: str) -> dict:
    """The command's options by name (Typer vendors click, so no isinstance checks against click's classes)."""
    found = {p.name: p for p in _command(name).params if p.param_type_name == "option" and p.name != "help"}
    assert len(found) >= 25, sorted(found)
    return found


def _help(*args: str, width: int = 80) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(width)}, terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def test_every_run_option_is_explained_in_a_known_panel_and_fills_a_real_field():
    fields = o.settings_fields()
    for option in o.RUN_OPTIONS:
        assert len(option.help) >= 30, option.name
        assert option.panel in o.PANELS, option.name
        assert option.target is None or option.target in fields, (option.name, option.target)
        assert set(option.commands) <= {*COMMANDS, "report"}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_of_the_command_has_help_and_a_panel(command):
    for name, param in _options(command).items():
        assert param.help and len(param.help) >= 15, name
        assert getattr(param, "rich_help_panel", None) in o.PANELS, name


def test_transcribe_and_eval_share_one_declaration():
    transcribe, evaluate = _options("transcribe"), _options("eval")
    for option in o.RUN_OPTIONS:
        if option.commands != o.BOTH:
            continue
        a, b = transcribe[option.name], evaluate[option.name]
        assert (a.opts, a.secondary_opts, a.help, a.default) == (b.opts, b.secondary_opts, b.help, b.default)
    assert "strict" in transcribe and "strict" not in evaluate


def test_defaults_of_the_table_build_the_default_settings():
    values = {option.name: option.default for option in o.RUN_OPTIONS}
    assert o.build_settings(values) == RunSettings()


def test_closed_choices_are_listed():
    assert [f.value for f in o.Family] == list(FAMILIES)
    assert [d.value for d in o.Dtype] == ["auto", "float32", "bfloat16", "float16"]
    text = " ".join(_help("transcribe", width=300).split())
    assert ", ".join(FAMILIES) in text
    assert "auto, float32, bfloat16 or float16" in text
    assert "debug, info, warning or error" in text


def test_dtype_help_says_what_auto_means_on_cpu():
    help_text = next(x.help for x in o.RUN_OPTIONS if x.name == "dtype")
    assert "natively" in help_text and "else float32" in help_text


def test_help_has_panels_in_order_and_examples_and_nothing_truncated_at_80_columns():
    for command in COMMANDS:
        text = _help(command)
        positions = [text.find(f"─ {panel} ") for panel in o.PANELS if f"─ {panel} " in text]
        assert positions == sorted(positions) and len(positions) >= 5, (command, positions)
        assert "Examples" in text and f"speechlm-batch {command}" in text
        assert "…" not in text, command


def test_build_settings_parses_choices_and_json():
    values = {option.name: option.default for option in o.RUN_OPTIONS}
    values.update(family=o.Family("chat-audio"), dtype=o.Dtype.float32, hf_overrides='{"a": 1}', window=8)
    settings = o.build_settings(values)
    assert settings.decode.family == "chat-audio" and settings.engine.dtype == "float32"
    assert settings.engine.hf_overrides == {"a": 1} and settings.window_rows == 8


def test_verbose_overrides_log_level():
    assert o.effective_log_level(o.LogLevel.error, 0) == "error"
    assert o.effective_log_level(o.LogLevel.error, 1) == "warning"
    assert o.effective_log_level(o.LogLevel.error, 5) == "debug"


def test_unknown_family_is_a_usage_error_naming_the_choices(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n')
    result = CliRunner().invoke(app, ["transcribe", str(manifest), "--family", "whisperr"])
    assert result.exit_code == 2
    assert "whisper" in result.output and "chat-audio" in result.output


def test_version_names_vllm_torch_and_device():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].startswith("speechlm-batch ")
    assert any(line.startswith("vLLM 0.") for line in lines)
    assert any(line.startswith("torch 2.") for line in lines)
    assert any(line.startswith("device ") for line in lines)


def test_timestamps_is_shared_off_by_default_and_part_of_the_fingerprint():
    for command in COMMANDS:
        assert "timestamps" in _options(command)
    values = {option.name: option.default for option in o.RUN_OPTIONS}
    plain = o.build_settings(values)
    timed = o.build_settings({**values, "timestamps": True})
    assert plain.decode.timestamps is False and timed.decode.timestamps is True
    assert plain.fingerprint("m") != timed.fingerprint("m")  # resume never mixes rows with and without


def test_export_help_reads_whole_at_80_columns():
    text = _help("export")
    assert "srt|vtt" in text and "--output-dir" in text and "Examples" in text and "…" not in text
