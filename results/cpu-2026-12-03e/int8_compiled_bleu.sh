#!/usr/bin/env bash
# The shipped model with --dtype int8 on the 120 held-out rows (README "Which system for real recordings today"),
# greedy: eager at the default --batch-size 8 and at 1, and --compile at 1 (int8 steps compile at one row only; each
# cache length compiles first), then the three outputs compared from their saved hypotheses (paired bootstrap over
# sentences). From the repository root (2026-12-03 17:30-17:40; the outputs in int8_compiled/ here):
#   bash results/cpu-2026-12-03e/int8_compiled_bleu.sh OUT
set -euo pipefail
OUT=${1:?usage: int8_compiled_bleu.sh OUT}
M=data/mini_voices_p/heldout_srt120.jsonl
/usr/bin/time -v llm-srt evaluate --model "int8=checkpoints/embedded/srt" --dtype int8 --manifest $M --task srt \
  --out $OUT/eager 2> $OUT/eager.time
llm-srt evaluate --model "int8_b1=checkpoints/embedded/srt" --dtype int8 --batch-size 1 --manifest $M --task srt \
  --out $OUT/eager_b1
/usr/bin/time -v llm-srt evaluate --model "int8_compiled=checkpoints/embedded/srt" --dtype int8 --compile \
  --batch-size 1 --manifest $M --task srt --out $OUT/compiled 2> $OUT/compiled.time
llm-srt evaluate --model "eager_b1=$OUT/eager_b1/hyps.int8_b1.jsonl" \
  --model "compiled_b1=$OUT/compiled/hyps.int8_compiled.jsonl" --model "eager_b8=$OUT/eager/hyps.int8.jsonl" \
  --out $OUT/paired
