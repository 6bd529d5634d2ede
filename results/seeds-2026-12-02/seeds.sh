#!/bin/bash
# Seeds 1-4 of the shipped SMT -> SRT recipe, the SRT stage at 40% ASR (shipped) and at 25%, each scored on the
# held-out voice. Run from the repository root after `make setup` and the data commands of README.md (this folder).
# Usage: results/seeds-2026-12-02/seeds.sh 1 2 3 4
set -euo pipefail
. .venv/bin/activate
for s in "$@"; do
  R=runs/seeds/s$s
  [ -f $R/smt/final/config.json ] || llm-srt train configs/embedded/shipped/smt_rehearse.yaml dtype=bfloat16 \
    seed=$s data.seed=$s output_dir=$R/smt
  for share in 40 25; do
    if [ $share = 40 ]; then T='data.tasks={srt: 0.6, asr: 0.4}'; else T='data.tasks={srt: 0.75, asr: 0.25}'; fi
    [ -f $R/srt$share/final/config.json ] || llm-srt train configs/embedded/shipped/srt_rehearse.yaml \
      dtype=bfloat16 seed=$s data.seed=$s model.init_from=$R/smt/final output_dir=$R/srt$share "$T"
    [ -f $R/heldout$share/results.json ] || llm-srt evaluate --model s${s}_asr$share=$R/srt$share/final \
      --manifest data/mini_voices_p/heldout_srt120.jsonl --task srt --out $R/heldout$share --device cpu
  done
done
