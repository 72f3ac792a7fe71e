#!/bin/bash
# The benchmark on the offline GPU machine, after ../shared/tools/gpu-ship installed vLLM and the payloads
# (whisper-base, wheels-extra = soundfile/cffi/pycparser/soxr, asterisk = the Asterisk wav files).
#   bash bench/gpu.sh NAME SECONDS [bench.run options...]
# Runs `python -m bench.run` under a time limit and packs its output into $OUT/NAME.tgz (the device call
# returns at most 8 files), keeping results.md and the log readable beside it.
set -u
NAME=$1; LIMIT=$2; shift 2
. /tmp/stage/env.sh
export PYTHONUNBUFFERED=1 BENCH_CT2_PYTHON=/nonexistent
if [ ! -f /tmp/site/.bench-extra ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/stage/payload/wheels-extra/*.whl \
    && touch /tmp/site/.bench-extra
fi
mkdir -p manifests/audio && ln -sfn /tmp/stage/payload/asterisk manifests/audio/asterisk
RES=/tmp/bench-out/$NAME; rm -rf "$RES"; mkdir -p "$RES"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$RES/gpu.txt" 2>&1
nproc >> "$RES/gpu.txt"
timeout -k 10 "$LIMIT" python3 -m bench.run --model /tmp/stage/payload/whisper-base --work /tmp/bench-work \
  --out "$RES" "$@" > "$RES/bench.log" 2>&1
echo "bench exit code $?"
tar czf "$OUT/$NAME.tgz" -C /tmp/bench-out "$NAME"
cp "$RES/bench.log" "$OUT/$NAME.log"; cp "$RES/results.md" "$OUT/$NAME.md" 2>/dev/null
cat "$RES/gpu.txt"; tail -n 30 "$RES/bench.log"
