#!/usr/bin/env bash
# The shipped model in float32 and --dtype int8 on the 120 held-out rows (README "Which system for real recordings
# today"), greedy, default batch size, on a CPU without AVX-512 VNNI: there Int8Linear quantizes activations to 7
# bits (fbgemm's AVX2 kernels would saturate 8), so this is what int8 costs such a machine. The held-out corpus is
# built first where it is missing (README's command), then the two outputs compared from their saved hypotheses
# (paired bootstrap over sentences). From the repository root, with the venv's llm-srt on PATH:
#   bash results/avx2-2026-12-03/int8_avx2.sh OUT
set -euo pipefail
OUT=${1:?usage: int8_avx2.sh OUT}
mkdir -p "$OUT"
grep -m1 "model name" /proc/cpuinfo
grep -o -m1 -w "avx512_vnni" /proc/cpuinfo || echo "no avx512_vnni"
D=data/mini_voices
if [ ! -f $D/heldout_srt120.jsonl ]; then
  /usr/bin/time -f "prepare: %e s" llm-srt prepare mini --out $D --train 560 --synthesizers espeak-ng,flite,festival \
    --augment --prose 1200 --heldout-voice flite:rms > "$OUT/prepare.log" 2>&1
  python -c "from pathlib import Path; from llm_srt.demo import test_subset as t; \
    t(Path('$D/heldout.jsonl'), Path('$D/heldout_srt120.jsonl'), \
    directions=[('eng', x) for x in ('deu', 'fra', 'spa')], sentences=40)"
fi
sha256sum $D/heldout_srt120.jsonl
for dtype in float32 int8; do
  /usr/bin/time -f "$dtype evaluate: %e s, peak %M KB" llm-srt evaluate --model "$dtype=checkpoints/embedded/srt" \
    --dtype $dtype --manifest $D/heldout_srt120.jsonl --task srt --out "$OUT/$dtype" > "$OUT/$dtype.log" 2>&1
  tail -1 "$OUT/$dtype.log"
done
llm-srt evaluate --model "float32=$OUT/float32/hyps.float32.jsonl" --model "int8=$OUT/int8/hyps.int8.jsonl" \
  --significance 1000 --out "$OUT/paired" | tee "$OUT/paired.log"
