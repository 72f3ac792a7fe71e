"""`speechlm-batch transcribe MANIFEST.jsonl`: predictions plus a WER / RTFx report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from speechlm_batch.cli import common
from speechlm_batch.cli.options import *  # noqa: F403 - the shared option aliases
from speechlm_batch.errors import UsageError
from speechlm_batch.models.store import resolve_model
from speechlm_batch.sources.manifest import validate_manifest
from speechlm_batch.sources import open_manifest

E, D, R = common.ENGINE_DEFAULTS, common.DECODE_DEFAULTS, common.RUN_DEFAULTS


def transcribe(
    manifest: Annotated[Path, typer.Argument(help="NeMo-style JSONL manifest.", exists=True, dir_okay=False)],
    model: ModelOpt = E.model,
    output_dir: OutputDirOpt = Path("outputs"),
    chunk: ChunkOpt = None,
    overwrite: OverwriteOpt = False,
    strict: StrictOpt = R.strict,
    language: LanguageOpt = D.language,
    family: FamilyOpt = D.family,
    prompt: PromptOpt = D.prompt,
    audio_placeholder: PlaceholderOpt = D.audio_placeholder,
    max_tokens: MaxTokensOpt = D.max_tokens,
    tokens_per_second: TokensPerSOpt = D.tokens_per_s,
    collapse_loops: CollapseOpt = D.collapse_loops,
    window: WindowOpt = R.window_rows,
    decode_workers: WorkersOpt = R.decode_workers,
    dtype: DtypeOpt = E.dtype,
    max_model_len: MaxModelLenOpt = E.max_model_len,
    max_num_seqs: MaxNumSeqsOpt = E.max_num_seqs,
    max_num_batched_tokens: MaxBatchedTokensOpt = E.max_num_batched_tokens,
    gpu_memory_utilization: GpuMemOpt = E.gpu_memory_utilization,
    kv_cache_gib: KvCacheOpt = E.kv_cache_gib,
    tensor_parallel_size: TpOpt = E.tensor_parallel_size,
    enforce_eager: EagerOpt = E.enforce_eager,
    trust_remote_code: TrustOpt = E.trust_remote_code,
    plugin: PluginOpt = E.plugin,
    hf_overrides: HfOverridesOpt = None,
    tokenizer: TokenizerOpt = E.tokenizer,
) -> None:
    """Transcribe every row of a manifest (or one --chunk of it), resuming an earlier run."""
    settings = common.build_settings(locals())
    if strict:
        bad = validate_manifest(manifest)
        if bad:
            more = f" (and {len(bad) - 1} more bad rows)" if len(bad) > 1 else ""
            raise UsageError(f"{bad[0].error.message}{more}", hint="fix the manifest, or drop --strict to keep going")
    chunk_spec = common.resolve_chunk(chunk)
    model_path = resolve_model(model)
    outcome = common.run_with_progress(
        open_manifest(manifest), settings, output_dir, model_path=model_path, chunk=chunk_spec,
        overwrite=overwrite, label=manifest.name,
    )
    raise typer.Exit(common.finish(outcome, f"{manifest.name} · {model}"))
