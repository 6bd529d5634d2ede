#!/usr/bin/env bash
# The held-out comparisons of README ("Which system for real recordings today") and the demo's claims, tested again
# from their saved hypotheses with the paired bootstrap that resamples whole test sentences (2026-12-03): nothing is
# decoded. Run from the repository root:  bash results/significance-2026-12-03/rescore.sh OUT
set -euo pipefail
OUT=${1:?usage: rescore.sh OUT}
R=results/shipped-rehearse-2026-12-02
H=results/heldout-2026-12-03
M=results/shipped-mt-2026-12-02/heldout_srt_beam5
S=results/seeds-2026-12-02
C=$R/heldout_paired/hyps.Cascade.jsonl
CB=$M/hyps.Cascade.jsonl
B="$H/beam5/hyps.shipped_beam5.jsonl"
G="$R/heldout_paired/hyps.rehearse4.jsonl"
for k in 1 2 3 4; do
  B="$B,$H/seeds_beam5/s$k/hyps.s${k}_asr40_beam5.jsonl"
  G="$G,$S/s$k/heldout40/hyps.s${k}_asr40.jsonl"
done
# the shipped model (seed 0) greedy and at beam 5 against the cascade
llm-srt evaluate --model greedy=$R/heldout_paired/hyps.rehearse4.jsonl --model Cascade=$C --out $OUT/greedy
llm-srt evaluate --model beam5=$H/beam5/hyps.shipped_beam5.jsonl --model Cascade_beam5=$CB --out $OUT/beam5
# five training seeds pooled, tested run by run
llm-srt evaluate --model beam5=$B --model greedy=$G --model Cascade_beam5=$CB,$CB,$CB,$CB,$CB \
  --model Cascade=$C,$C,$C,$C,$C --out $OUT/seeds
# five training seeds greedy against the greedy cascade
llm-srt evaluate --model greedy=$G --model Cascade=$C,$C,$C,$C,$C --out $OUT/seeds_greedy
