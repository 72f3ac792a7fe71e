"""Whisper's log-mel without its padding: trimmed where front-end workers render, restored inside the engine.

Whisper's encoder sees 30 s. Every clip is padded with zeros to 30 s before its log-mel is computed, so a
2.4 s clip (the Asterisk mean) is 92 % padding, and every frame of that padding is the same column (the
spectrogram's floor). With the front end in worker processes, the process that feeds the engine spent most
of its time moving those 3,000 frames: unpickling them from the worker, then vLLM serialising them for its
engine core (H200 stack samples, docs/benchmarks.md). So a worker cuts the trailing run of columns equal to
the last one, keeping one of them, and the engine's model (`vllm_whisper.py`) repeats that column back to
3,000 frames before the encoder runs. Columns are compared bit for bit, so the encoder sees the same input.

Only rendered requests (the worker path) are trimmed; requests vLLM renders itself keep every frame, which
the engine's model accepts unchanged.
"""

from __future__ import annotations

from typing import Any

FEATURES_KEY = "input_features"  # the kwarg vLLM's Whisper processor produces for each audio item
WHISPER_ARCHITECTURE = "WhisperForConditionalGeneration"
MODEL_CLASS = "speechlm_batch.vllm_whisper:TrimmedFeaturesWhisper"  # vLLM's "module:class" form


def _bits(features: Any) -> Any:
    """The tensor's bits as integers of the same width: equal bits compare equal, NaN and -0.0 included."""
    import torch

    widths = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return features.view(widths[features.element_size()])


def trim_repeated_tail(features: Any) -> Any:
    """`features` (..., bins, frames) without the trailing frames equal to its last frame, keeping one of them.

    Returns the tensor itself when nothing repeats, else a compact copy (a view would still pickle all frames).
    """
    frames = features.shape[-1]
    bits = _bits(features.contiguous())
    differs = (bits != bits[..., -1:]).flatten(0, -2).any(dim=0)  # per frame: not equal to the last frame
    changed = differs.nonzero()
    keep = int(changed[-1]) + 2 if len(changed) else 1  # the last differing frame, then one repeated frame
    if keep >= frames:
        return features
    return features[..., :keep].clone()


def restore_frames(features: Any, frames: int) -> Any:
    """Trimmed features (one tensor, or vLLM's list of them when their lengths differ; frames last) padded back
    to `frames` by repeating each one's last frame. A list comes back stacked, as vLLM batches equal shapes."""
    import torch

    def pad(tensor: Any) -> Any:
        missing = frames - tensor.shape[-1]
        if missing <= 0:
            return tensor
        return torch.cat([tensor, tensor[..., -1:].expand(*tensor.shape[:-1], missing)], dim=-1)

    if isinstance(features, torch.Tensor):
        return pad(features)
    return torch.stack([pad(t) for t in features])


def trimming_engine_kwargs(architectures: list[str], engine_fields: set[str]) -> dict[str, Any]:
    """The `LLM` argument that loads the trimming-aware Whisper, for a Whisper checkpoint and a vLLM that has
    `model_class_overrides` (0.26 and 0.32 do); otherwise nothing, and requests keep every frame."""
    if architectures != [WHISPER_ARCHITECTURE] or "model_class_overrides" not in engine_fields:
        return {}
    return {"model_class_overrides": {WHISPER_ARCHITECTURE: MODEL_CLASS}}


def accepts_trimmed(engine_kwargs: dict[str, Any]) -> bool:
    """Whether the engine started with these arguments restores trimmed features."""
    return (engine_kwargs.get("model_class_overrides") or {}).get(WHISPER_ARCHITECTURE) == MODEL_CLASS


def trim_rendered(engine_input: Any, dtype: Any = None) -> Any:
    """A rendered request with each audio item's log-mel trimmed (and cast to `dtype`, the engine's, which
    it casts to anyway: half the bytes again for fp16 / bf16). Changes the input in place and returns it."""
    for item in _audio_items(engine_input):
        element = item.get(FEATURES_KEY)
        if element is None or element.data is None:
            continue
        data = element.data if dtype is None else element.data.to(dtype)
        element.data = trim_repeated_tail(data)
    return engine_input


def _audio_items(engine_input: Any) -> list[Any]:
    """The audio items of a rendered request's multimodal kwargs, wherever vLLM's input layout keeps them."""
    prompts = [engine_input, engine_input.get("encoder_prompt"), engine_input.get("decoder_prompt")]
    items: list[Any] = []
    for prompt in prompts:
        kwargs = prompt.get("mm_kwargs") if isinstance(prompt, dict) else None
        if kwargs is not None:
            items += [item for item in kwargs.get("audio", ()) if item is not None]
    return items
