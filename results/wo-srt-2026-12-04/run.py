"""The paper's "w/o SRT" ablation in miniature, on the demo's corpus, runs and scored test rows: the curriculum's
SRT model against its SMT stage and against an SMT-only run with the curriculum's whole budget, the two SMT models
run as asr+smt (their own transcript, then their SMT from it). Usage: python run.py WORK (about 12 minutes on a
2-core CPU); prints the report's table and paired tests."""

import sys
import time
from dataclasses import replace
from pathlib import Path

from llm_srt.data.manifest import read_manifest
from llm_srt.data.mini import build_mini
from llm_srt.demo import (DEMO_CONFIGS, EVAL_BATCH, SHIPPED, choose_directions, corpus_options, demo_placement,
                          demo_stages, shipped_training_sentences, test_subset, trained_models)
from llm_srt.embedded import ensure_embedded
from llm_srt.evaluate.run import evaluate
from llm_srt.train.curriculum import Stage, run_stages
from llm_srt.train.recipe import load_config

work = Path(sys.argv[1])
data = work / "data"
t0 = time.perf_counter()


def lap(what: str) -> None:
    print(f"=== {what}: {time.perf_counter() - t0:.0f} s since the start", flush=True)


ensure_embedded()
placement = demo_placement("auto")
if not (data / "test.jsonl").is_file():
    build_mini(corpus_options(data, SHIPPED / "asr"))
lap("corpus")
stages = demo_stages(work, data, dtype=placement.dtype_name)
smt, srt = run_stages(stages["curriculum"])
lap("curriculum SMT -> SRT")
budget = sum(s.config.max_steps for s in stages["curriculum"])
only = stages["curriculum"][0]
[smt_only] = run_stages([Stage("smt_only", only.file, replace(only.config, output_dir=str(work / "smt_only"),
                                                               max_steps=budget))])
lap(f"SMT alone, {budget} steps (the curriculum's budget)")
directions = choose_directions(data / "dev.jsonl", placement=placement)
seen = set().union(*(shipped_training_sentences(f) for f in trained_models(SHIPPED / "asr")))
tests = {r.sentence_id for r in read_manifest(data / "test.jsonl")}
subset = test_subset(data / "test.jsonl", work / "test_subset.jsonl", directions=directions["chosen"],
                     sentences=len(tests), exclude=frozenset(seen & tests))
systems = {"LLM-SRT (curriculum)": str(srt), "w/o SRT (its SMT stage)": str(smt),
           "w/o SRT (SMT alone, same budget)": str(smt_only)}
evaluate(systems, subset, work / "report", batch_size=EVAL_BATCH, placement=placement, restart=True)
lap("evaluation")
