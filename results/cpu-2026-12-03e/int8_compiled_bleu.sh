#!/usr/bin/env bash
# The shipped model with --dtype int8 on the 120 held-out rows (README "Which system for real recordings today"),
# greedy, eager against --compile (each batch shape compiles first), then the two outputs compared from their saved
# hypotheses (paired bootstrap over sentences). From the repository root (2026-12-03 17:12: int8_compiled/ here):
#   bash results/cpu-2026-12-03e/int8_compiled_bleu.sh OUT
set -euo pipefail
OUT=${1:?usage: int8_compiled_bleu.sh OUT}
M=data/mini_voices_p/heldout_srt120.jsonl
/usr/bin/time -v llm-srt evaluate --model "int8=checkpoints/embedded/srt" --dtype int8 --manifest $M --task srt \
  --out $OUT/eager 2> $OUT/eager.time
/usr/bin/time -v llm-srt evaluate --model "int8_compiled=checkpoints/embedded/srt" --dtype int8 --compile \
  --manifest $M --task srt --out $OUT/compiled 2> $OUT/compiled.time
llm-srt evaluate --model "eager=$OUT/eager/hyps.int8.jsonl" --model "compiled=$OUT/compiled/hyps.int8_compiled.jsonl" \
  --out $OUT/paired
