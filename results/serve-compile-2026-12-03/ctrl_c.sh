#!/usr/bin/env bash
# Ctrl-C (SIGINT) during `serve --compile`'s warm-up: seconds from the signal to the process's end.
# bash results/serve-compile-2026-12-03/ctrl_c.sh   (from the repository root, .venv active)
set -uo pipefail
log=$(mktemp)
TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python -m llm_srt.cli serve --model checkpoints/embedded/srt --compile \
  --max-batch 2 --port 8766 > "$log" 2>&1 &
pid=$!
until grep -q 'compiling the decode steps' "$log"; do sleep 0.2; done
sleep 10
t0=$(date +%s.%N); kill -INT $pid; wait $pid; rc=$?; t1=$(date +%s.%N)
echo "SIGINT 10 s into the warm-up: the process ended $(python3 -c "print(f'{$t1 - $t0:.1f}')") s later, exit $rc"
grep -h -- '--compile' "$log"
