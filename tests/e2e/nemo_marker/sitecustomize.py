"""Test-only: record every process in which vLLM runs NeMo's `nemo_speechlm` plugin registration.

Put on PYTHONPATH by tests/e2e/test_nemo_speechlm_plugin.py, with SPEECHLM_TEST_PLUGIN_MARKER naming a file.
vLLM loads general plugins through `importlib.metadata.EntryPoint.load()` in each of its processes (the CLI's
front end, the spawned engine core and worker); this wraps what that returns for `nemo_speechlm` so that,
after NeMo's own `register()` ran, one line per process says its pid and whether vLLM's model registry now
knows the architecture. NeMo's code is not changed.
"""

import os
from importlib import metadata

_MARKER = os.environ.get("SPEECHLM_TEST_PLUGIN_MARKER")
_ARCHITECTURE = "NeMoSpeechLMForConditionalGeneration"

if _MARKER:
    _original_load = metadata.EntryPoint.load

    def _load(self):
        func = _original_load(self)
        if self.group != "vllm.general_plugins" or self.name != "nemo_speechlm":
            return func

        def register():
            func()
            from vllm.model_executor.models.registry import ModelRegistry

            known = _ARCHITECTURE in ModelRegistry.get_supported_archs()
            with open(_MARKER, "a", encoding="utf-8") as f:
                f.write(f"{self.value} pid={os.getpid()} registered={known}\n")

        return register

    metadata.EntryPoint.load = _load
