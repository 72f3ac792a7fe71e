"""Checks that need no engine, run before it starts (which takes minutes on a large model).

Each failed check raises `UsageError` with a message that says what to do. Model checks read only the JSON
files of a local model folder (config.json, generation_config.json, tokenizer_config.json, tokenizer.json):
a hub id that is not a local folder skips them, and the engine's own checks still apply then.

    family        known (a library caller may pass any string; the CLI also limits --family to the choices)
    language      Whisper: the checkpoint has the language token (its generation_config lang_to_id, else
                  its tokenizer); English-only checkpoints take no language
    chat template chat-audio / nemo-speechlm: the tokenizer has one (tokenizer_config.json, or a
                  chat_template.jinja / chat_template.json beside it)
    placeholder   nemo-speechlm: the audio placeholder is a token of the tokenizer
    output folder writable (or creatable), with at least MIN_FREE_BYTES free
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from speechlm_batch.adapters import ARCHITECTURE_FAMILIES, FAMILIES
from speechlm_batch.adapters.whisper import MULTILINGUAL_VOCAB_SIZE
from speechlm_batch.errors import UsageError
from speechlm_batch.settings import RunSettings

MIN_FREE_BYTES = 256 << 20  # predictions are small; below this a long run fails half-way on a full disk
CHAT_FAMILIES = ("chat-audio", "nemo-speechlm")


@dataclass(frozen=True)
class LocalModel:
    """The JSON files of a local model folder (and of a separate tokenizer folder, when given)."""

    path: Path
    config: Mapping[str, Any]
    generation_config: Mapping[str, Any]
    tokenizer_config: Mapping[str, Any]
    tokenizer_dir: Path

    @classmethod
    def read(cls, model_path: str, tokenizer: str | None = None) -> LocalModel | None:
        """None when `model_path` is not a local folder with a config.json (a hub id)."""
        path = Path(model_path).expanduser()
        if not (path / "config.json").is_file():
            return None
        tok_dir = Path(tokenizer).expanduser() if tokenizer and Path(tokenizer).expanduser().is_dir() else path
        return cls(
            path, _json(path / "config.json"), _json(path / "generation_config.json"),
            _json(tok_dir / "tokenizer_config.json"), tok_dir,
        )

    @property
    def family(self) -> str | None:
        """The family the architecture names, if it names one (the rest need vLLM's model class to tell)."""
        for arch in self.config.get("architectures") or ():
            if arch in ARCHITECTURE_FAMILIES:
                return ARCHITECTURE_FAMILIES[arch]
        return None

    def token_strings(self) -> set[str]:
        """Added / special tokens of the tokenizer (tokenizer.json and tokenizer_config.json)."""
        found = {str(t.get("content")) for t in _json(self.tokenizer_dir / "tokenizer.json").get("added_tokens", [])}
        decoder = self.tokenizer_config.get("added_tokens_decoder") or {}
        found |= {str(t.get("content")) for t in decoder.values() if isinstance(t, Mapping)}
        found |= set(_json(self.tokenizer_dir / "added_tokens.json"))
        vocab = _json(self.tokenizer_dir / "tokenizer.json").get("model", {}).get("vocab")
        if isinstance(vocab, Mapping):
            found |= set(vocab)
        return found

    def has_chat_template(self) -> bool:
        if self.tokenizer_config.get("chat_template"):
            return True
        return any((self.tokenizer_dir / name).is_file() for name in ("chat_template.jinja", "chat_template.json"))


def check_run(settings: RunSettings, model_path: str, output_dir: Path) -> str | None:
    """Every check that needs no engine; returns the family when the checkpoint's files say it."""
    check_numbers(settings)
    decode = settings.decode
    if decode.family is not None and decode.family not in FAMILIES:
        raise UsageError(f"unknown model family {decode.family!r}", hint=f"choose --family from: {', '.join(FAMILIES)}")
    check_output_dir(Path(output_dir))
    model = LocalModel.read(model_path, settings.engine.tokenizer)
    if model is None:
        return decode.family
    family = decode.family or model.family
    if family == "whisper":
        check_whisper_language(model, decode.language)
    if family in CHAT_FAMILIES:
        check_chat_template(model)
    if family == "nemo-speechlm":
        check_placeholder(model, decode.audio_placeholder)
    return family


def check_numbers(settings: RunSettings) -> None:
    """Counts and sizes that must be positive (Typer's own ranges would crowd the 80-column help)."""
    engine = settings.engine
    positive = {
        "--window": settings.window_rows, "--decode-workers": settings.decode_workers,
        "--tensor-parallel-size": engine.tensor_parallel_size, "--max-model-len": engine.max_model_len,
        "--max-num-seqs": engine.max_num_seqs, "--max-num-batched-tokens": engine.max_num_batched_tokens,
        "--kv-cache-gib": engine.kv_cache_gib, "--max-tokens": settings.decode.max_tokens,
        "--tokens-per-second": settings.decode.tokens_per_s,
    }
    for name, value in positive.items():
        if value is not None and value <= 0:
            raise UsageError(f"{name} must be greater than 0, got {value}")
    if not 0 < engine.gpu_memory_utilization <= 1:
        raise UsageError(
            f"--gpu-memory-utilization is a fraction of GPU memory in (0, 1], got {engine.gpu_memory_utilization}"
        )


def whisper_languages(model: LocalModel) -> list[str] | None:
    """Language codes the checkpoint has tokens for; None when it is English-only."""
    if int(model.config.get("vocab_size") or 0) < MULTILINGUAL_VOCAB_SIZE:
        return None
    lang_to_id = model.generation_config.get("lang_to_id")
    tokens = list(lang_to_id) if isinstance(lang_to_id, Mapping) else list(model.token_strings())
    codes = [t[2:-2] for t in tokens if t.startswith("<|") and t.endswith("|>") and 2 <= len(t) - 4 <= 5]
    return sorted(c for c in codes if c.isalpha() and c.islower())


def check_whisper_language(model: LocalModel, language: str) -> None:
    codes = whisper_languages(model)
    if codes is None or not codes:  # English-only: the prompt takes no language token
        return
    if language not in codes:
        raise UsageError(
            f"{model.path.name} has no language {language!r}",
            hint=f"use --language with one of its {len(codes)} codes: {', '.join(codes)}",
        )


def check_chat_template(model: LocalModel) -> None:
    if not model.has_chat_template():
        raise UsageError(
            f"the tokenizer of {model.tokenizer_dir} has no chat template, which this model family prompts with",
            hint="pass --tokenizer with a folder whose tokenizer_config.json has one, or choose another --family",
        )


def check_placeholder(model: LocalModel, placeholder: str) -> None:
    if placeholder not in model.token_strings():
        raise UsageError(
            f"the audio placeholder {placeholder!r} is not a token of {model.tokenizer_dir}'s tokenizer",
            hint="pass --audio-placeholder with the model's audio token, or --tokenizer with the model's own",
        )


def check_output_dir(output_dir: Path, min_free_bytes: int = MIN_FREE_BYTES) -> None:
    """The folder (or the nearest existing parent it would be created in) is writable and has room."""
    existing = output_dir.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"--output-dir {output_dir}: {existing} is a file", hint="choose a folder for --output-dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output-dir {output_dir}: {existing} is not writable",
            hint="choose a folder you can write to, or fix its permissions",
        )
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise UsageError(
            f"--output-dir {output_dir}: only {free / 2**20:.0f} MiB free on its disk "
            f"(at least {min_free_bytes / 2**20:.0f} MiB needed)",
            hint="free some space, or choose an --output-dir on another disk",
        )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
