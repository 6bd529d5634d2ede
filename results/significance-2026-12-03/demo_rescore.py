"""The claims of a finished `make demo` (runs/demo) tested again from its hyps files: each direction resampled
apart (the rows as evaluate wrote them before 2026-12-03, no sentence id: clips) and whole sentences (the manifest's
sentence id added: a sentence read in German and in Spanish, its English reference shared, is one unit).

    python results/significance-2026-12-03/demo_rescore.py
"""
import json
from dataclasses import replace
from llm_srt.data.manifest import read_manifest
from llm_srt.evaluate.report import load_results
from llm_srt.evaluate.significance import paired_bootstrap
rows = {r.id: r for r in read_manifest("runs/demo/test_subset.jsonl")}
R = {n: load_results(f"runs/demo/report/hyps.{n}.jsonl") for n in ["LLM-SRT (this run)", "Baseline (this run)", "LLM-SRT w_o SMT (this run)", "Cascade"]}
claims = json.load(open("runs/demo/report/claims.json"))
for c in claims if isinstance(claims, list) else claims["claims"]:
    print("recorded:", c["system"], "vs", c["compared_with"], c["bleu"], c["bleu_compared"], "p", c["p"])
for b in ["Baseline (this run)", "LLM-SRT w_o SMT (this run)", "Cascade"]:
    a = R["LLM-SRT (this run)"]; bb = R[b]
    clip = paired_bootstrap(a, bb)
    sent = paired_bootstrap([replace(r, sentence=rows[r.id].sentence_id) for r in a], [replace(r, sentence=rows[r.id].sentence_id) for r in bb])
    print(b, f"clips (its rows apart): {clip.delta:+.2f} p={clip.p:.3f} n={clip.sentences}; sentences: p={sent.p:.3f} n={sent.sentences} [{sent.low:+.1f},{sent.high:+.1f}]")
