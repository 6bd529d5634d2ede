"""The DataLoader's parts of `TrainingData` (module level, so that spawned workers can unpickle them): the collator
that turns examples into a model batch, the map-style dataset of whole batches the workers build, and the sampler
that streams `BucketBatchSampler`'s positions to them."""

import contextlib
import os
import pickle
import signal
import threading

import torch

from ..audio import WINDOW_SECONDS, load_audio
from ..data.features import FeatureCache
from ..data.loader import BucketBatchSampler, SpeechTextDataset, pad_features, text_fields
from ..errors import AudioError, LLMSRTError


class Collator:
    """Examples -> a model batch: text fields; `prompt_ids` / `target_ids` (tokenized once, targets + EOS) and
    `n_target_tokens`; features from the cache padded to (B, T, D) with `feature_mask`, or the audio when there is no
    cache. Features the cache lacks are left to the training process (`pending_audio`: their paths), as only it has
    the encoder."""

    def __init__(self, tokenizer, cache: FeatureCache | None):
        self.tokenizer, self.cache = tokenizer, cache

    def __call__(self, examples) -> dict:
        from ..model.speech_llm import tokenize_batch

        loaded, skipped = None, []
        if self.cache is None and any(e.task.needs_speech for e in examples):
            # a clip that cannot be decoded (damaged since the manifest was checked), or longer than the encoder's
            # window (its row's duration was wrong: the encoder would stop the step, and naming no file), leaves its
            # example out of the batch, said and counted (`skipped`), instead of stopping a run that would stop there
            # again on resume; a batch left with no example is replaced by the training process (`_replacement`)
            loaded = {}
            for e in examples:
                if e.task.needs_speech and e.audio not in loaded:
                    try:
                        loaded[e.audio] = load_audio(e.audio, max_seconds=WINDOW_SECONDS)
                    except AudioError as err:
                        loaded[e.audio] = None
                        skipped.append((e.audio, str(err)))
            examples = [e for e in examples if not e.task.needs_speech or loaded[e.audio] is not None]
        batch = text_fields(examples)
        batch["prompt_ids"], batch["target_ids"] = tokenize_batch(self.tokenizer, batch["prompts"], batch["targets"])
        batch["n_target_tokens"] = sum(map(len, batch["target_ids"]))
        if skipped:
            batch["skipped"] = skipped
        if not any(e.task.needs_speech for e in examples):
            return batch
        audio = [e.audio for e in examples]
        if loaded is not None:
            batch["audio"] = [loaded[a] if e.task.needs_speech else None for a, e in zip(audio, examples)]
            return batch
        feats = self.cache.lookup(audio)
        if any(f is None for f in feats):
            batch["pending_audio"] = audio
        else:
            batch["features"], batch["feature_mask"] = pad_features(feats)
        return batch


def _only_rows(batch: dict, keep: list[int]) -> dict:
    """The batch with only its rows `keep` (its per-row lists cut, the target token count made anew)."""
    per_row = {*text_fields([]), "prompt_ids", "target_ids"}  # the collator's per-row lists
    out = {k: [v[i] for i in keep] if k in per_row else v for k, v in batch.items()}
    out["n_target_tokens"] = sum(map(len, out["target_ids"]))
    return out


class _Batches(torch.utils.data.Dataset):
    """(epoch, batch, indices) from _Stream -> the collated batch, tagged with its sampler position."""

    def __init__(self, dataset: SpeechTextDataset, collator: Collator):
        self.dataset, self.collator = dataset, collator

    def __getitem__(self, item):
        epoch, position, indices = item
        try:
            batch = self.collator([self.dataset.example(i, epoch) for i in indices])
        except LLMSRTError as err:
            if torch.utils.data.get_worker_info() is None:
                raise
            # handed to the training process to raise: the DataLoader would raise it with the worker's whole
            # traceback as its message
            return {"error": _portable(err)}
        batch["position"], batch["indices"] = (epoch, position), indices
        return batch


def _portable(err: LLMSRTError) -> LLMSRTError:
    """`err`, or an LLMSRTError of its message where it does not survive pickling (a worker's batches reach the
    training process pickled; an error class with arguments of its own would fail there)."""
    try:
        return pickle.loads(pickle.dumps(err))
    except Exception:
        return LLMSRTError(str(err))


class _Stream(torch.utils.data.Sampler):
    def __init__(self, sampler: BucketBatchSampler):
        self.sampler = sampler

    def __iter__(self):
        return self.sampler.stream()


def _as_is(batch):
    return batch


# how training's DataLoader starts its workers: forked, where `_keep_serving` can hold SIGTERM (a spawned or
# forkserver worker has a second thread when it starts, which took the signal, and another parent; Python 3.14 makes
# forkserver the default on Linux); elsewhere (macOS) the platform's own
SERVING_START = "fork" if hasattr(signal, "sigwaitinfo") else None


def _keep_serving(trainer: int, _worker_id: int) -> None:
    """A DataLoader worker's start (its worker_init_fn, with the training process's pid `trainer`): a SIGINT, and a
    SIGTERM from anyone but that process, are ignored. SLURM (preemption, a time limit) signals every process of the
    job step, torchrun's agent each rank's process group, Ctrl-C the terminal's: the training process ends the step,
    saves it (`signals.signals_noted`), and its workers end with it. torch's own SIGTERM handler in a worker ended it
    for a signal from anyone but its parent, and the training process then raised "DataLoader worker (pid N) is
    killed by signal: Terminated." in the step or in the checkpoint's write: no checkpoint, exit 1, and a message
    blaming the disk. A SIGTERM from the training process (the DataLoader's last resort, and multiprocessing's at
    exit, for a worker still there) ends it as torch's handler does: ignored, it left that process waiting for ever
    at exit. Only where the worker is this process's one thread (forked: SERVING_START) can the signal be held for
    the thread below; elsewhere torch's handler stays."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo") or threading.active_count() > 1:
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # held for the thread below (threads started later,
    #   from this one, hold it too)

    def take_sigterm() -> None:
        while True:
            if signal.sigwaitinfo({signal.SIGTERM}).si_pid == trainer:
                os._exit(0)  # (torch's handler: _exit(EXIT_SUCCESS))

    threading.Thread(target=take_sigterm, name="sigterm", daemon=True).start()


@contextlib.contextmanager
def sigterm_held_for_workers():
    """Around the fork of training's DataLoader workers (`iter` of the loader): SIGTERM held in the forking thread,
    so every thread of a worker holds it from its first instruction. Blocked only from `_keep_serving` on, a worker
    had threads started before it (torch's, as the worker began) that did not hold it: SLURM's SIGTERM to every
    process went to one of them, torch's handler killed the worker, and the training process raised "DataLoader
    worker (pid N) is killed by signal: Terminated." while saving the step: no checkpoint. A SIGTERM to the training
    process meanwhile waits the few milliseconds of the fork and is taken as it would have been."""
    if SERVING_START != "fork":
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)

