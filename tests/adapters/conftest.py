"""Adapter unit tests: real tokenizers with real chat templates (built offline), fake vLLM model classes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from speechlm_batch.adapters.base import ModelInfo


def load_tiny_models():
    """tests/fixtures/tiny_models.py by path (tests/fixtures is not a package)."""
    if "tiny_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tiny_models", Path(__file__).parents[1] / "fixtures" / "tiny_models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["tiny_models"] = module
        spec.loader.exec_module(module)
    return sys.modules["tiny_models"]


tiny_models = load_tiny_models()


@pytest.fixture(scope="session")
def nemotron_tokenizer():
    """ChatML specials, `<|audio|>`, `<think>`, and a NemotronH-style template (assistant opens `<think>\\n`)."""
    return tiny_models.build_tokenizer(
        [*tiny_models.CHATML_SPECIAL, "<|audio|>", "<think>", "</think>"], chat_template=tiny_models.NEMOTRON_H_TEMPLATE
    )


@pytest.fixture(scope="session")
def chatml_tokenizer():
    """Qwen-style ChatML template plus Qwen2-Audio's audio tokens."""
    return tiny_models.build_tokenizer(
        [*tiny_models.CHATML_SPECIAL, "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>", "<|audio|>"],
        chat_template=tiny_models.CHATML_TEMPLATE,
    )


@pytest.fixture
def make_info():
    """Build a ModelInfo as the engine would, from whatever parts a test provides."""
    return fake_info


def fake_info(tokenizer: Any = None, *, model_cls: Any = None, hf_config: Any = None, max_model_len: int = 4096,
              architectures: tuple[str, ...] = ("FakeForConditionalGeneration",), model_config: Any = None) -> ModelInfo:
    return ModelInfo(
        name="fake", architectures=architectures, hf_config=hf_config, tokenizer=tokenizer,
        max_model_len=max_model_len, model_config=model_config, model_cls=model_cls,
    )
