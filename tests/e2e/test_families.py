"""Issue 5 end to end: the speech-LLM families on the real vLLM engine (CPU), with tiny random checkpoints.

Two engine starts: a GLM-ASR (`transcription`, the model's own SupportsTranscription prompt) and a
Qwen2-Audio (`chat-audio`). The `nemo-speechlm` family runs with NVIDIA's real plugin in its own environment:
tests/e2e/test_nemo_speechlm_plugin.py.
Random weights transcribe nothing, so the assertions are what can fail: the exact prompt, that the audio
reaches the model (different audio -> different greedy text; the same audio -> the same text whatever the
batch), long audio split into the expected number of pieces, the token cap and every row written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from sample_rows import absolute_rows

from speechlm_batch import audio as audio_io
from speechlm_batch import runner
from speechlm_batch.adapters import resolve_adapter
from speechlm_batch.adapters.chat_audio import ChatAudioAdapter
from speechlm_batch.adapters.transcription import TranscriptionAdapter
from speechlm_batch.outputs import read_predictions
from speechlm_batch.settings import DecodeSettings, EngineSettings, RunSettings
from speechlm_batch.sources import open_manifest
from speechlm_batch.types import AudioPiece, RowError


def _load_tiny_models():
    # By path: tests/fixtures is not a package.
    if "tiny_models" not in sys.modules:
        spec = importlib.util.spec_from_file_location("tiny_models", Path(__file__).parents[1] / "fixtures" / "tiny_models.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["tiny_models"] = module
        spec.loader.exec_module(module)
    return sys.modules["tiny_models"]


tiny_models = _load_tiny_models()
pytestmark = pytest.mark.engine

KV_CACHE_GIB = 0.25
MAX_MODEL_LEN = 2048
LONG_ID = "asterisk/demo-instruct"  # 73.3 s
LIBRIVOX = "librivox.jsonl"



def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _mixed_rows(manifests: Path) -> list[dict]:
    """jfk twice (first and last, different ids) around five LibriVox clips."""
    jfk = absolute_rows(manifests, "jfk.jsonl")[0]
    return [{**jfk, "id": "jfk-a"}, *absolute_rows(manifests, LIBRIVOX), {**jfk, "id": "jfk-b"}]


def _run(engine, manifest: Path, out: Path, decode: DecodeSettings = DecodeSettings()) -> dict[str, dict]:
    settings = RunSettings(engine=EngineSettings(model=engine.info.name), decode=decode)
    outcome = runner.run_source(open_manifest(manifest), settings, out, model_path=engine.info.name, engine=engine)
    assert not outcome.interrupted
    return {row["_id"]: row for row in read_predictions(outcome.predictions_path)}


def _start(model_dir: Path):
    from speechlm_batch.engine import Engine

    settings = EngineSettings(model=str(model_dir), kv_cache_gib=KV_CACHE_GIB, max_model_len=MAX_MODEL_LEN, max_num_seqs=16)
    return Engine.create(settings, str(model_dir))


def _assert_audio_reaches_the_model(rows: dict[str, dict], alone: dict[str, dict]) -> None:
    assert all("error" not in r and r["pred_text"] for r in rows.values()), rows
    different = [rows[i]["pred_text"] for i in rows if i != "jfk-b"]
    assert len(set(different)) == len(different), different  # six clips, six different outputs
    assert rows["jfk-a"]["pred_text"] == rows["jfk-b"]["pred_text"] == alone["jfk"]["pred_text"]


class TestTranscriptionFamily:
    """GLM-ASR: a native SupportsTranscription model (Qwen3-ASR's vLLM module needs torchvision, absent here)."""

    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, tmp_path_factory):
        eng = _start(tiny_models.build_glm_asr(tmp_path_factory.mktemp("glm-asr")))
        yield eng
        eng.shutdown()

    def test_prompt_is_the_models_own_transcription_prompt(self, engine):
        adapter = resolve_adapter(engine.info, DecodeSettings())
        assert isinstance(adapter, TranscriptionAdapter)
        assert (adapter.sample_rate, adapter.max_piece_s) == (16000, float(tiny_models.GLM_ASR_MAX_AUDIO_S))
        request = adapter.request(AudioPiece("u", 0, 1, np.zeros(16000, dtype=np.float32), 16000))
        text = engine.info.tokenizer.decode(request.prompt["prompt_token_ids"])
        assert text == "<|user|>\n<|pad|>can you transcribe the speech into a written format?<|assistant|>\n"

    def test_audio_reaches_the_model_and_batches_do_not_matter(self, engine, manifests_dir, tmp_path):
        rows = _run(engine, _write(tmp_path / "mixed.jsonl", _mixed_rows(manifests_dir)), tmp_path / "mixed")
        assert sorted(rows) == sorted(["jfk-a", *(r["id"] for r in absolute_rows(manifests_dir, LIBRIVOX)), "jfk-b"])
        alone = _run(engine, manifests_dir / "jfk.jsonl", tmp_path / "alone")
        _assert_audio_reaches_the_model(rows, alone)

    def test_long_audio_is_split_at_the_models_clip_length(self, engine, manifests_dir, tmp_path):
        long_row = next(r for r in absolute_rows(manifests_dir, "asterisk-long.jsonl") if r["id"] == LONG_ID)
        rows = _run(engine, _write(tmp_path / "long.jsonl", [long_row]), tmp_path / "out")
        expected = math.ceil(long_row["duration"] / tiny_models.GLM_ASR_MAX_AUDIO_S)
        assert expected == 3 and rows[LONG_ID]["_pieces"] == expected
        assert rows[LONG_ID]["pred_text"]

    def test_token_cap_is_honoured(self, engine, manifests_dir):
        utt = next(iter(open_manifest(manifests_dir / "jfk.jsonl")))
        decoded = audio_io.read(utt, 16000)
        assert not isinstance(decoded, RowError)
        piece = AudioPiece("jfk", 0, 1, decoded.samples, 16000)
        capped = resolve_adapter(engine.info, DecodeSettings(max_tokens=7)).request(piece)
        one_s = AudioPiece("short", 0, 1, decoded.samples[:16000], 16000)
        guarded = resolve_adapter(engine.info, DecodeSettings()).request(one_s)
        assert (capped.max_tokens, guarded.max_tokens) == (7, 12 + 16)
        done = {c.key: c for c in engine.run([("capped", capped), ("guarded", guarded)], 2)}
        assert 0 < done["capped"].num_tokens <= 7
        assert 0 < done["guarded"].num_tokens <= 28


class TestChatAudioFamily:
    """Qwen2-Audio: chat template + the placeholder vLLM's own Qwen2-Audio class declares."""

    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls, tmp_path_factory):
        eng = _start(tiny_models.build_qwen2_audio(tmp_path_factory.mktemp("qwen2-audio")))
        yield eng
        eng.shutdown()

    def test_prompt_uses_the_models_placeholder(self, engine):
        adapter = resolve_adapter(engine.info, DecodeSettings())
        assert isinstance(adapter, ChatAudioAdapter)
        assert adapter.prompt_text == (
            "<|im_start|>user\nTranscribe the following: Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|><|im_end|>\n"
            "<|im_start|>assistant\n"
        )
        assert (adapter.sample_rate, adapter.max_piece_s) == (16000, 30.0)  # the feature extractor's window

    def test_audio_reaches_the_model_and_batches_do_not_matter(self, engine, manifests_dir, tmp_path):
        rows = _run(engine, _write(tmp_path / "mixed.jsonl", _mixed_rows(manifests_dir)), tmp_path / "mixed")
        assert len(rows) == 7
        alone = _run(engine, manifests_dir / "jfk.jsonl", tmp_path / "alone")
        _assert_audio_reaches_the_model(rows, alone)
