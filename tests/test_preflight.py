"""Checks before the engine starts, on the real converted checkpoints' files and on small folders made here."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from speechlm_batch import preflight
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import DecodeSettings, EngineSettings, RunSettings


@pytest.fixture(scope="module")
def whisper_tiny_en() -> str:
    from speechlm_batch.models.store import ensure_model

    return str(ensure_model("whisper-tiny.en"))


def _settings(**decode) -> RunSettings:
    return RunSettings(decode=DecodeSettings(**decode))


def _chat_model(tmp_path: Path, template: bool, tokens: list[str]) -> Path:
    folder = tmp_path / "chat-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["NeMoSpeechLMForConditionalGeneration"]}))
    config = {"chat_template": "{{ messages }}"} if template else {}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    added = [{"id": i, "content": t, "special": True} for i, t in enumerate(tokens)]
    (folder / "tokenizer.json").write_text(json.dumps({"added_tokens": added, "model": {"vocab": {}}}))
    return folder


def test_whisper_languages_come_from_the_checkpoint(whisper_base):
    model = preflight.LocalModel.read(whisper_base)
    assert model is not None and model.family == "whisper"
    codes = preflight.whisper_languages(model)
    assert len(codes) == 99 and {"en", "de", "haw", "jw"} <= set(codes) and "yue" not in codes  # yue came with large-v3


def test_unknown_language_fails_before_the_engine_with_the_list(whisper_base, tmp_path):
    preflight.check_run(_settings(language="de"), whisper_base, tmp_path / "out")
    with pytest.raises(UsageError) as e:
        preflight.check_run(_settings(language="english"), whisper_base, tmp_path / "out")
    assert "'english'" in str(e.value) and "--language" in e.value.hint and " de," in e.value.hint


def test_english_only_whisper_takes_any_language(whisper_tiny_en, tmp_path):
    model = preflight.LocalModel.read(whisper_tiny_en)
    assert preflight.whisper_languages(model) is None
    assert preflight.check_run(_settings(language="xx"), whisper_tiny_en, tmp_path) == "whisper"


def test_unknown_family_names_the_choices(whisper_base, tmp_path):
    with pytest.raises(UsageError) as e:
        preflight.check_run(_settings(family="whisperr"), whisper_base, tmp_path)
    assert "chat-audio" in e.value.hint


def test_chat_family_needs_a_chat_template(whisper_base, tmp_path):
    with pytest.raises(UsageError) as e:
        preflight.check_run(_settings(family="chat-audio"), whisper_base, tmp_path)
    assert "chat template" in str(e.value) and "--tokenizer" in e.value.hint
    with pytest.raises(UsageError):
        preflight.check_run(_settings(), str(_chat_model(tmp_path, template=False, tokens=["<|audio|>"])), tmp_path)


def test_nemo_speechlm_needs_its_placeholder_token(tmp_path):
    good = _chat_model(tmp_path, template=True, tokens=["<|audio|>"])
    assert preflight.check_run(_settings(), str(good), tmp_path) == "nemo-speechlm"
    with pytest.raises(UsageError) as e:
        preflight.check_run(_settings(audio_placeholder="<audio>"), str(good), tmp_path)
    assert "'<audio>'" in str(e.value) and "--audio-placeholder" in e.value.hint


def test_a_tokenizer_folder_is_checked_instead_of_the_models(tmp_path):
    model = _chat_model(tmp_path, template=False, tokens=[])
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer_config.json").write_text(json.dumps({"chat_template": "x"}))
    (tok / "tokenizer.json").write_text(json.dumps({"added_tokens": [{"content": "<|audio|>"}]}))
    settings = RunSettings(engine=EngineSettings(tokenizer=str(tok)))
    assert preflight.check_run(settings, str(model), tmp_path) == "nemo-speechlm"


def test_hub_ids_skip_model_checks(tmp_path):
    assert preflight.check_run(_settings(language="zz"), "org/not-local", tmp_path) is None


def test_output_dir_must_be_writable_and_have_room(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # The tests run as root, whom permission bits do not stop: report this folder as read-only instead.
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(UsageError, match="not writable"):
        preflight.check_output_dir(locked / "out")
    monkeypatch.undo()
    afile = tmp_path / "a-file"
    afile.write_text("")
    with pytest.raises(UsageError, match="is a file"):
        preflight.check_output_dir(afile / "out")
    with pytest.raises(UsageError, match="MiB free") as e:
        preflight.check_output_dir(tmp_path / "new" / "deeper", min_free_bytes=1 << 62)
    assert "--output-dir" in e.value.hint
    preflight.check_output_dir(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.parametrize("engine,run", [({"max_num_seqs": 0}, {}), ({"gpu_memory_utilization": 1.5}, {}), ({}, {"window_rows": 0})])
def test_numbers_must_be_positive(tmp_path, engine, run):
    with pytest.raises(UsageError):
        preflight.check_run(RunSettings(engine=EngineSettings(**engine), **run), "org/x", tmp_path)


def test_cli_refuses_a_bad_language_without_starting_the_engine(whisper_base, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from speechlm_batch.cli import app
    from speechlm_batch.engine import Engine

    def no_engine(*_args, **_kwargs):
        raise AssertionError("the engine must not start")

    monkeypatch.setattr(Engine, "create", staticmethod(no_engine))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio_filepath": "a.wav"}\n')
    result = CliRunner().invoke(app, ["transcribe", str(manifest), "-m", whisper_base, "-l", "klingon", "-o", str(tmp_path / "o")])
    assert isinstance(result.exception, UsageError) and "klingon" in str(result.exception)
    assert not (tmp_path / "o").exists()
