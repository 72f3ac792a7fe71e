"""Every setting is classified once, and the fingerprint covers exactly the ones that change transcripts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from speechlm_batch import engine as engine_mod
from speechlm_batch import settings as s


def _changed(value):
    """A different value of the same kind, for any default a settings field has."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 7
    if isinstance(value, str):
        return value + "-x"
    return {"architectures": ["X"]} if value is None else None


def _with(settings: s.RunSettings, dotted: str, value) -> s.RunSettings:
    group, _, name = dotted.rpartition(".")
    if not group:
        return dataclasses.replace(settings, **{name: value})
    part = dataclasses.replace(getattr(settings, group), **{name: value})
    return dataclasses.replace(settings, **{group: part})


def test_every_setting_is_classified_exactly_once():
    names = set(s.flat_settings(s.RunSettings()))
    assert not s.TRANSCRIPT_FIELDS & s.OPERATIONAL_FIELDS
    unclassified = names - s.TRANSCRIPT_FIELDS - s.OPERATIONAL_FIELDS
    assert not unclassified, f"add {sorted(unclassified)} to settings.TRANSCRIPT_FIELDS or OPERATIONAL_FIELDS"
    stale = (s.TRANSCRIPT_FIELDS | s.OPERATIONAL_FIELDS) - names
    assert not stale, f"no such settings: {sorted(stale)}"


@pytest.mark.parametrize("dotted", sorted(s.TRANSCRIPT_FIELDS - {"engine.model", "engine.dtype"}))  # both: resolved
def test_each_transcript_setting_changes_the_fingerprint(dotted):
    base = s.RunSettings()
    value = s.flat_settings(base)[dotted]
    other = _with(base, dotted, _changed(value))
    assert other.fingerprint("/m", "float32") != base.fingerprint("/m", "float32"), dotted


@pytest.mark.parametrize("dotted", sorted(s.OPERATIONAL_FIELDS))
def test_operational_settings_leave_the_fingerprint_alone(dotted):
    base = s.RunSettings()
    other = _with(base, dotted, _changed(s.flat_settings(base)[dotted]))
    assert other.fingerprint("/m", "float32") == base.fingerprint("/m", "float32"), dotted


def test_the_resolved_dtype_and_model_are_fingerprinted_not_the_alias():
    base = s.RunSettings()  # dtype "auto"
    assert base.fingerprint("/m", "bfloat16") != base.fingerprint("/m", "float32")
    assert base.fingerprint("/m", "float32") != base.fingerprint("/other", "float32")
    alias = _with(base, "engine.model", "whisper-tiny.en")
    assert alias.fingerprint("/m", "float32") == base.fingerprint("/m", "float32")


def test_resolved_dtype_follows_the_host(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text(json.dumps({"torch_dtype": "float16"}))
    auto, fixed = s.EngineSettings(), s.EngineSettings(dtype="bfloat16")
    monkeypatch.setattr(engine_mod, "cpu_auto_dtype", lambda: "float32")
    assert engine_mod.resolved_dtype(auto, str(tmp_path), cpu=True) == "float32"
    monkeypatch.setattr(engine_mod, "cpu_auto_dtype", lambda: "bfloat16")
    assert engine_mod.resolved_dtype(auto, str(tmp_path), cpu=True) == "bfloat16"
    assert engine_mod.resolved_dtype(auto, str(tmp_path), cpu=False) == "auto:float16"
    assert engine_mod.resolved_dtype(fixed, str(tmp_path), cpu=True) == "bfloat16"


def test_temperature_is_gone_rather_than_fingerprinted_and_ignored():
    assert "decode.temperature" not in s.flat_settings(s.RunSettings())
