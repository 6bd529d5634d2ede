#!/usr/bin/env bash
# evaluate killed with SIGKILL after its first group of rows, run again, against one uninterrupted run.
# bash results/evaluate-resume-2026-12-03/kill_and_resume.sh OUT   (from the repository root, .venv active)
set -euo pipefail
OUT=${1:?usage: kill_and_resume.sh OUT}
ARGS=(--model shipped=checkpoints/embedded/srt --manifest data/mini_voices_p/heldout_srt120.jsonl --task srt
      --batch-size 4 --device cpu --significance 0)
rm -rf "$OUT" && mkdir -p "$OUT"
t0=$(date +%s.%N)
llm-srt evaluate "${ARGS[@]}" --out "$OUT/whole" > "$OUT/whole.log" 2>&1
t1=$(date +%s.%N)
llm-srt evaluate "${ARGS[@]}" --out "$OUT/r" > "$OUT/killed.log" 2>&1 &
pid=$!
journal="$OUT/r/partial/shipped.hyps.rank0.jsonl"
until [ -f "$journal" ] && [ "$(wc -l < "$journal")" -gt 64 ]; do sleep 0.2; done  # header + the first 64 rows
kill -9 $pid; wait $pid || true
t2=$(date +%s.%N)
kept=$(($(wc -l < "$journal") - 1))
llm-srt evaluate "${ARGS[@]}" --out "$OUT/r" > "$OUT/resumed.log" 2>&1
t3=$(date +%s.%N)
python3 - "$OUT" "$t0" "$t1" "$t2" "$t3" "$kept" <<'PY'
import sys, pathlib
out, t0, t1, t2, t3, kept = sys.argv[1], *map(float, sys.argv[2:6]), int(sys.argv[6])
same = {n: (pathlib.Path(out, "r", n).read_text() == pathlib.Path(out, "whole", n).read_text())
        for n in ("hyps.shipped.jsonl", "results.json", "report.md")}
print(f"uninterrupted {t1 - t0:.1f} s; killed after {t2 - t1:.1f} s with {kept} of 120 rows journaled; "
      f"the rerun {t3 - t2:.1f} s; identical files: {same}; partial/ left: {pathlib.Path(out, 'r', 'partial').exists()}")
PY
grep -h 'rows as srt' "$OUT/whole.log" "$OUT/resumed.log"
