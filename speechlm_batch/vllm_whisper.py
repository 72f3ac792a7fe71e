"""vLLM's Whisper, accepting log-mels whose repeated padding frames were trimmed (whisper_features.py).

The engine loads this class in place of vLLM's `WhisperForConditionalGeneration` through the engine argument
`model_class_overrides` (engine.py), in every vLLM process. It differs in one step: before the encoder
runs, each clip's features are padded back to the encoder's 3,000 frames by repeating their last frame.
Untrimmed features pass through unchanged, so requests vLLM renders itself decode exactly as before.

Importing this module imports vLLM: only vLLM's model registry does, inside the engine's processes.
"""

from __future__ import annotations

from typing import Any

from vllm.model_executor.models.whisper import WhisperForConditionalGeneration

from speechlm_batch.whisper_features import FEATURES_KEY, restore_frames

CONV_STRIDE = 2  # the encoder's second convolution halves the frames: 3,000 log-mel frames -> 1,500 positions


class TrimmedFeaturesWhisper(WhisperForConditionalGeneration):
    def _parse_and_validate_audio_input(self, **kwargs: Any) -> Any:
        features = kwargs.pop(FEATURES_KEY, None)
        if features is not None:
            features = restore_frames(features, CONV_STRIDE * self.model.encoder.max_source_positions)
        return super()._parse_and_validate_audio_input(**{FEATURES_KEY: features}, **kwargs)
