"""What the recipe trains on: manifest -> task mix -> bucketed, resumable batches with cached encoder features."""

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import paths
from ..data.features import FeatureCache
from ..data.loader import BucketBatchSampler, SpeechTextDataset, collate
from ..data.manifest import read_manifest
from ..errors import ConfigError
from ..prompts import Task, parse_srt
from .parallel import all_sum

ENCODE_BATCH = 8  # utterances per encoder call when filling the feature cache


@dataclass
class DataSection:
    train: str = ""  # training manifest (JSONL, llm-srt prepare)
    dev: str | None = None  # dev manifest for dev loss / dev scores
    tasks: dict[str, float] = field(default_factory=lambda: {"srt": 1.0})  # task -> share of examples
    batch_size: int = 8  # examples per device per micro-batch
    feature_cache: str | None = "auto"  # encoder-feature cache folder; "auto" = <cache>/features; null = off
    precompute_features: bool = True  # encode every utterance before step 1 (false: on first use, for short runs)
    dev_examples: int = 64  # dev examples used for dev loss (the first N, fixed)
    dev_decode: int = 0  # dev examples decoded for a dev BLEU / WER sample at each eval (0 = off)
    skip_bad: bool = False  # skip bad manifest rows (with a count) instead of stopping
    seed: int = 0  # data order seed


class TrainingData:
    def __init__(self, cfg, model, d, log=print):
        self.cfg, self.model, self.d = cfg, model, d
        if not cfg.train:
            raise ConfigError("data.train: give the training manifest (e.g. data/mini/train.jsonl)")
        tasks = {Task(t) for t in cfg.tasks}
        if Task.MT in tasks and len(tasks) > 1:
            raise ConfigError("data.tasks: text-only mt cannot be mixed with speech tasks in one stage")
        self.main_task = Task(max(cfg.tasks, key=cfg.tasks.get))
        self.dataset = SpeechTextDataset(read_manifest(cfg.train, skip_bad=cfg.skip_bad), cfg.tasks, seed=cfg.seed)
        self.sampler = BucketBatchSampler(self.dataset.durations(), cfg.batch_size, seed=cfg.seed,
                                          num_replicas=d.world, rank=d.rank)
        if len(self.sampler) == 0:
            raise ConfigError(f"data.train: {cfg.train} gives no batch of {cfg.batch_size} per rank; lower "
                              "data.batch_size or add data")
        self._iter = iter(self.sampler)
        self.dev = None
        if cfg.dev:
            rows = read_manifest(cfg.dev, skip_bad=cfg.skip_bad)
            dev_rows = [r for r in rows if r.is_asr == (self.main_task is Task.ASR)]
            self.dev = SpeechTextDataset(dev_rows[:max(cfg.dev_examples, cfg.dev_decode)], self.main_task)
        self.cache = self._feature_cache(log)

    @property
    def has_dev(self) -> bool:
        return self.dev is not None and len(self.dev) > 0

    # ---- features -------------------------------------------------------------------------------------------------
    def _feature_cache(self, log) -> FeatureCache | None:
        if self.cfg.feature_cache is None or self.main_task is Task.MT:
            return None
        root = paths.cache_dir() / "features" if self.cfg.feature_cache == "auto" else Path(self.cfg.feature_cache)
        encoder = self.model.encoder
        cache = FeatureCache(root, encoder.identity, {"pad_to_30s": self.model.config.pad_to_30s})
        audio = sorted({e.audio for e in _examples(self.dataset)} | ({e.audio for e in _examples(self.dev)}
                                                                       if self.dev else set()))
        mine = audio[self.d.rank::self.d.world] if self.cfg.precompute_features else []
        todo = [a for a in mine if not cache.path_of(cache.key(a)).is_file()]
        if todo:
            log(f"encoding {len(todo)} utterances into the feature cache {root} ({len(mine) - len(todo)} cached)")
        for start in tqdm(range(0, len(todo), ENCODE_BATCH), desc="encoder features", disable=not todo or
                          not self.d.main, dynamic_ncols=True):
            cache.get_or_compute(todo[start:start + ENCODE_BATCH], self._encode)
        if self.d.world > 1:
            torch.distributed.barrier()
        return cache

    @torch.inference_mode()
    def _encode(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        h, mask = self.model.encoder.encode(audios)
        return [h[i, mask[i]].float().cpu().numpy() for i in range(len(audios))]

    def batch_of(self, examples) -> dict:
        speech = [e for e in examples if e.task.needs_speech]
        if self.cache is not None and speech:
            feats = self.cache.get_or_compute([e.audio for e in examples], self._encode)
            batch = collate(examples, feats)
        else:
            batch = collate(examples)
            if not speech:
                batch.pop("audio")
        tok = self.model.tokenizer
        batch["n_target_tokens"] = sum(len(tok(t, add_special_tokens=False)["input_ids"]) + 1
                                       for t in batch["targets"])
        return batch

    # ---- training batches -------------------------------------------------------------------------------------------
    def next_batch(self) -> dict:
        try:
            indices = next(self._iter)
        except StopIteration:
            self._iter = iter(self.sampler)
            indices = next(self._iter)
        return self.batch_of([self.dataset[i] for i in indices])

    def state_dict(self) -> dict:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state)
        self._iter = iter(self.sampler)

    # ---- dev ----------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, autocast, sharded: bool = False) -> dict[str, float]:
        """Dev loss (rows split across ranks) and, with dev_decode, a BLEU / WER sample decoded by rank 0. With a
        sharded (FSDP) model every forward needs every rank, so all ranks run the same number of dev batches (a rank
        short of rows repeats one and does not count it) and all decode the sample together."""
        model.eval()
        d, bs = self.d, self.cfg.batch_size
        n = min(len(self.dev), self.cfg.dev_examples)
        starts = list(range(0, n, bs))
        mine = starts[d.rank::d.world]
        rounds = math.ceil(len(starts) / d.world) if sharded else len(mine)
        loss_sum, tokens = torch.zeros(()), torch.zeros(())
        for k in range(rounds):
            start = mine[k] if k < len(mine) else starts[0]
            batch = self.batch_of([self.dev[i] for i in range(start, min(n, start + bs))])
            with autocast:
                out = model(batch)
            if k < len(mine):
                loss_sum += out["loss"].float().cpu() * out["n_tokens"].cpu()
                tokens += out["n_tokens"].cpu()
        for t in (loss_sum, tokens):
            all_sum(t, d)
        result = {"dev_loss": (loss_sum / tokens.clamp(min=1)).item()}
        if self.cfg.dev_decode and (d.main or sharded):
            examples = [self.dev[i] for i in range(min(len(self.dev), self.cfg.dev_decode))]
            hyps = []
            for start in range(0, len(examples), bs):
                chunk = examples[start:start + bs]
                hyps += model.generate(self.batch_of(chunk), synced_ranks=sharded)
            if d.main:
                result.update(_dev_scores(self.main_task, examples, hyps))
        return result


def _examples(dataset):
    return (dataset[i] for i in range(len(dataset)))


def _dev_scores(task: Task, examples, hyps: list[str]) -> dict[str, float]:
    """A small dev sample of the paper's metrics, scored as `llm-srt evaluate` scores: BLEU of the translation
    (mean over directions), WER/CER of the transcript (mean over source languages)."""
    from ..evaluate.report import UtteranceResult, score_system

    results = []
    for i, (e, h) in enumerate(zip(examples, hyps)):
        if task is Task.SRT:
            parsed = parse_srt(h)
            transcript, translation = parsed.transcript, parsed.translation
        elif task is Task.ASR:
            transcript, translation = h, ""
        else:
            transcript, translation = None, h
        results.append(UtteranceResult(
            id=str(i), src=e.src, tgt=e.tgt or e.src, hyp_transcript=transcript, hyp_translation=translation,
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
