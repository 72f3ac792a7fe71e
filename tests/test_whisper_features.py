"""whisper_features: trimming a log-mel's repeated padding frames and restoring them, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from sample_rows import absolute_rows
from speechlm_batch import whisper_features as wf

FRAMES = 3000


@pytest.fixture(scope="module")
def speech_features(manifests_dir) -> torch.Tensor:
    """The real log-mel of a short Asterisk clip, padded to 30 s as Whisper's feature extractor pads it."""
    from transformers import WhisperFeatureExtractor

    row = absolute_rows(manifests_dir, "asterisk.jsonl")[0]
    audio, rate = sf.read(row["audio_filepath"], dtype="float32")
    audio = soxr.resample(audio, rate, 16000)  # Asterisk's prompts are 8 kHz telephone speech
    assert 0 < len(audio) < 10 * 16000
    out = WhisperFeatureExtractor()(audio, sampling_rate=16000, return_tensors="pt")
    return out["input_features"][0]  # (80, 3000) float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_a_real_log_mel_trims_to_its_speech_and_restores_exactly(speech_features, dtype):
    full = speech_features.to(dtype)
    trimmed = wf.trim_repeated_tail(full)
    assert trimmed.shape[0] == 80 and trimmed.shape[1] < FRAMES // 3  # a short clip: most frames were padding
    assert trimmed.is_contiguous() and trimmed.untyped_storage().nbytes() == trimmed.numel() * trimmed.element_size()
    restored = wf.restore_frames(trimmed, FRAMES)
    assert restored.shape == full.shape and torch.equal(restored.view(torch.uint8), full.view(torch.uint8))


def test_only_frames_equal_to_the_last_are_cut():
    features = torch.zeros(2, 10)
    features[:, 6:] = 5.0
    features[1, 7] = -0.0  # equal to 0.0 as a float, not as bits: not part of the repeated tail
    assert wf.trim_repeated_tail(features).shape == (2, 9)
    features[1, 7] = 5.0
    assert wf.trim_repeated_tail(features).shape == (2, 7)  # frames 6-9 repeat: one of them stays
    assert wf.trim_repeated_tail(torch.ones(3, 4)).shape == (3, 1)
    varied = torch.arange(12.0).reshape(3, 4)
    assert wf.trim_repeated_tail(varied) is varied  # nothing repeats: the tensor itself


def test_restore_pads_lists_of_lengths_and_leaves_full_features_alone():
    a, b = torch.rand(80, 7), torch.rand(80, 12)
    batch = wf.restore_frames([a, b], 20)
    assert batch.shape == (2, 80, 20)
    assert torch.equal(batch[0, :, :7], a) and torch.equal(batch[0, :, 7:], a[:, -1:].expand(80, 13))
    full = torch.rand(3, 80, 20)
    assert wf.restore_frames(full, 20) is full


def test_the_model_override_is_asked_only_for_whisper_on_a_vllm_that_has_it():
    kwargs = wf.trimming_engine_kwargs(["WhisperForConditionalGeneration"], {"model", "model_class_overrides"})
    assert kwargs == {"model_class_overrides": {"WhisperForConditionalGeneration": wf.MODEL_CLASS}}
    assert wf.accepts_trimmed(kwargs) and not wf.accepts_trimmed({})
    assert wf.trimming_engine_kwargs(["WhisperForConditionalGeneration"], {"model"}) == {}
    assert wf.trimming_engine_kwargs(["Qwen2AudioForConditionalGeneration"], {"model_class_overrides"}) == {}
    json.dumps(kwargs)  # travels to the front-end workers and into report.json


def test_trim_rendered_finds_the_audio_items_of_an_encoder_decoder_input():
    class Elem:
        def __init__(self, data):
            self.data = data

    features = torch.cat([torch.rand(80, 50), torch.full((80, 2950), -0.5)], dim=1)
    item = {wf.FEATURES_KEY: Elem(features)}
    rendered = {"type": "enc_dec", "encoder_prompt": {"mm_kwargs": {"audio": [item]}}, "decoder_prompt": {}}
    assert wf.trim_rendered(rendered, torch.float16) is rendered
    data = item[wf.FEATURES_KEY].data
    assert data.dtype == torch.float16 and data.shape == (80, 51)
    assert np.array_equal(wf.restore_frames(data, FRAMES).numpy(), features.to(torch.float16).numpy())
