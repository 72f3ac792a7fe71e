"""Smoke test: vLLM's CPU backend runs an encoder-decoder audio model in this venv.

Builds a tiny random Whisper (d_model 64, 1+1 layers) offline, starts vLLM on it and transcribes a few synthetic
clips. The weights are random, so the text is garbage; this checks the install, not accuracy.

Usage: .venv/bin/python scripts/smoke_vllm_cpu.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

# Set before vLLM is imported: the platform is picked at import time.
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1")  # "auto" leaves 1 OMP thread on a 2-core box
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLE_RATE_HZ = 16_000
DECODER_PROMPT = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"


def _byte_vocab() -> dict[str, int]:
    """GPT-2 byte-to-unicode alphabet: 256 single-character tokens, so any text encodes without merges."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return {chars[byte]: byte for byte in range(256)}


def build_tiny_whisper(model_dir: str) -> None:
    """Write a random 2-layer Whisper with a byte-level tokenizer and Whisper's special tokens to `model_dir`."""
    import torch
    from tokenizers import AddedToken
    from transformers import (WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    tokenizer = WhisperTokenizer(vocab=_byte_vocab(), merges=[])
    specials = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in LANGUAGES),
                "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
                "<|notimestamps|>"]
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in specials], special_tokens=True)
    eot, sot = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    config = WhisperConfig(
        vocab_size=len(tokenizer), num_mel_bins=80, d_model=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448, pad_token_id=eot, bos_token_id=eot,
        eos_token_id=eot, decoder_start_token_id=sot,
    )
    WhisperForConditionalGeneration(config).to(torch.bfloat16).save_pretrained(model_dir)  # the dtype vLLM runs
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(model_dir)


def run_smoke(model_dir: str) -> None:
    """Start vLLM on `model_dir`, transcribe 4 synthetic clips, print timings and outputs."""
    from vllm import LLM

    started_s = time.perf_counter()
    llm = LLM(model=model_dir, max_model_len=448, max_num_seqs=8, limit_mm_per_prompt={"audio": 1},
              dtype="bfloat16", enforce_eager=True, kv_cache_memory_bytes=1 << 30)
    init_s = time.perf_counter() - started_s
    try:
        _transcribe(llm, init_s)
    finally:
        # Without this the interpreter hangs at exit waiting on the engine-core process (seen: 30+ min).
        llm.llm_engine.engine_core.shutdown()


def _transcribe(llm, init_s: float) -> None:
    import numpy as np
    from vllm import SamplingParams

    rng = np.random.default_rng(0)
    prompts = []
    for duration_s in (3, 5, 8, 12):
        audio = (0.1 * rng.standard_normal(duration_s * SAMPLE_RATE_HZ)).astype(np.float32)
        prompts.append({"encoder_prompt": {"prompt": "", "multi_modal_data": {"audio": (audio, SAMPLE_RATE_HZ)}},
                        "decoder_prompt": DECODER_PROMPT})
    started_s = time.perf_counter()
    outputs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True))
    generate_s = time.perf_counter() - started_s
    for out in outputs:
        assert len(out.outputs[0].token_ids) == 16, out
    print(f"SMOKE OK: init_s={init_s:.1f} generate_s={generate_s:.2f} prompts={len(outputs)} "
          f"sample={outputs[0].outputs[0].text!r}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tiny-whisper-") as model_dir:
        build_tiny_whisper(model_dir)
        run_smoke(model_dir)
    return 0


if __name__ == "__main__":  # vLLM's CPU platform spawns its worker process
    sys.exit(main())
