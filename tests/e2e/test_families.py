"""Issue 5 end to end: every speech-LLM family on the real vLLM engine (CPU), with tiny random checkpoints.

Three engine starts in all: a GLM-ASR (`transcription`, the model's own SupportsTranscription prompt), a
Qwen2-Audio (`chat-audio`) and the NeMo Speech LM test plugin (`nemo-speechlm`, whole CLI, `--plugin`).
Random weights transcribe nothing, so the assertions are what can fail: the exact prompt, that the audio
reaches the model (different audio -> different greedy text; the same audio -> the same text whatever the
batch), long audio split into the expected number of pieces, the token cap, every row written, and that vLLM
loaded the plugin through its entry point.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speechlm_batch import audio as audio_io
from speechlm_batch import runner
from speechlm_batch.adapters import resolve_adapter
from speechlm_batch.adapters.chat_audio import ChatAudioAdapter
from speechlm_batch.adapters.nemo_speechlm import AUDIO_TOKENS_PER_S, OUTPUT_RESERVE_TOKENS
from speechlm_batch.adapters.transcription import TranscriptionAdapter
from speechlm_batch.outputs import read_predictions
from speechlm_batch.settings import DecodeSettings, EngineSettings, RunSettings
from speechlm_batch.sources import open_manifest
from speechlm_batch.types import AudioPiece, RowError


def _load_tiny_models():
    # By path, not via sys.path: tests/fixtures on sys.path would shadow the installed test plugin package
    # (its source folder would import as an empty namespace package in vLLM's spawned processes).
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


def _rows(manifests: Path, name: str) -> list[dict]:
    """Manifest rows with absolute audio paths, so they can be mixed into new manifests."""
    rows = []
    for line in (manifests / name).read_text().splitlines():
        row = json.loads(line)
        row["audio_filepath"] = str((manifests / row["audio_filepath"]).resolve())
        rows.append(row)
    return rows


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _mixed_rows(manifests: Path) -> list[dict]:
    """jfk twice (first and last, different ids) around five LibriVox clips."""
    jfk = _rows(manifests, "jfk.jsonl")[0]
    return [{**jfk, "id": "jfk-a"}, *_rows(manifests, LIBRIVOX), {**jfk, "id": "jfk-b"}]


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
        assert sorted(rows) == sorted(["jfk-a", *(r["id"] for r in _rows(manifests_dir, LIBRIVOX)), "jfk-b"])
        alone = _run(engine, manifests_dir / "jfk.jsonl", tmp_path / "alone")
        _assert_audio_reaches_the_model(rows, alone)

    def test_long_audio_is_split_at_the_models_clip_length(self, engine, manifests_dir, tmp_path):
        long_row = next(r for r in _rows(manifests_dir, "asterisk-long.jsonl") if r["id"] == LONG_ID)
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


class TestNeMoSpeechLMPlugin:
    """The whole CLI with `--plugin nemo_speechlm`: vLLM finds the test plugin through its entry point."""

    MAX_MODEL_LEN = 1024  # (1024 - 512 - prompt) / 12.5 = ~37 s pieces: the 73 s row needs two

    @pytest.fixture(scope="class")
    @classmethod
    def cli_run(cls, tmp_path_factory, manifests_dir):
        work = tmp_path_factory.mktemp("nemo")
        model = tiny_models.build_nemo_speechlm(work / "model")
        long_row = next(r for r in _rows(manifests_dir, "asterisk-long.jsonl") if r["id"] == LONG_ID)
        manifest = _write(work / "in.jsonl", [*_mixed_rows(manifests_dir), long_row])
        marker = work / "plugin-marker.txt"
        env = {k: v for k, v in os.environ.items() if k != "VLLM_PLUGINS"}  # --plugin must set it
        env.update(SPEECHLM_TEST_PLUGIN_MARKER=str(marker), HF_HUB_OFFLINE="1")
        cmd = [
            sys.executable, "-m", "speechlm_batch", "transcribe", str(manifest), "--model", str(model),
            "--family", "nemo-speechlm", "--plugin", "nemo_speechlm", "--kv-cache-gib", str(KV_CACHE_GIB),
            "--max-model-len", str(cls.MAX_MODEL_LEN), "--output-dir", str(work / "out"),
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        return done, work, manifest, marker

    def test_cli_succeeds_and_writes_every_row(self, cli_run):
        done, work, manifest, _ = cli_run
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        rows = {r["_id"]: r for r in read_predictions(next((work / "out").glob("predictions*.jsonl")))}
        ids = [json.loads(line)["id"] for line in manifest.read_text().splitlines()]
        assert sorted(rows) == sorted(ids)
        assert all("error" not in r and r["pred_text"] for r in rows.values())

    def test_vllm_loaded_the_plugin_through_its_entry_point(self, cli_run):
        done, _, _, marker = cli_run
        assert done.returncode == 0
        lines = marker.read_text().splitlines()
        pids = {line.split("pid=")[1] for line in lines}
        assert lines and all(line.startswith("nemo_speechlm_test_plugin.register") for line in lines)
        assert len(pids) >= 2  # the CLI process and vLLM's engine-core / worker processes

    def test_prompt_ends_with_the_templates_think_opener(self, cli_run):
        done, work, _, _ = cli_run
        assert done.returncode == 0
        adapter = json.loads((work / "out" / "report.json").read_text())["settings"]["adapter"]
        assert adapter["family"] == "nemo-speechlm"
        assert adapter["prompt"] == (
            "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nTranscribe the following: <|audio|><|im_end|>\n"
            "<|im_start|>assistant\n<think>\n"
        )
        expected = (self.MAX_MODEL_LEN - OUTPUT_RESERVE_TOKENS - adapter["prompt_tokens"] - 1) / AUDIO_TOKENS_PER_S
        assert adapter["max_piece_s"] == pytest.approx(expected, abs=0.1)

    def test_audio_reaches_the_model_and_long_audio_is_split(self, cli_run, manifests_dir):
        done, work, _, _ = cli_run
        assert done.returncode == 0
        rows = {r["_id"]: r for r in read_predictions(next((work / "out").glob("predictions*.jsonl")))}
        max_piece_s = json.loads((work / "out" / "report.json").read_text())["settings"]["adapter"]["max_piece_s"]
        assert rows[LONG_ID]["_pieces"] == math.ceil(rows[LONG_ID]["duration"] / max_piece_s) == 2
        mixed = {k: v for k, v in rows.items() if k != LONG_ID}
        texts = [r["pred_text"] for k, r in mixed.items() if k != "jfk-b"]
        assert len(set(texts)) == len(texts), texts
        assert mixed["jfk-a"]["pred_text"] == mixed["jfk-b"]["pred_text"]
