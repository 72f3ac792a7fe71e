"""Path fixtures, plus one real vLLM engine (whisper-base) shared by the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"

# Test engines are small: a little KV cache, both cores, no hub access.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
TEST_KV_CACHE_GIB = 0.5


@pytest.fixture(scope="session")
def manifests_dir() -> Path:
    if not (MANIFESTS / "audio").is_dir():
        pytest.fail("sample audio missing: run `make setup` (scripts/setup.sh) first")
    return MANIFESTS


@pytest.fixture(scope="session")
def whisper_base() -> str:
    from speechlm_batch.models.store import ensure_model

    return str(ensure_model("whisper-base"))


@pytest.fixture(scope="session")
def engine(whisper_base):
    """The one whisper-base engine of the session (start-up costs ~35 s on 2 cores)."""
    from speechlm_batch.engine import Engine
    from speechlm_batch.settings import EngineSettings

    eng = Engine.create(EngineSettings(model="whisper-base", kv_cache_gib=TEST_KV_CACHE_GIB), whisper_base)
    yield eng
    eng.shutdown()
