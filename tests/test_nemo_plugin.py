"""Checks before the engine starts for NVIDIA's NeMo Speech LM plugin: pure logic, small configs and tokenizers."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from speechlm_batch import nemo_plugin
from speechlm_batch.errors import EngineError, UsageError
from speechlm_batch.settings import EngineSettings
from tests.adapters.conftest import tiny_models

TESTED = {"vLLM": "0.28.0", "transformers": "5.19.0", "nemo-toolkit": "3.0.0"}
NEMO_EP = ("nemo_speechlm", "nemo.collections.speechlm2.vllm.salm:register")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_models.build_tokenizer(
        [*tiny_models.CHATML_SPECIAL, "<|audio|>"], chat_template=tiny_models.CHATML_TEMPLATE
    )


@pytest.fixture
def llm_dir(tmp_path) -> Path:
    folder = tmp_path / "llm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3"}))
    return folder


def config(llm_dir: Path, **changes) -> dict:
    base = {
        "architectures": ["NeMoSpeechLMForConditionalGeneration"], "model_type": "nemo_speechlm",
        "pretrained_llm": str(llm_dir), "pretrained_asr": "canary", "pretrained_weights": False,
        "audio_locator_tag": "<|audio|>", "prompt_format": "qwen",
        "perception": {"preprocessor": {}, "encoder": {}, "modality_adapter": {}},
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()


def problems(cfg, tokenizer, tmp_path, offline=True, cached=lambda _: False):
    return nemo_plugin.checkpoint_problems(cfg, tokenizer, cwd=tmp_path, offline=offline, cached=cached)


# --- versions ---------------------------------------------------------------------------------------------


def test_the_tested_pairing_passes():
    assert nemo_plugin.version_problems(TESTED) == []
    assert nemo_plugin.version_problems({**TESTED, "vLLM": "0.28.0+cpu"}) == []


@pytest.mark.parametrize(
    ("label", "version", "expected"),
    [
        ("vLLM", "0.32.0", "vLLM 0.32.0 is outside the supported range >=0.28.0,<0.29"),
        ("vLLM", "0.26.0", "vLLM 0.26.0 is outside"),
        ("transformers", "5.22.0", "transformers 5.22.0 is outside the supported range >=5.16.1,<5.22"),
        ("nemo-toolkit", "2.8.0rc2", "nemo-toolkit 2.8.0rc2 is outside the supported range >=3.0.0,<3.1"),
        ("nemo-toolkit", None, "nemo-toolkit is not installed (supported >=3.0.0,<3.1, tested 3.0.0)"),
    ],
)
def test_a_mismatch_names_the_version_and_the_supported_range(label, version, expected):
    found = nemo_plugin.version_problems({**TESTED, label: version})
    assert len(found) == 1 and found[0].startswith(expected)


def test_check_versions_raises_before_the_engine_with_everything_installed_listed():
    with pytest.raises(EngineError) as caught:
        nemo_plugin.check_versions({**TESTED, "vLLM": "0.32.0", "nemo-toolkit": None})
    message = str(caught.value)
    assert "vLLM 0.32.0" in message and "nemo-toolkit is not installed" in message
    assert "installed: vLLM 0.32.0, transformers 5.19.0, nemo-toolkit missing" in message
    assert ".venv-nemo" in caught.value.hint and "nemo-toolkit[asr]==3.0.0" in caught.value.hint


def test_entry_points_exactly_one_and_nemos():
    assert nemo_plugin.entry_point_problems([NEMO_EP, ("other", "x:register")]) == []
    assert "no vLLM plugin named nemo_speechlm" in nemo_plugin.entry_point_problems([])[0]
    clash = nemo_plugin.entry_point_problems([NEMO_EP, ("nemo_speechlm", "stand_in:register")])
    assert "2 vLLM plugins are named nemo_speechlm" in clash[0]
    assert "not NeMo's" in nemo_plugin.entry_point_problems([("nemo_speechlm", "stand_in:register")])[0]


# --- recognising a checkpoint -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        {"model_type": "nemo_speechlm"},
        {"architectures": ["NeMoSpeechLMForConditionalGeneration"]},
        {"architectures": ["NemotronNanoASRForConditionalGeneration"], "model_type": "nemotron_nano_asr"},
    ],
)
def test_nemo_speechlm_configs_are_recognised(cfg):
    assert nemo_plugin.is_nemo_speechlm(cfg)


def test_other_configs_are_not():
    assert not nemo_plugin.is_nemo_speechlm({"model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"]})


def test_hf_overrides_apply_before_recognition(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "salm", "architectures": ["SALM"]}))
    overrides = {"architectures": ["NeMoSpeechLMForConditionalGeneration"], "model_type": "nemo_speechlm"}
    assert not nemo_plugin.is_nemo_speechlm(nemo_plugin.read_config(str(tmp_path), None))
    assert nemo_plugin.is_nemo_speechlm(nemo_plugin.read_config(str(tmp_path), overrides))
    assert nemo_plugin.read_config(str(tmp_path / "absent"), overrides) is None  # hub ids: nothing to read


def test_plugin_is_added_once_next_to_the_users_plugins():
    assert nemo_plugin.with_plugin(EngineSettings()).plugin == "nemo_speechlm"
    assert nemo_plugin.with_plugin(EngineSettings(plugin="mine")).plugin == "mine,nemo_speechlm"
    assert nemo_plugin.with_plugin(EngineSettings(plugin="nemo_speechlm")).plugin == "nemo_speechlm"


def test_other_models_are_left_alone(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    settings = EngineSettings(model=str(tmp_path))
    assert nemo_plugin.prepare(settings, str(tmp_path)) is settings


def test_a_nemo_checkpoint_in_the_wrong_environment_stops_before_the_engine(tmp_path, llm_dir):
    """The project's own .venv has vLLM 0.32 and no nemo-toolkit: refused with versions, never started."""
    (tmp_path / "config.json").write_text(json.dumps(config(llm_dir)))
    if not nemo_plugin.version_problems(nemo_plugin.installed_versions()):
        pytest.skip("this environment is the supported pairing; the refusal is covered with fixed versions above")
    with pytest.raises(EngineError, match="outside the supported range|not installed"):
        nemo_plugin.prepare(EngineSettings(), str(tmp_path))


# --- checkpoints the plugin would reject ---------------------------------------------------------------------


def test_a_good_checkpoint_has_no_problems(tokenizer, llm_dir, tmp_path):
    assert problems(config(llm_dir), tokenizer, tmp_path) == []


def test_relative_pretrained_llm_resolves_from_the_working_directory(tokenizer, llm_dir, tmp_path):
    assert problems(config(llm_dir, pretrained_llm="llm"), tokenizer, tmp_path) == []
    found = problems(config(llm_dir, pretrained_llm="llm"), tokenizer, tmp_path / "elsewhere")
    assert len(found) == 1 and "does not exist" in found[0] and "working directory" in found[0]


def test_missing_or_empty_pretrained_llm(tokenizer, llm_dir, tmp_path):
    assert problems(config(llm_dir, pretrained_llm=DROP), tokenizer, tmp_path) == [
        "config.json has no 'pretrained_llm' (NeMo's SALM export writes it)"
    ]
    assert "'pretrained_llm' is empty" in problems(config(llm_dir, pretrained_llm=""), tokenizer, tmp_path)[0]


def test_pretrained_llm_that_does_not_exist_or_is_not_an_llm_folder(tokenizer, llm_dir, tmp_path):
    assert "does not exist" in problems(config(llm_dir, pretrained_llm="/nowhere/llm"), tokenizer, tmp_path)[0]
    (llm_dir / "config.json").unlink()
    assert "has no config.json" in problems(config(llm_dir), tokenizer, tmp_path)[0]


def test_pretrained_llm_hub_id_needs_the_cache_when_offline(tokenizer, llm_dir, tmp_path):
    cfg = config(llm_dir, pretrained_llm="Qwen/Qwen3-1.7B")
    assert "not in the local Hugging Face cache" in problems(cfg, tokenizer, tmp_path, offline=True)[0]
    assert problems(cfg, tokenizer, tmp_path, offline=True, cached=lambda repo: repo == "Qwen/Qwen3-1.7B") == []
    assert problems(cfg, tokenizer, tmp_path, offline=False) == []


def test_audio_tag_other_than_audio_is_refused(tokenizer, llm_dir, tmp_path):
    found = problems(config(llm_dir, audio_locator_tag="<|audioplaceholder|>"), tokenizer, tmp_path)
    assert found == [
        "audio_locator_tag is '<|audioplaceholder|>'; the plugin accepts only '<|audio|>': re-export the "
        "checkpoint with audio_locator_tag '<|audio|>' (a special token of its tokenizer)"
    ]


def test_audio_tag_that_is_several_tokens_is_refused(llm_dir, tmp_path):
    plain = tiny_models.build_tokenizer(tiny_models.CHATML_SPECIAL, chat_template=tiny_models.CHATML_TEMPLATE)
    assert len(plain.encode("<|audio|>", add_special_tokens=False)) > 1
    found = problems(config(llm_dir), plain, tmp_path)
    assert len(found) == 1 and found[0].startswith("<|audio|> is ") and "add it as a special token" in found[0]


def test_tokenizer_without_chat_template_is_refused(llm_dir, tmp_path):
    bare = tiny_models.build_tokenizer([*tiny_models.CHATML_SPECIAL, "<|audio|>"])
    found = problems(config(llm_dir), bare, tmp_path)
    assert found == ["the tokenizer has no chat template: pass --tokenizer with the LLM's tokenizer (it has one)"]


def test_no_tokenizer_at_all(llm_dir, tmp_path):
    assert "pass --tokenizer" in problems(config(llm_dir), None, tmp_path)[0]


def test_required_fields_and_perception_blocks(tokenizer, llm_dir, tmp_path):
    cfg = config(llm_dir, prompt_format=DROP, perception={"preprocessor": {}, "encoder": {}})
    assert problems(cfg, tokenizer, tmp_path) == [
        "config.json has no 'prompt_format' (NeMo's SALM export writes it)",
        "perception has no modality_adapter (NeMo _target_ configs)",
    ]
    assert "no 'perception' block" in problems(config(llm_dir, perception=DROP), tokenizer, tmp_path)[0]


def test_every_problem_is_reported_at_once(llm_dir, tmp_path):
    bare = SimpleNamespace(encode=lambda text, add_special_tokens: [1, 2, 3], chat_template=None)
    found = problems(config(llm_dir, pretrained_llm="/nowhere", audio_locator_tag="<audio>"), bare, tmp_path)
    assert len(found) == 4


def test_prepare_refuses_a_bad_checkpoint_with_what_to_fix(monkeypatch, tmp_path, llm_dir, tokenizer):
    """With the pairing in place (faked versions), a bad checkpoint is a UsageError before vLLM is imported."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(config(llm_dir, audio_locator_tag="<|speech|>")))
    tokenizer.save_pretrained(ckpt)
    monkeypatch.setattr(nemo_plugin, "installed_versions", lambda: TESTED)
    monkeypatch.setattr(nemo_plugin, "installed_entry_points", lambda: [NEMO_EP])
    with pytest.raises(UsageError, match="audio_locator_tag is '<|speech|>'") as caught:
        nemo_plugin.prepare(EngineSettings(), str(ckpt))
    assert "is not a checkpoint NeMo's vLLM plugin can load" in str(caught.value)
    (ckpt / "config.json").write_text(json.dumps(config(llm_dir)))
    assert nemo_plugin.prepare(EngineSettings(), str(ckpt)).plugin == "nemo_speechlm"


def test_tokenizer_option_is_what_gets_checked(monkeypatch, tmp_path, llm_dir, tokenizer):
    """--tokenizer: the checkpoint folder has none, the LLM's folder has it."""
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps(config(llm_dir)))
    tokenizer.save_pretrained(llm_dir)
    monkeypatch.setattr(nemo_plugin, "installed_versions", lambda: TESTED)
    monkeypatch.setattr(nemo_plugin, "installed_entry_points", lambda: [NEMO_EP])
    with pytest.raises(UsageError, match="no tokenizer found"):
        nemo_plugin.prepare(EngineSettings(), str(ckpt))
    assert nemo_plugin.prepare(EngineSettings(tokenizer=str(llm_dir)), str(ckpt)).plugin == "nemo_speechlm"
