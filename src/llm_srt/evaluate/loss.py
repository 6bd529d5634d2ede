"""How likely does a speech LLM find the reference translation? Teacher-forced loss per test sentence.

At the demo's scale BLEU of a few dozen sentences moves by whole points with one lucky output; the mean
cross-entropy of the reference translation is a smooth measure of the same thing (lower is better). Each system is
scored in its own output format: S2TT on "<|src|><|tgt|>" -> translation; SRT with the reference transcript and the
tags teacher-forced ("<|src|><|tgt|>" + "transcript<|src|><|tgt|>") and only the translation scored, as its decoder
sees it once it has transcribed correctly; SMT with the gold transcript in its prompt. Every loss is nats per
translation token, EOS included. A row whose audio cannot be used (undecodable, or longer than Whisper's window)
is left unscored with its reason, as evaluation counts a failed row, so one bad clip costs its own loss only; a
chunk that runs out of GPU memory is scored again in halves, and a row that runs out alone is left unscored so.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..audio import WINDOW_SECONDS, load_audio
from ..device import is_out_of_memory, release
from ..data.loader import TRANSCRIPT_READERS
from ..data.manifest import Row
from ..errors import AudioError, LLMSRTError
from ..prompts import Task, build, srt_target

TASKS = (Task.SRT, Task.S2TT, Task.SMT)
SHOWN_UNSCORED = 3  # rows whose reason `ReferenceLosses.note` spells out; the rest are counted


@dataclass(frozen=True)
class ReferenceLosses:
    """What `reference_losses` measured: one entry per row, in the rows' order."""
    losses: list[float | None]  # nats/token of each row's reference; None where the row could not be scored
    unscored: list[tuple[str, str]]  # (row id, why: its AudioError, which names the file; out of memory) of each None

    def scored(self) -> list[float]:
        """The losses of the rows that were scored."""
        return [x for x in self.losses if x is not None]

    def note(self) -> str:
        """One line for a log: 'k of n rows not scored: row ID: reason; ...' (empty when every row was scored)."""
        if not self.unscored:
            return ""
        shown = "; ".join(f"row {i}: {why}" for i, why in self.unscored[:SHOWN_UNSCORED])
        more = len(self.unscored) - SHOWN_UNSCORED
        return (f"{len(self.unscored)} of {len(self.losses)} rows not scored: {shown}"
                + (f"; and {more} more" if more > 0 else ""))


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
def reference_losses(model, rows: Sequence[Row], task: Task | str, batch_size: int = 8) -> ReferenceLosses:
    """Per row: mean cross-entropy (nats/token) of its reference translation + EOS under `model` (a SpeechLLM),
    teacher-forced after its speech and the task's prompt. Rows without a translation, or for SRT and SMT without a
    transcript (which training refuses too), are an error; a row whose audio cannot be used (as training loads it:
    decodable, within Whisper's window) is not scored, and its reason kept (`ReferenceLosses.unscored`); so is a row
    that runs out of GPU memory alone (`_score`: a chunk out of memory is scored in halves, the others kept)."""
    if not isinstance(batch_size, int) or batch_size < 1:  # 0 was range()'s traceback; below 0, no row scored and
        #   none said unscored
        raise LLMSRTError(f"reference loss: batch_size {batch_size!r}: give the rows scored together, 1 or more")
    needs = f"reference loss needs a translating task ({', '.join(t.value for t in TASKS)})"
    try:
        task = Task(task)
    except ValueError:  # an unknown name: it was ValueError's "'x' is not a valid Task", a traceback
        raise LLMSRTError(f"{needs}, not {task!r}") from None
    if task not in TASKS:
        raise LLMSRTError(f"{needs}, not {task.value}")
    missing = [r.id for r in rows if not r.translation or not r.tgt_lang]
    if missing:
        raise LLMSRTError(f"row {missing[0]}: no reference translation to score ({len(missing)} such rows)")
    if task in TRANSCRIPT_READERS and (blank := [r.id for r in rows if not r.transcript.strip()]):
        raise LLMSRTError(f"row {blank[0]}: no reference transcript for the {task.value} loss ({len(blank)} such "
                          "rows); fill them in or score s2tt")
    was_training = model.training
    model.eval()
    losses: list[float | None] = [None] * len(rows)
    unscored: list[tuple[str, str]] = []
    try:
        for start in range(0, len(rows), batch_size):
            loaded = {}  # row position -> its samples, for the chunk's rows whose audio can be used
            for i in range(start, min(start + batch_size, len(rows))):
                try:  # the window as training loads it: the encoder's own check names no file and stops the chunk
                    loaded[i] = load_audio(rows[i].audio, max_seconds=WINDOW_SECONDS)
                except AudioError as e:
                    unscored.append((rows[i].id, str(e)))
            if loaded:
                _score(model, rows, task, loaded, losses, unscored)
    finally:
        model.train(was_training)
    return ReferenceLosses(losses, unscored)


def _score(model, rows: Sequence[Row], task: Task, loaded: dict, losses: list[float | None],
           unscored: list[tuple[str, str]]) -> None:
    """The losses of `loaded` (row position -> its samples) into `losses`, in one encoder call and one LLM pass; a
    chunk that runs out of GPU memory in two halves, a row out of memory alone left unscored with its reason: it
    stopped `reference_losses`, and every loss measured before it was lost."""
    try:
        for i, x in zip(loaded, _chunk_losses(model, rows, task, loaded)):
            losses[i] = x
        return
    except RuntimeError as e:  # torch.OutOfMemoryError, or a library's "out of memory" (cuBLAS)
        if not is_out_of_memory(e):
            raise
        error = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
    release(model.device)  # out of the except block: its traceback's frames no longer hold the chunk's tensors
    positions = list(loaded)
    if len(positions) == 1:
        unscored.append((rows[positions[0]].id, f"out of GPU memory alone ({error})"))
        return
    half = (len(positions) + 1) // 2
    for part in (positions[:half], positions[half:]):
        _score(model, rows, task, {i: loaded[i] for i in part}, losses, unscored)


def _chunk_losses(model, rows: Sequence[Row], task: Task, loaded: dict) -> list[float]:
    """The losses of `loaded`'s rows: one encoder call, one LLM pass (its tensors gone with this frame)."""
    feats, mask = model.encoder.encode(list(loaded.values()))
    split = [token_split(model.tokenizer, rows[i], task, model.config.language_tags) for i in loaded]
    out = model({"features": feats, "feature_mask": mask, "prompt_ids": [p for p, _ in split],
                 "target_ids": [t for _, t in split], "row_losses": True})
    return [float(x) for x in out["row_losses"]]
