#!/usr/bin/env bash
# Two torchrun ranks killed (SIGKILL) after each journaled two rows, run again under torchrun, against one process.
# bash results/evaluate-resume-2026-12-03/torchrun_kill.sh OUT   (from the repository root, .venv active; a tiny
# random model and 16 rows made here; groups of one row, each slowed by 0.5 s so that the kill lands mid-run)
set -uo pipefail
OUT=${1:?out}; rm -rf "$OUT"; mkdir -p "$OUT"
python - "$OUT" <<'PY'
import sys; sys.path.insert(0, "tests/model")
from pathlib import Path
import tiny
from llm_srt.audio import write_wav
from llm_srt.data.manifest import Row, write_manifest
root = Path(sys.argv[1])
tiny.speech_llm_folder(root / "model")
rows = []
for i in range(8):
    path, sec = root / f"c{i}.wav", 0.6 + 0.1 * i
    write_wav(path, tiny.tone(sec, 300 + 50 * i, seed=i))
    rows += [Row(id=f"{i}-{s}{t}", audio=str(path), duration=sec, src_lang=s, transcript="a cat sat", tgt_lang=t,
                 translation="die Katze", split="test", corpus="t", sentence_id=str(i)) for t, s in (("deu", "eng"), ("eng", "deu"))]
write_manifest(root / "test.jsonl", rows)
PY
cat > "$OUT/killed.py" <<'PY'
import sys, time
from llm_srt import cli, infer
from llm_srt.evaluate import run
run.GROUP_BATCHES = 1
real = infer.run_items
def slow(*a, **k):
    time.sleep(float(sys.argv[1])); return real(*a, **k)
infer.run_items = slow
sys.exit(cli.main(sys.argv[2:]))
PY
ARGS="evaluate --model tiny=$OUT/model/model --manifest $OUT/test.jsonl --task srt --batch-size 1 --max-new-tokens 6
      --device cpu --dtype float32"
export OMP_NUM_THREADS=1
python -m torch.distributed.run --standalone --nproc_per_node 2 "$OUT/killed.py" 0.5 $ARGS --out "$OUT/r" > "$OUT/killed.log" 2>&1 &
until [ -f "$OUT/r/partial/tiny.hyps.rank1.jsonl" ] && [ "$(wc -l < "$OUT/r/partial/tiny.hyps.rank1.jsonl")" -ge 3 ]; do sleep 0.2; done
pkill -9 -f "killed.py 0.5"; sleep 2  # the workers too: torchrun starts them in sessions of their own
echo "journaled when killed: $(($(wc -l < "$OUT/r/partial/tiny.hyps.rank0.jsonl") - 1)) rows (rank 0), $(($(wc -l < "$OUT/r/partial/tiny.hyps.rank1.jsonl") - 1)) (rank 1)"
python -m torch.distributed.run --standalone --nproc_per_node 2 "$OUT/killed.py" 0 $ARGS --out "$OUT/r" > "$OUT/rerun.log" 2>&1
echo "rerun exit $?"; grep -h 'rows as srt' "$OUT/rerun.log" | sed "s|$OUT/||"
python "$OUT/killed.py" 0 $ARGS --out "$OUT/whole" > "$OUT/whole.log" 2>&1
for f in hyps.tiny.jsonl results.json report.md; do cmp -s "$OUT/r/$f" "$OUT/whole/$f" && echo "$f: the one-process run's"; done
[ -d "$OUT/r/partial" ] && echo "partial/ left" || echo "partial/ removed"
