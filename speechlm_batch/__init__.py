"""speechlm-batch: offline batch transcription with speech LLMs and ASR models on vLLM.

Import direction (keep it acyclic): types, errors, settings, fsutil at the bottom; sources, sharding, audio,
metrics use only those; adapters use types; engine is the only module that starts vLLM; pipeline joins
audio -> adapters -> engine -> outputs; normalizers -> scoring (uses metrics) -> leaderboard_files, reports ->
rendering; cli imports everything and nothing imports cli.
Heavy libraries (vllm, transformers, datasets) are imported lazily inside the functions that need them.
"""

__version__ = "0.1.0"

# vLLM's engine core is spawned (the CPU platform forces spawn; GPU runs default to it): the child imports the
# CLI's main module, hence this package, but not necessarily `engine`. This is where it leaves the CLI's process
# group when started inside `procgroup.engine_processes_apart()` (see procgroup's docstring).
import os as _os

if _os.environ.get("SPEECHLM_BATCH_ENGINE_APART") == "1":
    from speechlm_batch import procgroup as _procgroup  # noqa: F401  (leaves the group at import)
