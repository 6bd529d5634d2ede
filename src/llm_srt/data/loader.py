"""Manifest rows -> training examples -> length-bucketed batches.

    rows = read_manifest("data/mini/train.jsonl")
    data = SpeechTextDataset(rows, {"srt": 0.8, "asr": 0.2}, seed=0)
    sampler = BucketBatchSampler(data.durations(), batch_size=16, seed=0)
    for indices in sampler:
        batch = collate([data[i] for i in indices])          # or collate(examples, features=cache.get_or_compute(...))

The model tokenizes `prompts` and `targets` and masks the labels to the target only.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..audio import load_audio
from ..errors import LLMSRTError
from ..prompts import Task, build
from .manifest import Row

BUCKET_BATCHES = 50  # batches per length bucket: sorted within a bucket, so padding stays small


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


class SpeechTextDataset:
    """Examples of one task, or of a deterministic mix of tasks.

    `task`: a Task ("srt") or a mix {"srt": 0.8, "asr": 0.2}. ASR examples come from ASR rows; SMT / SRT / S2TT /
    MT examples from translation rows. A mix holds every row of its heaviest task once and draws the other tasks'
    examples in proportion (seeded permutations, cycled when a task has fewer rows than its share).
    """

    def __init__(self, rows: Sequence[Row], task: Task | str | Mapping[str, float], seed: int = 0):
        mix = _normalize_mix(task)
        pools = {t: [r for r in rows if r.is_asr == (t is Task.ASR)] for t in mix}
        for t, pool in pools.items():
            if not pool:
                kind = "ASR (transcript-only)" if t is Task.ASR else "translation"
                raise LLMSRTError(f"task {t.value} needs {kind} rows and the manifest has none")
        main = max(mix, key=mix.get)  # the first of the largest shares
        total = round(len(pools[main]) / mix[main])
        self.items: list[tuple[Row, Task]] = []
        for i, (t, weight) in enumerate(mix.items()):
            n = len(pools[t]) if t is main else round(total * weight)
            order = np.random.default_rng([seed, i]).permutation(len(pools[t])) if t is not main else None
            for k in range(n):
                row = pools[t][k] if order is None else pools[t][order[k % len(order)]]
                self.items.append((row, t))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Example:
        row, task = self.items[index]
        prompt, target = build(task, row.src_lang, row.tgt_lang or None, row.transcript, row.translation)
        return Example(id=row.id, audio=row.audio, duration=row.duration, task=task, prompt=prompt, target=target,
                       src=row.src_lang, tgt=row.tgt_lang, transcript=row.transcript, translation=row.translation)

    def durations(self) -> list[float]:
        return [row.duration for row, _ in self.items]


class BucketBatchSampler:
    """Batches of indices with similar durations, deterministic given (seed, epoch) and resumable.

    Each epoch: a seeded permutation, cut into buckets of `bucket_batches` batches, each bucket sorted by duration
    and cut into batches, then the batches shuffled. With several ranks, rank r takes batches r, r + R, ... (the
    epoch is trimmed to a multiple of R batches so ranks stay in step).

    Position: `state_dict()` = {"epoch", "batch", ...} with `batch` the number of batches this sampler has yielded in
    the epoch; `load_state_dict()` makes the next iteration yield exactly the remaining batches. A DataLoader
    with workers pulls batches ahead of the training loop: save the number of batches the loop consumed instead.
    After a complete pass the sampler moves to the next epoch.
    """

    def __init__(self, durations: Sequence[float], batch_size: int, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, bucket_batches: int = BUCKET_BATCHES, num_replicas: int = 1,
                 rank: int = 0):
        if batch_size < 1:
            raise LLMSRTError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise LLMSRTError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.durations = np.asarray(durations, dtype=np.float64)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.bucket_batches = bucket_batches
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.batch = 0

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of `epoch`, in order."""
        n = len(self.durations)
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        bucket = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, n, bucket):
            chunk = order[start:start + bucket]
            chunk = chunk[np.argsort(self.durations[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.num_replicas
        return batches[self.rank:usable:self.num_replicas]

    def __iter__(self):
        batches = self.batches(self.epoch)
        while self.batch < len(batches):
            self.batch += 1
            yield batches[self.batch - 1]
        self.epoch += 1
        self.batch = 0

    def __len__(self) -> int:
        return len(self.batches(self.epoch))

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0

    def state_dict(self) -> dict:
        """The position; a finished epoch is reported as the start of the next (its last batch may have been
        trimmed for this number of ranks, and no other number must replay it)."""
        epoch, batch = self.epoch, self.batch
        if batch and batch >= len(self.batches(epoch)):
            epoch, batch = epoch + 1, 0
        return {"epoch": epoch, "batch": batch, "seed": self.seed, "replicas": self.num_replicas}

    def load_state_dict(self, state: Mapping) -> None:
        """Resume; also with another number of ranks, as the position counts whole rounds of batches (R ranks
        after b batches each = 1 rank after R * b batches, the same examples in the same order)."""
        if state.get("seed", self.seed) != self.seed:
            raise LLMSRTError(f"resuming a sampler seeded {state['seed']} with seed {self.seed}; use the same seed")
        consumed = int(state["batch"]) * int(state.get("replicas", self.num_replicas))
        if consumed % self.num_replicas:
            raise LLMSRTError(f"the checkpoint stopped {consumed} batches into epoch {state['epoch']}, which "
                              f"{self.num_replicas} ranks cannot split evenly; resume with "
                              f"{state.get('replicas', 1)} ranks")
        self.epoch, self.batch = int(state["epoch"]), consumed // self.num_replicas


def collate(examples: Sequence[Example], features: Sequence[np.ndarray] | None = None) -> dict:
    """A batch: ids, prompts, targets, src, tgt, tasks, transcripts, translations, and either
    audio (list of 16 kHz float32 arrays; None for text-only MT examples) or, given per-example (T_i, D)
    `features`, features (B, T_max, D) float32 zero-padded with feature_mask (B, T_max) bool (True = real frame)."""
    batch = {
        "ids": [e.id for e in examples],
        "prompts": [e.prompt for e in examples],
        "targets": [e.target for e in examples],
        "src": [e.src for e in examples],
        "tgt": [e.tgt for e in examples],
        "tasks": [e.task for e in examples],
        "transcripts": [e.transcript for e in examples],
        "translations": [e.translation for e in examples],
    }
    if features is None:
        batch["audio"] = [load_audio(e.audio) if e.task.needs_speech else None for e in examples]
        return batch
    if len(features) != len(examples):
        raise LLMSRTError(f"collate got {len(features)} feature arrays for {len(examples)} examples")
    feats = [torch.as_tensor(np.asarray(f, dtype=np.float32)) for f in features]
    dims = {f.shape[1] for f in feats}
    if len(dims) != 1 or any(f.ndim != 2 for f in feats):
        raise LLMSRTError(f"features must all be (T, D) with one D; got {[tuple(f.shape) for f in feats]}")
    lengths = torch.tensor([f.shape[0] for f in feats])
    padded = torch.zeros(len(feats), int(lengths.max()), dims.pop())
    for i, f in enumerate(feats):
        padded[i, :f.shape[0]] = f
    batch["features"] = padded
    batch["feature_mask"] = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return batch


def _normalize_mix(task) -> dict[Task, float]:
    if isinstance(task, Mapping):
        mix = {}
        for name, weight in task.items():
            try:
                t = Task(name)
            except ValueError:
                raise LLMSRTError(f"task mix: unknown task {name!r}; use "
                                  f"{', '.join(t.value for t in Task)}") from None
            if not weight > 0:
                raise LLMSRTError(f"task mix: weight of {name} must be positive, got {weight}")
            mix[t] = float(weight)
        if not mix:
            raise LLMSRTError("task mix is empty")
        total = sum(mix.values())
        return {t: w / total for t, w in mix.items()}
    try:
        return {Task(task): 1.0}
    except ValueError:
        raise LLMSRTError(f"unknown task {task!r}; use {', '.join(t.value for t in Task)}") from None
