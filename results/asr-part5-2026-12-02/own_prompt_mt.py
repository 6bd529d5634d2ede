"""Each demo run's text MT from the plain LLM's instruction prompt and from the speech LLM's own text-MT prompt
(Task.MT), on the demo's probe (8 dev sentences of deu->eng and spa->eng), float32. Run inside the work tree of a
finished `make demo` (here: the cold demo from part 6):

    python results/asr-part5-2026-12-02/own_prompt_mt.py     # -> own_prompt_mt.txt
"""
import warnings
from pathlib import Path

from llm_srt.demo import probe_rows, text_mt_bleu
from llm_srt.model.speech_llm import SpeechLLM
from llm_srt.model.systems import SpeechLLMSystem, TextMTSystem

warnings.simplefilter("ignore")
rows = probe_rows(Path("data/mini/dev.jsonl"), [("deu", "eng"), ("spa", "eng")], 8)
for run in ("srt", "baseline", "srt_no_smt"):
    m = SpeechLLM.from_pretrained(f"runs/demo/{run}/final").eval()
    a = text_mt_bleu(TextMTSystem.of_speech_llm(m, run), rows)
    b = text_mt_bleu(SpeechLLMSystem(m, run), rows)
    print(run, "instruction prompt:", a, " its own mt prompt (tags):", b)
