#!/usr/bin/env bash
# `serve --compile` with the embedded model on the CPU: seconds until it listens and the first three requests'
# latency, this code (it compiles before listening) against the code before (59cf8b6, it compiled on the first
# request), each with an empty Inductor cache.   git worktree add ../llm-srt-old 59cf8b6
# bash results/serve-compile-2026-12-03/first_requests.sh ../llm-srt-old OUT     (from the repository root, .venv active)
set -euo pipefail
OLD=${1:?old checkout}; OUT=${2:?out}; mkdir -p "$OUT"
espeak-ng -v en -s 175 -w "$OUT/clip.wav" "The file could not be opened because it does not exist."
for side in new old; do
  src=src; [ $side = old ] && src=$OLD/src
  cache=$(mktemp -d)
  t0=$(date +%s.%N)
  TORCHINDUCTOR_CACHE_DIR=$cache PYTHONPATH=$src python -m llm_srt.cli serve --model checkpoints/embedded/srt \
    --compile --max-batch 2 --port 8765 --timeout-s 600 > "$OUT/$side.log" 2>&1 &
  pid=$!
  until curl -s -o /dev/null http://127.0.0.1:8765/health; do sleep 0.2; done
  t1=$(date +%s.%N)
  line="$side: listening after $(python3 -c "print(f'{$t1 - $t0:.1f}')") s; requests:"
  for i in 1 2 3; do
    s=$(date +%s.%N)
    curl -s -F file=@"$OUT/clip.wav" -F source_language=eng -F target_language=deu -F response_format=json \
      http://127.0.0.1:8765/v1/audio/translations > "$OUT/$side.answer$i.json"
    e=$(date +%s.%N)
    line="$line $(python3 -c "print(f'{$e - $s:.2f}')") s"
  done
  echo "$line"
  kill $pid; wait $pid || true; rm -rf "$cache"
done
cmp -s "$OUT/new.answer1.json" "$OUT/old.answer1.json" && echo "the same answer from both"
grep -h -- '--compile' "$OUT/new.log"
