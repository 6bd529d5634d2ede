"""Training's dev sample (data.dev_decode): its rows decoded as `llm-srt evaluate` decodes them
(`decode_as_evaluate`) and scored as it scores them (`dev_scores`), so a dev BLEU/WER is the one evaluate would give
that checkpoint."""

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..audio import SAMPLE_RATE
from ..prompts import Task


def decode_as_evaluate(model, batch: dict, rows: Mapping[str, Any], synced_ranks: bool = False) -> list[str]:
    """The dev batch's texts decoded as `llm-srt evaluate` decodes its clips, with its default options and
    `SpeechLLMSystem.decode`, run_batch's decoding (run_batch itself takes audio, not the batch's cached features,
    and decodes out of step with the other ranks): each row up to its own budget, as `infer.run_items` gives it
    (`infer.item_budget` under `infer.MAX_NEW_TOKENS`: the clip's seconds, its task and scripts; a text row's by its
    transcript's length), and an SRT row that would end before its language tags given them. `rows`: the
    examples by id, whose durations count (a clip the batch holds counts its samples, as evaluate's loaded audio
    does). Before 2026-12-07 every row decoded to 256 tokens, which cut a long clip into a wide script (a 25 s
    tha->jpn SRT row's budget is 1,524), and an SRT row that ended without its tags scored nothing: a dev BLEU
    below the one evaluate gives the checkpoint."""
    from ..infer import MAX_NEW_TOKENS, item_budget, max_new_tokens
    from ..model.decoding import DecodingOptions
    from ..model.protocol import Item
    from ..model.systems import SpeechLLMSystem

    audio = batch.get("audio") or [None] * len(batch["ids"])
    items = []
    for i, task, src, tgt, transcript, clip in zip(batch["ids"], batch["tasks"], batch["src"], batch["tgt"],
                                                   batch["transcripts"], audio):
        item = Item(None, src, tgt or None, task, transcript if task in (Task.SMT, Task.MT) else "")
        seconds = clip.size / SAMPLE_RATE if clip is not None else rows[i].duration
        budget = (max_new_tokens(seconds, task, MAX_NEW_TOKENS, src, tgt or None) if task.needs_speech
                  else item_budget(item, MAX_NEW_TOKENS))
        items.append(dataclasses.replace(item, max_new_tokens=budget))
    options = DecodingOptions(max_new_tokens=max(it.max_new_tokens for it in items))
    return [text for text, _, _ in SpeechLLMSystem(model).decode(batch, items, options, synced_ranks=synced_ranks)]


def dev_scores(task: Task, examples, hyps: list[str], tags: Mapping[str, str] | None = None) -> dict[str, float]:
    """A small dev sample of the paper's metrics, scored as `llm-srt evaluate` scores: BLEU of the translation
    (mean over directions), WER/CER of the transcript (mean over source languages), of each output's parts as
    evaluate takes them (`protocol.split_output`: a translation after the language tags a model may write, a
    transcript up to the next tag), so a dev BLEU picks the checkpoint evaluate would."""
    from ..evaluate.report import UtteranceResult, score_system
    from ..model.protocol import Item, split_output

    results = []
    for i, (e, h) in enumerate(zip(examples, hyps)):
        out = split_output(h, Item(None, e.src, e.tgt, task, e.transcript or ""), tags)
        transcript = out.transcript if task.writes_transcript else None  # (SMT's is the given one: not scored)
        results.append(UtteranceResult(
            id=str(i), src=e.src, tgt=e.tgt or e.src, hyp_transcript=transcript, hyp_translation=out.translation,
            ref_transcript=e.transcript if transcript is not None else None,
            ref_translation=e.translation if task is not Task.ASR else None))
    scores = score_system("dev", results)
    out = {}
    if scores.bleu:
        out["dev_bleu"] = scores.average()
    if task in (Task.SRT, Task.ASR):
        rates = [s.score for s in scores.asr.values() if math.isfinite(s.score)]
        out["dev_wer"] = float(np.mean(rates)) if rates else float("nan")
    return out
