"""Host time of `decoding.EndRule` per beam-search step: 8 rows x 5 beams, Gemma-3-270M's tokenizer and 262k
vocabulary, random scores with the end token far below (a transcript in progress), the demo's on_end (decode the
beam's text, look for its language tags). Run from the repository: `python results/endrule-2026-12-04/bench.py`."""
import time

import torch
from transformers import AutoTokenizer

from llm_srt.model.decoding import EndRule
from llm_srt.paths import embedded_llm_dir
from llm_srt.prompts import parse_srt, tag

tok = AutoTokenizer.from_pretrained(embedded_llm_dir())
torch.set_num_threads(2)
sent = ("the quick brown fox jumps over the lazy dog while the committee discusses the budget for next year "
        "and everyone waits patiently for the results of the vote in the evening") * 2
ids_all = tok(sent, add_special_tokens=False)["input_ids"][:64]
B, beams, V = 8, 5, 262144
eos = [tok.eos_token_id]


def on_end(row, ids):
    if parse_srt(tok.decode(ids, skip_special_tokens=True)).src:
        return None
    return tok(tag("eng") + tag("deu"), add_special_tokens=False)["input_ids"]


g = torch.Generator().manual_seed(0)
for trial in range(2):
    rule = EndRule(on_end, eos, beams)
    spent = 0.0
    for step in range(1, 65):
        inp = torch.tensor([ids_all[:step]] * (B * beams))
        inp[:, -1] = torch.arange(B * beams) + 1000  # distinct hypotheses
        scores = torch.randn(B * beams, V, generator=g)
        scores[:, eos] = -20.0
        start = time.perf_counter()
        rule(inp, scores)
        spent += time.perf_counter() - start
    print(f"EndRule per step: {spent / 64 * 1e3:.2f} ms")
