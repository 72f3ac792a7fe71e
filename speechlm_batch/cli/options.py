"""Options shared by several commands, declared once (defaults come from settings.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from speechlm_batch import settings as s

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Alias (whisper-base, whisper-tiny.en), local HF folder, or hub id.")
]
OutputDirOpt = Annotated[Path, typer.Option("--output-dir", "-o", help="Where predictions and reports go.")]
ChunkOpt = Annotated[
    Optional[str],
    typer.Option("--chunk", help="Shard i/N (0-based). Default: from SLURM_ARRAY_TASK_ID/COUNT, else the whole input."),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Start over instead of resuming.")]
StrictOpt = Annotated[bool, typer.Option("--strict", help="Any bad manifest row is fatal before the engine starts.")]
LanguageOpt = Annotated[str, typer.Option("--language", help="Spoken language (ISO 639-1) for multilingual models.")]
FamilyOpt = Annotated[Optional[str], typer.Option("--family", help="Model family; default: from the architecture.")]
PromptOpt = Annotated[str, typer.Option("--prompt", help="Task prompt for chat-style speech LLMs.")]
PlaceholderOpt = Annotated[str, typer.Option("--audio-placeholder", help="Audio placeholder in the prompt.")]
MaxTokensOpt = Annotated[
    Optional[int], typer.Option("--max-tokens", help="Token cap per piece; default from the audio duration.")
]
TokensPerSOpt = Annotated[float, typer.Option("--tokens-per-second", help="Runaway guard budget per audio second.")]
CollapseOpt = Annotated[bool, typer.Option("--collapse-loops", help="Collapse n-gram repetition loops (counted).")]
WindowOpt = Annotated[int, typer.Option("--window", help="Rows decoded and written per window (memory bound).")]
WorkersOpt = Annotated[int, typer.Option("--decode-workers", help="Threads decoding/resampling ahead of the engine.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto = bfloat16 on CPU, the checkpoint's dtype on GPU.")]
MaxModelLenOpt = Annotated[Optional[int], typer.Option("--max-model-len")]
MaxNumSeqsOpt = Annotated[Optional[int], typer.Option("--max-num-seqs")]
MaxBatchedTokensOpt = Annotated[
    Optional[int], typer.Option("--max-num-batched-tokens", help="Also Whisper's encoder budget (1500 per clip).")
]
GpuMemOpt = Annotated[float, typer.Option("--gpu-memory-utilization")]
KvCacheOpt = Annotated[Optional[float], typer.Option("--kv-cache-gib", help=f"KV cache size (CPU default {s.CPU_KV_CACHE_GIB}).")]
TpOpt = Annotated[int, typer.Option("--tensor-parallel-size")]
EagerOpt = Annotated[
    Optional[bool],
    typer.Option("--enforce-eager/--compile", help="Skip torch.compile / CUDA graphs. Default: eager on CPU only."),
]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run code shipped with the model (off by default).")]
PluginOpt = Annotated[Optional[str], typer.Option("--plugin", help="vLLM general plugin(s) to load (VLLM_PLUGINS).")]
HfOverridesOpt = Annotated[Optional[str], typer.Option("--hf-overrides", help="JSON merged into the model's HF config.")]
TokenizerOpt = Annotated[Optional[str], typer.Option("--tokenizer", help="Tokenizer override (default: the model's).")]
