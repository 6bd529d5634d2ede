#!/usr/bin/env bash
# The GPU check on a bare machine (no network): install the wheels in .whl/ (from `make fetch-wheels`) into a
# private folder when present, then run scripts/gpu_check.py. Usage: scripts/gpu-check.sh OUT [DEVICE] [extra args]
# (what `make gpu-check OUT=... DEVICE=...` runs; call it directly where make is missing). Environment: GPU_PYTHON
# (python3), WHEEL_DIR (.whl), WHEEL_SITE (/tmp/llm-srt-site), USE_WHEELS=0 to use the Python's own packages.
set -euo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT [DEVICE] [gpu_check.py run options]}
[[ $out == /* ]] || out=$PWD/$out  # OUT as the caller gave it, from where it was given: not from the repository
cd "$(dirname "$0")/.."
device=${2:-auto}
shift $(( $# < 2 ? $# : 2 ))
python=${GPU_PYTHON:-python3}
site=${WHEEL_SITE:-/tmp/llm-srt-site}
wheels=${WHEEL_DIR:-.whl}
mkdir -p "$out"
# an earlier run's, in a reused OUT: this run's install says its own; its stopped bench's rows are not this run's
rm -f "$out/wheels-not-installed.txt" "$out/bench-running.json"

# A failure before gpu_check.py runs still leaves OUT/report.json (and report.md) saying why: on a one-shot GPU
# session an empty OUT reads as results lost, not as a check that failed at its start.
fail() {
  local why=${1//[$'\t\r\n']/ }
  local report='{"ok": False, "outcome": "FAILED", "finished": True, "steps": [], "error": sys.argv[1]}'
  "$python" -c "import json, sys; print(json.dumps($report, indent=2))" "$why" > "$out/report.json" 2>/dev/null ||
    printf '{"ok": false, "outcome": "FAILED", "finished": true, "steps": [], "error": "%s"}\n' \
      "${why//[\"\\]/ }" > "$out/report.json"
  printf '# llm-srt GPU check\n\n**FAILED** before any step: %s\n' "$why" > "$out/report.md"
  echo "gpu-check: $why" >&2
  exit 1
}

command -v "$python" >/dev/null || fail "no $python here: set GPU_PYTHON to the Python that has torch"
# the image's torch, which gpu_check.py imports before its env step can say what else is missing: a look, not an import
"$python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("torch") is None)' 2>/dev/null ||
  fail "$python has no torch: set GPU_PYTHON to the Python that has torch"
if compgen -G "$wheels/*.whl" >/dev/null && [ "${USE_WHEELS:-1}" = 1 ]; then
  if ! "$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
    echo "gpu-check: $wheels/ holds wheels for CPython 3.12 (the GPU image's); $python is not: its own packages" >&2
  else
    log="$out/pip-install.log"
    install() {
      "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$@"
    }
    if ! install "$wheels"/*.whl >"$log" 2>&1; then
      # one bad wheel fails pip's whole batch: the rest one by one, so that it costs the check only what needs it
      #   (gpu_check.py's env step names what cannot be imported, and stops only when an essential one is missing)
      echo "gpu-check: pip install of $wheels/*.whl failed; installing them one by one (pip-install.log)" >&2
      bad=()
      for wheel in "$wheels"/*.whl; do
        echo "== $wheel" >>"$log"
        install "$wheel" >>"$log" 2>&1 || bad+=("${wheel##*/}")
      done
      [ ${#bad[@]} -lt $(compgen -G "$wheels/*.whl" | wc -l) ] ||
        fail "pip install of $wheels/*.whl into $site failed: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1 || true)
(pip's whole output: pip-install.log)"
      [ ${#bad[@]} -eq 0 ] || echo "gpu-check: not installed: ${bad[*]} (pip-install.log)" >&2
      [ ${#bad[@]} -eq 0 ] || printf '%s\n' "${bad[@]}" >"$out/wheels-not-installed.txt"  # the env step reports them
    fi
    [ -s "$log" ] || rm -f "$log"
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" scripts/gpu_check.py run --out "$out" --device "$device" "$@"
