"""Manifest rows -> training examples -> length-bucketed batches.

    rows = weighted_rows([read_manifest("cv.jsonl"), read_manifest("fleurs.jsonl")], [0.7, 0.3], seed=0)
    data = SpeechTextDataset(rows, {"srt": 0.8, "asr": 0.2}, seed=0)
    sampler = BucketBatchSampler(data.durations, batch_size=16, seed=0)      # durations of each epoch
    for epoch, _, indices in sampler.stream():                               # endless: every epoch in turn
        batch = collate([data.example(i, epoch) for i in indices])  # or collate(examples, features=cache...)
    dev = stratified(read_manifest("dev.jsonl"), 64, seed=0)  # spread evenly over the directions

The model masks the labels to the target only; the training recipe tokenizes `prompts` and `targets` in its
DataLoader workers (llm_srt.train.data).
"""

import hashlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import WINDOW_SECONDS, load_audio
from ..errors import LLMSRTError, warn_each_time
from ..prompts import Task, build
from .manifest import PackedRows, Row

BUCKET_BATCHES = 50  # batches per length bucket: sorted within a bucket, so padding stays small
EMPTY_EPOCHS = 100  # epochs in turn without a whole step after which stream() stops (with groups: see there)


@dataclass(frozen=True)
class Example:
    id: str  # the row id
    audio: str  # audio file path
    duration: float  # seconds
    task: Task
    prompt: str  # the input text after the speech embeddings (paper Table 1)
    target: str  # what the model learns to write
    src: str  # ISO 639-3 of the speech
    tgt: str  # ISO 639-3 of the translation ("" for ASR)
    transcript: str
    translation: str


TRANSCRIPT_READERS = (Task.SMT, Task.SRT, Task.MT)  # translation-row tasks whose input or target is the transcript


class SpeechTextDataset:
    """Examples of one task, or of a deterministic mix of tasks.

    `task`: a Task ("srt") or a mix {"srt": 0.8, "asr": 0.2}. ASR examples come from ASR rows; SMT / SRT / S2TT /
    MT examples from translation rows. A mix's epoch holds every row of its heaviest task once and draws the other
    tasks' examples in proportion from seeded permutations of their rows; each epoch draws the next ones, so over
    epochs a drawn task goes through all of its rows (cycled: 200 MT examples an epoch from 7,200 MT rows are rows
    0-199 of the permutation in epoch 0, 200-399 in epoch 1, ...). `dataset[i]` is epoch 0's example i,
    `example(i, epoch)` any epoch's; the slots (their count and tasks) are the same in every epoch.
    """

    def __init__(self, rows: Sequence[Row], task: Task | str | Mapping[str, float], seed: int = 0,
                 source: str = "the manifest", tags: Mapping[str, str] | None = None):
        """`source`: what the rows came from, for the error when a task has none of its kind. `tags`: the model's
        own codes in its language tags (SpeechLLMConfig.language_tags: an imported reference model's <|cmn|>)."""
        self._tags = dict(tags or {})
        mix = _normalize_mix(task)
        asr = np.array([row.is_asr for row in rows], dtype=bool)
        pools = {t: np.flatnonzero(asr == (t is Task.ASR)) for t in mix}  # the rows of each task, as indices
        for t, pool in pools.items():
            if not len(pool):
                kind = "ASR (transcript-only)" if t is Task.ASR else "translation"
                raise LLMSRTError(f"task {t.value} needs {kind} rows and {source} has none; add them (`llm-srt "
                                  "prepare` writes both kinds) or drop it from the task mix")
        if readers := [t for t in pools if t in TRANSCRIPT_READERS]:  # an empty transcript would be trained on
            if blank := [i for i in pools[readers[0]] if not rows[i].transcript.strip()]:
                raise LLMSRTError(f"task {readers[0].value} reads each translation row's transcript, but {len(blank)} "
                                  f"of {source}'s have none (e.g. id {rows[blank[0]].id}); fill them in, or train "
                                  "s2tt (speech -> translation alone)")
        self._rows = rows if isinstance(rows, PackedRows) else PackedRows(rows)  # shared by DataLoader workers
        self._row_durations = np.array([row.duration for row in rows], dtype=np.float64)
        self._tasks = tuple(mix)
        main = max(mix, key=mix.get)  # the first of the largest shares
        total = round(len(pools[main]) / mix[main])
        index, tasks = [], []  # epoch 0's examples: the row and the task (its place in _tasks) of each
        self._draws: list[_Draw] = []  # the drawn tasks' slots
        start = 0
        for i, (t, weight) in enumerate(mix.items()):
            if t is main:
                self._main = (start, start + len(pools[t]))
                index.append(pools[t])
            else:
                draw = _Draw(start, max(1, round(total * weight)), t, pools[t],  # a small share: 1, never 0
                             np.random.default_rng([seed, i]).permutation(len(pools[t])))
                self._draws.append(draw)
                index.append(draw.rows(0))
            tasks.append(np.full(len(index[-1]), i, dtype=np.int8))
            start += len(index[-1])
        self._index = np.concatenate(index)
        self._task_of = np.concatenate(tasks)
        self._durations = self._row_durations[self._index]  # epoch 0's

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, index: int) -> Example:
        return self.example(index, 0)

    def example(self, index: int, epoch: int) -> Example:
        """Example `index` of `epoch` (a negative index counts from the end)."""
        n = len(self._index)
        if not -n <= index < n:
            raise IndexError(f"example {index} of {n}")
        index = int(index) % n
        row_index = self._index[index]
        for draw in self._draws:
            if draw.start <= index < draw.start + draw.n:
                row_index = draw.pool[draw.order[(index - draw.start + epoch * draw.n) % len(draw.order)]]
        row, task = self._rows[row_index], self._tasks[self._task_of[index]]
        prompt, target = build(task, row.src_lang, row.tgt_lang or None, row.transcript, row.translation,
                               tags=self._tags)
        return Example(id=row.id, audio=row.audio, duration=row.duration, task=task, prompt=prompt, target=target,
                       src=row.src_lang, tgt=row.tgt_lang, transcript=row.transcript, translation=row.translation)

    def durations(self, epoch: int = 0) -> np.ndarray:
        """Each example's duration in `epoch` (seconds)."""
        out = self._durations.copy()
        for draw in self._draws:
            out[draw.start:draw.start + draw.n] = self._row_durations[draw.rows(epoch)]
        return out

    def needs_speech(self) -> np.ndarray:
        """Per example: whether its task reads speech (False: text-only mt); the same in every epoch."""
        return np.array([t.needs_speech for t in self._tasks], dtype=bool)[self._task_of]

    def epochs_to_cover(self) -> int:
        """The epochs by which every drawn task has gone through its whole pool (0 without a drawn task: epoch 0
        holds every row)."""
        return max([-(-len(draw.pool) // draw.n) for draw in self._draws if draw.n] + [0])

    def speech_clips(self, epochs: int | None = None, first: int = 0) -> dict[str, float]:
        """audio -> seconds of every clip that epochs `first` .. `epochs` - 1 read as speech (None: any epoch): the
        heaviest task's rows and what each drawn task draws in them, at most its whole pool (what a feature cache
        filled before training must hold). Rows are read one at a time: no list of millions of rows is made."""
        start, stop = self._main
        parts = [(self._tasks[self._task_of[start]], self._index[start:stop])]
        for draw in self._draws:
            reach = len(draw.pool) if epochs is None else min(len(draw.pool), (epochs - first) * draw.n)
            parts.append((draw.task, draw.pool[draw.order[(first * draw.n + np.arange(reach)) % len(draw.order)]]))
        clips: dict[str, float] = {}
        for task, rows in parts:
            if task.needs_speech:  # a text-only mt example never reads its row's audio
                for i in rows:
                    clips[self._rows[i].audio] = float(self._row_durations[i])
        return clips


class _Draw:
    """A drawn task's slots in a mix: examples start .. start + n - 1, from `pool` (row indices) in the seeded
    `order`; epoch e takes positions e * n .. e * n + n - 1 of that order, cycled."""

    def __init__(self, start: int, n: int, task: Task, pool: np.ndarray, order: np.ndarray):
        self.start, self.n, self.task, self.pool, self.order = start, n, task, pool, order

    def rows(self, epoch: int) -> np.ndarray:
        """The row indices of the slots in `epoch`."""
        return self.pool[self.order[(np.arange(self.n) + epoch * self.n) % len(self.order)]]


def with_transcripts(rows: list[Row], task: Task | str | Mapping[str, float], where: str) -> list[Row]:
    """`rows` less the translation rows without a transcript where `task` (a mix) reads it (TRANSCRIPT_READERS:
    `SpeechTextDataset` refuses them), with one warning giving their count: data.skip_bad's way with a bad row. The
    warning names the line that called train.data.read_stage_rows (through its `_transcribed`)."""
    reader, blank = blank_transcripts(rows, task)
    if blank:
        warn_each_time(f"{where}: skipped {len(blank)} translation rows without a transcript, which task "
                       f"{reader.value} reads (first: id {blank[0].id})", stacklevel=4)
    return [r for r in rows if r.is_asr or r.transcript.strip()] if blank else rows


def blank_transcripts(rows: Sequence[Row], task: Task | str | Mapping[str, float]) -> tuple[Task | None, list[Row]]:
    """The first task of `task` (a mix) that reads a translation row's transcript (TRANSCRIPT_READERS), and the
    translation rows of `rows` without one (none where no task reads it)."""
    readers = [t for t in _normalize_mix(task) if t in TRANSCRIPT_READERS]
    if not readers:
        return None, []
    return readers[0], [r for r in rows if not r.is_asr and not r.transcript.strip()]


def ids_digest(rows: Sequence[Row], task: Task | str | Mapping[str, float]) -> str:
    """A short digest of the ids of the rows `task` (a mix) reads, in order: which examples a saved data position
    counts (a resume compares it; with data.skip_bad the audio files decide which rows are read)."""
    reads = {t is Task.ASR for t in _normalize_mix(task)}
    return hashlib.blake2b("\n".join(r.id for r in rows if r.is_asr in reads).encode(), digest_size=8).hexdigest()


def weighted_rows(parts: Sequence[Sequence[Row]], weights: Sequence[float] | None = None,
                  seed: int = 0) -> list[Row]:
    """Rows of several manifests as one epoch whose shares follow `weights` (None: each row once).

    No row is left out: the epoch is the smallest one in which every manifest holds all of its rows, and a manifest
    whose weight asks for more rows than it has repeats them (whole copies, then a seeded draw for the rest).
    E.g. 1000 Common Voice rows at 0.7 and 100 FLEURS rows at 0.3: 1000 CV + 429 FLEURS (4 copies + 29 drawn).
    """
    if weights is None:
        return [r for part in parts for r in part]
    if len(weights) != len(parts):
        raise LLMSRTError(f"{len(weights)} sampling weights for {len(parts)} manifests; give one weight each")
    if not all(w > 0 for w in weights):
        raise LLMSRTError(f"sampling weights must be positive, got {list(weights)}")
    if not all(parts):
        raise LLMSRTError("a weighted manifest has no rows")
    shares = [w / sum(weights) for w in weights]
    total = max(len(part) / share for part, share in zip(parts, shares))
    rows: list[Row] = []
    for i, (part, share) in enumerate(zip(parts, shares)):
        n = max(len(part), round(total * share))
        copies, rest = divmod(n, len(part))
        order = np.random.default_rng([seed, 7919, i]).permutation(len(part))[:rest]
        rows += list(part) * copies + [part[k] for k in order]
    return rows


def weighted_by_kind(parts: Sequence[Sequence[Row]], weights: Sequence[float] | None,
                     task: Task | str | Mapping[str, float], seed: int = 0) -> list[Row]:
    """`weighted_rows` applied to each kind of row the task (mix) reads, apart: ASR rows for asr, translation rows
    for the other tasks; the rows of a kind it does not read are left out. So the weights are the manifests' shares
    of what the stage trains on: Common Voice (ASR rows only) and FLEURS (one ASR row and N-1 translation rows a
    clip) at 0.5 each give an ASR stage half its examples from each, where weighting all rows gave FLEURS 6%.
    A manifest without rows of a kind has no share of it."""
    if weights is None:
        return [r for part in parts for r in part]
    if len(weights) != len(parts):
        raise LLMSRTError(f"{len(weights)} sampling weights for {len(parts)} manifests; give one weight each")
    mix = _normalize_mix(task)
    rows: list[Row] = []
    for is_asr in (True, False):
        if any((t is Task.ASR) == is_asr for t in mix):
            kept = [([r for r in part if r.is_asr == is_asr], w) for part, w in zip(parts, weights)]
            kept = [(part, w) for part, w in kept if part]
            if kept:
                rows += weighted_rows([part for part, _ in kept], [w for _, w in kept], seed=seed)
    return rows


def stratified(rows: Sequence[Row], n: int, seed: int = 0) -> list[Row]:
    """Up to `n` rows spread evenly over the directions (src_lang, tgt_lang; ASR rows: the source alone).

    The directions in a seeded order take turns, each giving its rows in a seeded order, so every direction
    contributes (up to one row) before any gives a second, and every prefix of the result is as even as the whole.
    """
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.src_lang, row.tgt_lang)].append(row)
    rng = np.random.default_rng([seed, 104729])
    keys = sorted(groups)
    queues = [[groups[k][i] for i in rng.permutation(len(groups[k]))] for k in (keys[i] for i in
                                                                               rng.permutation(len(keys)))]
    out: list[Row] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        out += [q[depth] for q in queues if depth < len(q)]
        if len(out) >= n:
            break
    return out[:n]


class BucketBatchSampler:
    """Batches of indices with similar durations, deterministic given (seed, epoch) and resumable.

    Each epoch: a seeded permutation, cut into buckets of `bucket_batches` batches, each bucket sorted by duration
    and cut into batches, then the batches shuffled. With several ranks, rank r takes batches r, r + R, ... The epoch
    is trimmed to whole optimizer steps, R x `step_batches` (the micro-batches a rank accumulates) batches each: the
    ranks stay in step, no step runs across an epoch's end, and every layout of one step's examples (1 process x 4
    micro-batches, 2 ranks x 2, 4 ranks x 1) trains on the same batches at every step and resumes from another's
    checkpoint where it stopped (the shuffle leaves other batches out each epoch).

    Position: `state_dict()` = {"epoch", "batch", ...} with `batch` the number of batches this sampler has yielded in
    the epoch; `load_state_dict()` makes the next iteration yield exactly the remaining batches. A DataLoader
    with workers pulls batches ahead of the training loop: iterate `stream()`, which tags each batch with its
    position, and save `state_dict(position)` of the last batch the loop consumed. After a complete pass the sampler
    moves to the next epoch. The state holds the batch size too: a resume at another one goes on with the examples
    the epoch has not trained on yet (`load_state_dict`).

    `groups` (one hashable per index, e.g. whether an example reads speech): a batch never holds two groups; each
    bucket is cut into batches group by group, and the shuffle mixes the groups' batches.
    `durations`: one per index, or epoch -> those of that epoch (`SpeechTextDataset.durations`: a task mix draws
    other examples each epoch), the same count in every epoch.
    """

    def __init__(self, durations: Sequence[float] | Callable[[int], Sequence[float]], batch_size: int, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = False, bucket_batches: int = BUCKET_BATCHES,
                 num_replicas: int = 1, rank: int = 0, groups: Sequence[Hashable] | None = None,
                 step_batches: int = 1):
        if batch_size < 1 or step_batches < 1:
            raise LLMSRTError(f"batch size and micro-batches per step must be at least 1, got {batch_size} and "
                              f"{step_batches}")
        if not 0 <= rank < num_replicas:
            raise LLMSRTError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self._durations_of = durations if callable(durations) else None
        self.durations = np.asarray(durations(0) if callable(durations) else durations, dtype=np.float64)  # epoch 0's
        if groups is not None and len(groups) != len(self.durations):
            raise LLMSRTError(f"{len(groups)} groups for {len(self.durations)} examples; give one group per example")
        self._epoch_durations = (0, self.durations)  # the last epoch's, kept: `batches` is asked often per epoch
        # each index's group as a small integer (the groups in sorted order), or None: one group
        self.groups = None if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.bucket_batches = bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.step_batches = step_batches
        self.epoch = 0
        self.batch = 0
        self._resumed: _Resumed | None = None  # an epoch begun at another batch size
        self.resume_note = ""  # what the last load_state_dict did to the position, for the run log ("" nothing)

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of `epoch`, in order."""
        batches = self.all_batches(epoch)
        usable = len(batches) - len(batches) % (self.num_replicas * self.step_batches)
        return batches[self.rank:usable:self.num_replicas]

    def all_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of `epoch`, in order, before they are dealt to the ranks (the batches after the last whole
        step are left out there); of an epoch resumed at another batch size, those of the examples it had left."""
        resumed = self._resumed if self._resumed is not None and self._resumed.epoch == epoch else None
        return self._cut(epoch, self.batch_size, self.bucket_batches, None if resumed is None else resumed.done)

    def _cut(self, epoch: int, batch_size: int, bucket_batches: int, done: np.ndarray | None) -> list[list[int]]:
        """`epoch`'s batches of `batch_size` (`bucket_batches` to a bucket) of the examples not `done` (a mask): the
        epoch's order with those left out, so every batch size cuts the same shuffle."""
        durations = self.epoch_durations(epoch)
        n = len(durations)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        if done is not None:
            order = order[~done[order]]
        bucket = batch_size * bucket_batches
        batches = []
        for start in range(0, len(order), bucket):
            chunk = order[start:start + bucket]
            chunk = chunk[np.argsort(durations[chunk], kind="stable")]
            for part in ([chunk] if self.groups is None else
                         [chunk[self.groups[chunk] == g] for g in np.unique(self.groups[chunk])]):
                batches += [part[i:i + batch_size].tolist() for i in range(0, len(part), batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def epoch_durations(self, epoch: int) -> np.ndarray:
        """The examples' durations in `epoch`."""
        if self._durations_of is None:
            return self.durations
        if self._epoch_durations[0] != epoch:
            durations = np.asarray(self._durations_of(epoch), dtype=np.float64)
            if len(durations) != len(self.durations):
                raise LLMSRTError(f"epoch {epoch} has {len(durations)} durations, epoch 0 {len(self.durations)}")
            self._epoch_durations = (epoch, durations)
        return self._epoch_durations[1]

    def __iter__(self):
        batches = self.batches(self.epoch)
        while self.batch < len(batches):
            self.batch += 1
            yield batches[self.batch - 1]
        self.epoch += 1
        self.batch = 0

    def stream(self):
        """Endless (epoch, batch, indices): every epoch in turn, `batch` counting the batches yielded in the epoch
        (indices included), so a consumer that runs behind (a DataLoader prefetching) knows each batch's position.
        LLMSRTError where no epoch holds a whole step (it looped forever, yielding nothing): at once without `groups`
        (every epoch then has as many batches), after EMPTY_EPOCHS epochs in turn with them (their count varies)."""
        empty = 0  # epochs in turn, each begun at its start, that held no whole step
        while True:
            fresh = self.batch == 0 and (self._resumed is None or self._resumed.epoch != self.epoch)
            yielded = False
            for indices in self:
                yielded = True
                yield self.epoch, self.batch, indices
            empty = 0 if yielded or not fresh else empty + 1
            if empty >= (1 if self.groups is None else EMPTY_EPOCHS):
                step = self.num_replicas * self.step_batches
                full = ", full ones only (drop_last)" if self.drop_last else ""
                raise LLMSRTError(f"no batch to yield: {len(self.durations)} examples in batches of {self.batch_size}"
                                  f"{full} make {len(self.all_batches(self.epoch - 1))} batches an epoch, fewer than "
                                  f"one step of {step} ({self.num_replicas} ranks x {self.step_batches} "
                                  "micro-batches); lower the batch size or the micro-batches a step, or add data")

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def start_at(self, step: int) -> None:
        """Begin the stream `step` optimizer steps in (data.start_step: a stage that goes on over the examples an
        earlier stage on the same data did not reach), counted in the whole steps of R ranks x `step_batches`
        micro-batches each epoch holds (`batches`), so that every layout of a step's examples begins at the same
        examples. From the stream's start: a resume's position is its checkpoint's (`load_state_dict`)."""
        self.set_epoch(0)
        per_step, empty = self.num_replicas * self.step_batches, 0
        if self.groups is None and (steps := len(self.all_batches(0)) // per_step):  # every epoch as many (the cut
            self.epoch, step = divmod(step, steps)  # depends on the count alone): no epoch cut on the way
        while step >= (steps := len(self.all_batches(self.epoch)) // per_step) and empty < EMPTY_EPOCHS:
            step, self.epoch, empty = step - steps, self.epoch + 1, 0 if steps else empty + 1  # (stream() says
            #   where no epoch holds a whole step)
        self.batch = step * self.step_batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.batch, self._resumed = epoch, 0, None

    def state_dict(self, position: tuple[int, int] | None = None) -> dict:
        """The position (this sampler's own, or `position` = (epoch, batch) from `stream()`); a finished epoch is
        reported as the start of the next (its last batch may have been trimmed for this number of ranks, and no
        other number must replay it). In an epoch resumed at another batch size `resumed_from` is the state it was
        resumed from: the examples trained on before."""
        epoch, batch = position if position is not None else (self.epoch, self.batch)
        if batch and batch >= len(self.batches(epoch)):
            epoch, batch = epoch + 1, 0
        state = {"epoch": epoch, "batch": batch, "seed": self.seed, "replicas": self.num_replicas,
                 "batch_size": self.batch_size, "bucket_batches": self.bucket_batches}
        if self._resumed is not None and self._resumed.epoch == epoch:
            state["resumed_from"] = self._resumed.state
        return state

    def load_state_dict(self, state: Mapping) -> int:
        """Resume; also with another number of ranks, as the position counts whole rounds of batches (R ranks
        after b batches each = 1 rank after R * b batches, the same examples in the same order). Returns the
        batches skipped: a position that is no whole step of this layout, R x `step_batches` batches (1 rank stopped
        9 batches into an epoch, resumed on 4: a step's micro-batches ran across an epoch's end), goes on from the
        next whole step, at most R x step_batches - 1 batches on, so that every rank starts at the same step.

        A position saved at another batch size (or bucket size) counts batches of another cut of the epoch: the rest
        of that epoch is then this size's batches of the examples it has not trained on (each example once), said in
        `resume_note`, and the next epoch this size's own. A state without a batch size (saved before 2026-12-06) is
        taken as one of this size."""
        if state.get("seed", self.seed) != self.seed:
            raise LLMSRTError(f"resuming a sampler seeded {state['seed']} with seed {self.seed}; use the same seed")
        epoch, before = int(state["epoch"]), state.get("resumed_from")
        self.resume_note = ""
        if self._shape(state) != (self.batch_size, self.bucket_batches):
            done = self._done(epoch, state)
            self._resumed = _Resumed(epoch, dict(state), done) if done.any() else None  # none: the epoch's start
            self.epoch, self.batch = epoch, 0
            if self._resumed is not None:
                size, buckets = self._shape(state)
                cut = f"{size}" + (f", {buckets} to a bucket" if buckets != self.bucket_batches else "")
                last = "the last " if before is not None else ""  # (an epoch resumed before at another size)
                self.resume_note = (f"the saved data position (epoch {epoch}: {int(done.sum())} examples trained, "
                                    f"{last}in batches of {cut}) counts batches of another size than this run's "
                                    f"{self.batch_size}: the rest of that epoch is its {int((~done).sum())} examples "
                                    f"not trained on yet, in batches of {self.batch_size}")  # (done: every resume's)
            return 0
        # an epoch begun at another batch size goes on in the batches of the examples that one left
        self._resumed = None if before is None else _Resumed(epoch, dict(before), self._done(epoch, before))
        consumed = int(state["batch"]) * int(state.get("replicas", self.num_replicas))
        # on from the next whole step of this layout (ranks x micro-batches): a position from a run with fewer
        # examples a step (or from before epochs held whole steps) would have every later step run across an
        # epoch's end
        step = self.num_replicas * self.step_batches
        rounded = -(-consumed // step) * step
        self.epoch, self.batch = int(state["epoch"]), rounded // self.num_replicas
        if rounded == consumed:
            return 0
        # near the epoch's end the next step may pass its last batch: only the batches there are count
        return min(rounded, len(self.all_batches(self.epoch))) - consumed

    def _done(self, epoch: int, state: Mapping) -> np.ndarray:
        """Which examples of `epoch` the position `state` had trained on (a mask): its first batches of its batch
        size, of the examples its own `resumed_from` (an earlier part of the epoch, at another size) had left."""
        before = state.get("resumed_from")
        done = self._done(epoch, before) if before is not None else np.zeros(len(self.durations), dtype=bool)
        taken = int(state["batch"]) * int(state.get("replicas", self.num_replicas))  # the ranks share one order
        for batch in self._cut(epoch, *self._shape(state), done)[:taken]:
            done[batch] = True
        return done

    def _shape(self, state: Mapping) -> tuple[int, int]:
        """What cut the state's epoch into batches: (batch size, batches a bucket); this sampler's where the state is
        older than these keys."""
        return int(state.get("batch_size", self.batch_size)), int(state.get("bucket_batches", self.bucket_batches))


@dataclass(frozen=True)
class _Resumed:
    """An epoch resumed at another batch size: the state it was resumed from, and the examples trained on before."""
    epoch: int
    state: dict
    done: np.ndarray  # bool, one per example


def collate(examples: Sequence[Example], features: Sequence[np.ndarray] | None = None) -> dict:
    """A batch: ids, prompts, targets, src, tgt, tasks, transcripts, translations, and either
    audio (list of 16 kHz float32 arrays, each within Whisper's window as training loads it: a clip a frame over is
    cut to it, a longer one is an AudioError naming its file; None for text-only MT examples) or, given per-example
    (T_i, D) `features`, features (B, T_max, D) zero-padded (`pad_features`) with feature_mask (B, T_max) bool
    (True = real frame)."""
    batch = text_fields(examples)
    if features is None:  # (loaded without the window, a 30 s clip and a frame reached the encoder, which refused it
        #   as "audio #3", naming no file)
        batch["audio"] = [load_audio(e.audio, max_seconds=WINDOW_SECONDS) if e.task.needs_speech else None
                          for e in examples]
        return batch
    if len(features) != len(examples):
        raise LLMSRTError(f"collate got {len(features)} feature arrays for {len(examples)} examples")
    batch["features"], batch["feature_mask"] = pad_features(features)
    return batch


def text_fields(examples: Sequence[Example]) -> dict:
    """The batch's text part: ids, prompts, targets, src, tgt, tasks, transcripts, translations (lists)."""
    return {
        "ids": [e.id for e in examples],
        "prompts": [e.prompt for e in examples],
        "targets": [e.target for e in examples],
        "src": [e.src for e in examples],
        "tgt": [e.tgt for e in examples],
        "tasks": [e.task for e in examples],
        "transcripts": [e.transcript for e in examples],
        "translations": [e.translation for e in examples],
    }


def pad_features(features: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (T_i, D) arrays -> (B, T_max, D) zero-padded, and the mask (B, T_max) bool (True = a real frame).
    float16 when every array is (the feature cache's: half the bytes a DataLoader worker passes through shared
    memory and a pinned copy moves; the model widens them on its device, exactly), else float32. One concatenation
    and one masked assignment: no per-row copies."""
    shapes = [np.shape(f) for f in features]
    if not shapes or any(len(s) != 2 for s in shapes) or len({s[1] for s in shapes}) != 1:
        raise LLMSRTError(f"features must all be (T, D) with one D; got {shapes}")
    half = all(np.asarray(f).dtype == np.float16 for f in features)
    lengths = torch.tensor([s[0] for s in shapes])
    mask = torch.arange(int(lengths.max()))[None, :] < lengths[:, None]
    padded = torch.zeros(*mask.shape, shapes[0][1], dtype=torch.float16 if half else torch.float32)
    padded[mask] = torch.from_numpy(np.concatenate(features).astype(np.float16 if half else np.float32, copy=False))
    return padded, mask


def _normalize_mix(task) -> dict[Task, float]:
    if isinstance(task, Mapping):
        mix = {}
        for name, weight in task.items():
            t = _trainable(name, "task mix: ")
            if not weight > 0:
                raise LLMSRTError(f"task mix: weight of {name} must be positive, got {weight}")
            mix[t] = float(weight)
        if not mix:
            raise LLMSRTError("task mix is empty")
        total = sum(mix.values())
        return {t: w / total for t, w in mix.items()}
    return {_trainable(task): 1.0}


def _trainable(name, where: str = "") -> Task:
    """The task named `name`, which must be one with training examples (`where`: the error's prefix)."""
    try:
        return Task.trainable_named(name)
    except LLMSRTError as e:
        raise LLMSRTError(f"{where}{e}") from None
