#!/usr/bin/env bash
# The GPU check on a bare machine (no network): install the wheels in .whl/ (from `make fetch-wheels`) into a
# private folder when present, then run scripts/gpu_check.py. Usage: scripts/gpu-check.sh OUT [DEVICE] [extra args]
# (what `make gpu-check OUT=... DEVICE=...` runs; call it directly where make is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu-check.sh OUT [DEVICE] [gpu_check.py run options]}
device=${2:-auto}
shift $(( $# < 2 ? $# : 2 ))
python=${GPU_PYTHON:-python3}
site=${WHEEL_SITE:-/tmp/llm-srt-site}
if compgen -G ".whl/*.whl" >/dev/null && [ "${USE_WHEELS:-1}" = 1 ]; then
  if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "gpu-check: .whl/ holds wheels for CPython 3.12 (the GPU image's); $python is not: using its own packages" >&2
  else
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" scripts/gpu_check.py run --out "$out" --device "$device" "$@"
