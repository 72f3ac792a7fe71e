"""engine.py pure parts: environment and LLM arguments (the engine itself is exercised by tests/e2e)."""

from __future__ import annotations

from speechlm_batch import engine
from speechlm_batch.settings import GPU_HOST_THREADS, EngineSettings


def test_cpu_auto_dtype_follows_native_bf16(tmp_path):
    avx2 = tmp_path / "avx2"
    avx2.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 fma\n")
    amx = tmp_path / "amx"
    amx.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    assert engine.cpu_auto_dtype(str(avx2)) == "float32"
    assert engine.cpu_auto_dtype(str(amx)) == "bfloat16"
    assert engine.cpu_auto_dtype(str(tmp_path / "missing")) == "float32"


def test_llm_kwargs_cpu_defaults():
    kwargs = engine.llm_kwargs(EngineSettings(dtype="float32"), "/m", cpu=True)
    assert kwargs["kv_cache_memory_bytes"] == 2 << 30  # CPU: never a share of system RAM
    assert kwargs["limit_mm_per_prompt"] == {"audio": 1}
    assert kwargs["trust_remote_code"] is False
    assert "max_num_seqs" not in kwargs  # unset options keep vLLM's defaults


def test_llm_kwargs_passes_overrides():
    settings = EngineSettings(max_num_seqs=64, hf_overrides={"architectures": ["X"]}, kv_cache_gib=0.5, plugin="p")
    kwargs = engine.llm_kwargs(settings, "/m", cpu=False)
    assert kwargs["max_num_seqs"] == 64 and kwargs["hf_overrides"] == {"architectures": ["X"]}
    assert kwargs["kv_cache_memory_bytes"] == 1 << 29


def test_prepare_environment_sets_plugins_and_keeps_user_binding():
    env = {"VLLM_CPU_OMP_THREADS_BIND": "0"}
    changes = engine.prepare_environment(EngineSettings(plugin="nemo_speechlm"), env)
    assert env["VLLM_PLUGINS"] == "nemo_speechlm" and env["VLLM_CPU_OMP_THREADS_BIND"] == "0"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in changes


def test_prepare_environment_on_gpu_limits_host_threads_and_spawns():
    gpu_env: dict[str, str] = {}
    engine.prepare_environment(EngineSettings(), gpu_env, cpu=False)
    shutdown = {"VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS": str(int(engine.SHUTDOWN_TIMEOUT_S))}
    assert gpu_env == {"OMP_NUM_THREADS": str(GPU_HOST_THREADS), "VLLM_WORKER_MULTIPROC_METHOD": "spawn", **shutdown}
    user_env = {"OMP_NUM_THREADS": "8", "VLLM_WORKER_MULTIPROC_METHOD": "fork", **shutdown}
    assert engine.prepare_environment(EngineSettings(), user_env, cpu=False) == {}
    cpu_env: dict[str, str] = {}
    engine.prepare_environment(EngineSettings(), cpu_env, cpu=True)
    assert set(cpu_env) == {"VLLM_CPU_OMP_THREADS_BIND", "VLLM_WORKER_SHUTDOWN_TIMEOUT_SECONDS"}


def test_external_request_id():
    assert engine._external_id("17-1a2b3c4d") == "17"
    assert engine._external_id("17") == "17"


def test_timestamp_processor_is_registered_for_whisper_checkpoints_only(tmp_path):
    whisper, other = tmp_path / "whisper", tmp_path / "other"
    for folder, model_type in ((whisper, "whisper"), (other, "qwen2_audio")):
        folder.mkdir()
        (folder / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    assert engine.timestamp_processor_kwargs(str(whisper)) == {
        "logits_processors": ["speechlm_batch.timestamp_processor:WhisperTimestampProcessor"]
    }
    assert engine.timestamp_processor_kwargs(str(other)) == {}
    assert engine.timestamp_processor_kwargs(str(tmp_path / "missing")) == {}
