#!/usr/bin/env bash
# The journal's cost: `evaluate` of this commit (groups of 16 batches, each row journaled) against the code before
# it (59cf8b6: one group) on the same 120 rows at --batch-size 4, alternating whole processes.
# git worktree add ../llm-srt-old 59cf8b6; bash results/evaluate-resume-2026-12-03/paired_overhead.sh ../llm-srt-old OUT
set -euo pipefail
OLD=${1:?old checkout}; OUT=${2:?out}
mkdir -p "${2:?}"
ARGS=(--model shipped=checkpoints/embedded/srt --manifest data/mini_voices_p/heldout_srt120.jsonl --task srt
      --batch-size 4 --device cpu --significance 0)
for round in 1 2; do
  for side in new old; do
    src=src; [ $side = old ] && src=$OLD/src
    t0=$(date +%s.%N)
    PYTHONPATH=$src python -m llm_srt.cli evaluate "${ARGS[@]}" --out "$OUT/$side$round" > "$OUT/$side$round.log" 2>&1
    t1=$(date +%s.%N)
    echo "$side round $round: $(python3 -c "print(f'{$t1 - $t0:.1f}')") s"
  done
done
for r in 1 2; do cmp -s "$OUT/new$r/hyps.shipped.jsonl" "$OUT/old$r/hyps.shipped.jsonl" && echo "round $r: same hypotheses"; done
