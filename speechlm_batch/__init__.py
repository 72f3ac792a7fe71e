"""speechlm-batch: offline batch transcription with speech LLMs and ASR models on vLLM.

Import direction (keep it acyclic): types, errors, settings, fsutil at the bottom; sources, sharding, audio,
metrics use only those; adapters use types; engine is the only module that starts vLLM; pipeline joins
audio -> adapters -> engine -> outputs; normalizers -> scoring (uses metrics) -> leaderboard_files, reports ->
rendering; cli imports everything and nothing imports cli.
Heavy libraries (vllm, transformers, datasets) are imported lazily inside the functions that need them.
"""

__version__ = "0.1.0"
