"""How likely does a speech LLM find the reference translation? Teacher-forced loss per test sentence.

At the demo's scale BLEU of a few dozen sentences moves by whole points with one lucky output; the mean
cross-entropy of the reference translation is a smooth measure of the same thing (lower is better). Each system is
scored in its own output format: S2TT on "<|src|><|tgt|>" -> translation; SRT with the reference transcript and the
tags teacher-forced ("<|src|><|tgt|>" + "transcript<|src|><|tgt|>") and only the translation scored, as its decoder
sees it once it has transcribed correctly; SMT with the gold transcript in its prompt. Every loss is nats per
translation token, EOS included.
"""

from collections.abc import Mapping, Sequence

import torch

from ..audio import load_audio
from ..data.manifest import Row
from ..errors import LLMSRTError
from ..prompts import Task, build, srt_target

TASKS = (Task.SRT, Task.S2TT, Task.SMT)


def token_split(tokenizer, row: Row, task: Task, tags: Mapping[str, str] | None = None
                ) -> tuple[list[int], list[int]]:
    """(prompt ids, scored ids + EOS) of `row` for `task`, tokenized exactly as training tokenizes the task's
    (prompt, target); for SRT the target's tokens up to the translation move to the prompt side. `tags`: the
    model's own tag codes (SpeechLLMConfig.language_tags)."""
    prompt, target = build(task, row.src_lang, row.tgt_lang, row.transcript, row.translation, tags=tags)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    ids, spans = enc["input_ids"], enc["offset_mapping"]
    k = 0
    if task is Task.SRT:  # the translation starts after "transcript<|src|><|tgt|>"
        start = len(srt_target(row.transcript, "", row.src_lang, row.tgt_lang, tags))
        k = next((j for j, (_, end) in enumerate(spans) if end > start), len(ids))
    return prompt_ids + ids[:k], ids[k:] + [tokenizer.eos_token_id]


@torch.no_grad()
def reference_losses(model, rows: Sequence[Row], task: Task | str, batch_size: int = 8) -> list[float]:
    """Per row: mean cross-entropy (nats/token) of its reference translation + EOS under `model` (a SpeechLLM),
    teacher-forced after its speech and the task's prompt. Rows without a translation are an error."""
    task = Task(task)
    if task not in TASKS:
        raise LLMSRTError(f"reference loss needs a translating task ({', '.join(t.value for t in TASKS)}), "
                          f"not {task.value}")
    missing = [r.id for r in rows if not r.translation or not r.tgt_lang]
    if missing:
        raise LLMSRTError(f"row {missing[0]}: no reference translation to score ({len(missing)} such rows)")
    was_training = model.training
    model.eval()
    losses: list[float] = []
    try:
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            feats, mask = model.encoder.encode([load_audio(r.audio) for r in chunk])  # one encoder call per chunk
            split = [token_split(model.tokenizer, row, task, model.config.language_tags) for row in chunk]
            out = model({"features": feats, "feature_mask": mask, "prompt_ids": [p for p, _ in split],
                         "target_ids": [t for _, t in split], "row_losses": True})  # one LLM pass per chunk
            losses.extend(float(x) for x in out["row_losses"])
    finally:
        model.train(was_training)
    return losses
