"""What the recipe trains on: manifests -> task mix -> bucketed, resumable batches with cached encoder features.

    data = TrainingData(cfg.data, model, d)      # rank 0 reads and validates the manifests and hashes the audio
    batch = data.next_batch()                    # from a DataLoader (workers, pinned memory, prefetch)
    state = data.state_dict()                    # the position of the last batch handed out, not of the prefetch

The DataLoader's workers build whole batches: examples, features from the cache padded in one go, and the token ids
of prompts and targets (`prompt_ids`, `target_ids`: tokenized once, there, not by the model).
"""

import functools
import itertools
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from .. import paths, ranks
from ..config import short
from ..audio import WINDOW_SECONDS, format_bytes
from ..data.clips import SPLIT_ORDER
from ..data.features import DTYPES, FeatureCache, content_hashes
from ..data.loader import (BucketBatchSampler, SpeechTextDataset, blank_transcripts, ids_digest, pad_features,
                           stratified, weighted_by_kind, with_transcripts)
from ..data.manifest import Row, line_of, read_manifest, text_limit
from ..errors import AudioError, ConfigError, LLMSRTError, shown, warn_each_time
from ..prompts import Task
from . import dev_sample
from .batches import (SERVING_START, Collator, _as_is, _Batches, _keep_serving, _only_rows, _Stream,
                      sigterm_held_for_workers)
from .data_section import DataSection
from .parallel import Dist, all_sum, host_group, host_wait
from .room import PREFETCH, check_cache_room, check_shared_memory, same_disk

GPU_WORKERS = 2  # default DataLoader workers per rank on CUDA (reading .npy features + tokenizing)
ENCODE_BATCH = 16  # utterances per encoder call when filling the feature cache (longest first)
NODE_SAMPLE = 64  # clips of the other nodes' shares looked for, to tell a shared feature cache from a node's own
SEARCH_EXAMPLES = 32  # at most this many examples (or SEARCH_BATCHES batches' worth, if more) are tried in place of
SEARCH_BATCHES = 4  #   a batch none of whose clips decodes (`_replacement`): past that the audio folder itself is gone
#   (an unmounted volume, a dropped network disk), which had every rank open each of a million clips, a warning each


@dataclass
class StageRows:
    """What rank 0 reads for a stage and every rank receives."""

    train: list[list[Row]]  # rows of each training manifest
    dev: list[Row]  # the chosen dev rows, stratified over directions
    hashes: dict[str, str]  # audio path -> content hash (empty without a feature cache)
    said: list[warnings.WarningMessage] = field(default_factory=list)  # the warnings the read gave, held until the
    #   stage's turn where a curriculum's checks read them (`stage_rows`)


def mixes_text(tasks) -> bool:
    """Whether a stage's task mix (data.tasks) holds text-only mt beside speech tasks (mt rehearsal: the LLM keeps
    translating text while it learns to hear; DDP then lets a rank's text batch leave the adapter unused)."""
    names = {Task(t) for t in tasks}
    return Task.MT in names and len(names) > 1


def has_speech(batch: dict) -> bool:
    """Whether a collated batch carries speech (features, audio, or audio whose features are pending)."""
    return any(batch.get(k) is not None for k in ("features", "audio", "pending_audio"))


class TrainingData:
    def __init__(self, cfg: DataSection, model, d: Dist, log=print, batches: int | None = None,
                 accumulation: int = 1, keep: tuple[Path, int] | None = None, rows: StageRows | None = None):
        """`batches`: the micro-batches each rank will train on (max_steps x accumulation), so that a feature cache
        filled before step 1 holds what the epochs they reach draw of a task mix's smaller tasks (None: every row
        any epoch may draw). `accumulation`: the micro-batches a rank takes per optimizer step (each epoch holds
        whole steps: `BucketBatchSampler`). `keep`: output_dir and the bytes one checkpoint takes there (rank 0),
        held back from the feature cache's room where the two share a disk: the fill took them, and the run was
        refused after hours of encoding (the recipe checks again after the fill), not before. `rows`: this stage's
        rows as `stage_rows` read them (the recipe reads them before its model loads); None: read here."""
        self.cfg, self.model, self.d, self.log, self._keep = cfg, model, d, log, keep
        self.bad_clips: dict[str, str] = {}  # audio -> why it was left out of its batches
        self.substituted = 0  # training batches whose every clip could not be decoded, replaced (`_replacement`)
        self.dev_unscored: set[tuple[str, ...]] = set()  # dev batches (their ids) whose every clip could not be
        #   decoded: left out of every evaluation, said once
        self.main_task = _checked_task(cfg)
        mixed = mixes_text(cfg.tasks)
        uses_cache = _uses_cache(cfg, self.main_task)
        rows = rows if rows is not None else stage_rows(cfg, d)
        # an imported reference model's own tags (<|cmn|>); read here: `evaluate` may be handed a DDP/FSDP wrapper
        self.tags = tags = dict(model.config.language_tags)
        train = weighted_by_kind(rows.train, cfg.train_weights, cfg.tasks, seed=cfg.seed)
        self.dataset = SpeechTextDataset(train, cfg.tasks, seed=cfg.seed, source=f"data.train {short(cfg.train)}",
                                         tags=tags)
        self._read = {"examples": len(self.dataset), "ids": ids_digest(train, cfg.tasks)}  # what a position counts
        # text-only mt beside speech tasks: each batch all text or all speech (the collator and the model take
        # either, not both in one batch)
        self.sampler = BucketBatchSampler(self.dataset.durations, cfg.batch_size, seed=cfg.seed,
                                          num_replicas=d.world, rank=d.rank,
                                          groups=self.dataset.needs_speech() if mixed else None,
                                          step_batches=accumulation)
        if len(self.sampler) == 0:
            need = d.world * accumulation
            what = (f"fewer than {need} batches of {cfg.batch_size}, one optimizer step ({d.world} ranks x "
                    f"{accumulation} micro-batches)" if need > 1 else f"no batch of {cfg.batch_size}")
            raise ConfigError(f"data.train: {short(cfg.train)} gives {what}; lower data.batch_size"
                              f"{' or optim.accumulation' if accumulation > 1 else ''}, or add data")
        self.sampler.start_at(cfg.start_step)  # (a resume's load_state_dict moves it to the checkpoint's position)
        self.dev = SpeechTextDataset(rows.dev, self.main_task, source=f"data.dev {short(cfg.dev)}",
                                     tags=tags) if rows.dev else None
        if cfg.dev and not rows.dev and (cfg.dev_size or cfg.dev_decode):  # (both 0 choose none)
            kind = "transcription-only" if self.main_task is Task.ASR else "translation"
            log(f"warning: data.dev {cfg.dev} has no {kind} rows for this stage's {self.main_task.value} task: no dev "
                "loss and no best checkpoint")
        elif cfg.dev and cfg.dev_size == 0:
            scores = "only data.dev_decode's scores" if cfg.dev_decode else "nor dev scores: data.dev_decode is 0 too"
            log(f"warning: data.dev_size is 0: no dev loss and no best checkpoint ({scores})")
        self._planned = batches  # micro-batches this rank will train on (None: unknown)
        self.cache = self._feature_cache(rows.hashes, log) if uses_cache else None
        self.collator = Collator(model.tokenizer, self.cache)
        self._position = (self.sampler.epoch, self.sampler.batch)
        self._batches = None  # the DataLoader's iterator, started on the first next_batch()

    def _epochs_reached(self, batches: int) -> int:
        """The epochs (counted from epoch 0) that `batches` micro-batches of this rank reach from the start position
        (data.start_step's: the sampler's before any batch; an epoch's batch count varies when text-only batches are
        cut apart from speech ones), counted no further than the epoch by which every drawn task of the mix has gone
        through its whole pool from there."""
        first = self.sampler.epoch
        epochs, total = first, -self.sampler.batch  # (the start's epoch from its batch on)
        while total < batches and epochs < first + self.dataset.epochs_to_cover():
            total += len(self.sampler.batches(epochs))
            epochs += 1
        return epochs

    @property
    def has_dev(self) -> bool:
        return self.dev is not None and len(self.dev) > 0

    # ---- features -------------------------------------------------------------------------------------------------
    def _feature_cache(self, hashes: dict[str, str], log) -> FeatureCache:
        root = paths.cache_dir() / "features" if self.cfg.feature_cache == "auto" else Path(self.cfg.feature_cache)
        cache = FeatureCache(root, self.model.encoder.identity, {"pad_to_30s": self.model.config.pad_to_30s},
                             hashes=hashes, log=log)
        self._check_shared_memory(cache)  # before the fill (hours), not at a worker's death mid-run
        if self.cfg.precompute_features:
            self._fill(cache, root, log)
        return cache

    def _check_shared_memory(self, cache: FeatureCache) -> None:
        """`check_shared_memory` for this stage's largest batch: data.batch_size x the frames of the longest clip any
        epoch reads as speech (with pad_to_30s, 30 s of frames), in the cache's dtype."""
        workers, frames, encoder = loader_workers(self.cfg.num_workers, self.model.device), 0, self.model.encoder
        if workers:
            speech = self.dataset.needs_speech()  # (a mix's drawn tasks have gone through their rows by then)
            longest = max(self.dataset.durations(e)[speech].max(initial=0.0)
                          for e in range(max(1, self.dataset.epochs_to_cover())))
            frames = encoder.output_frames(min(float(longest), WINDOW_SECONDS))
        check_shared_memory(workers, self.cfg.batch_size, frames, encoder.dim, np.dtype(DTYPES[cache.dtype]).itemsize,
                            self.d, self._say)

    def _fill(self, cache: FeatureCache, root: Path, log) -> None:
        """Encode what the cache lacks before step 1: longest first (an out-of-memory shows at once, and each
        encoder call gets clips of similar length), in batches, each rank a share."""
        epochs = None if self._planned is None else self._epochs_reached(self._planned)
        seconds = self.dataset.speech_clips(epochs, first=self.sampler.epoch)  # from the start position's epoch
        if self.dev is not None:
            seconds.update(self.dev.speech_clips())
        audio = sorted(seconds, key=lambda a: (-seconds[a], a))
        mine = audio[self.d.rank::self.d.world]
        has = said_has(cache, log)
        todo = [a for a in tqdm(mine, desc="feature cache check", unit="clip", disable=not self.d.main,
                                dynamic_ncols=True) if not has(a)]
        encoder = self.model.encoder
        need = sum(cache.stored_bytes(encoder.output_frames(seconds[a]), encoder.dim) for a in todo)
        total = check_cache_room(root, cache.free_bytes(), [need, len(todo), sum(seconds[a] for a in todo),
                                                            len(mine) - len(todo)], self.d,
                                 kept=self._keep[1] if self._keep and same_disk(root, self._keep[0]) else 0)
        if total["utterances"]:
            log(f"encoding {total['utterances']:,} utterances ({total['seconds'] / 3600:,.1f} h of audio) into the "
                f"feature cache {root} ({total['cached']:,} cached): about {format_bytes(total['bytes'])} of the "
                f"{format_bytes(total['free'])} free there")
        self._encode_into(cache, todo)
        if self.d.world == 1 and cache.unstored:
            log(f"the feature cache {root} could not store every utterance's features (see the warning above): "
                "those are encoded in the steps that need them, not again now")
        if self.d.world > 1:
            host_wait(self.d)  # the fill takes hours, and a fresh node's ranks longer
            said = [None] * self.d.world  # every rank's clips that cannot be decoded: never in any cache, so not
            dist.all_gather_object(said, sorted(self.bad_clips), group=host_group(self.d))  # "missing" below
            bad = set().union(*said)
            if all_sum(torch.tensor([cache.unstored]), self.d).item():  # a disk that refused them (full, a quota
                log(f"the feature cache {root} could not store every utterance's features (see the warning above): "
                    "those are encoded in the steps that need them, not again now")  # statvfs does not see)
                return
            # a cache on each node's own disk holds only its ranks' shares: what is still missing here is encoded
            # by this node's ranks, a share each (on a disk every rank shares, nothing is missing). Looked for only
            # where a sample of the other nodes' shares is not all here: on one node, or a shared disk, no rank
            # stats millions of files (a file the sample missed is encoded in the step that needs it)
            local = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
            node = self.d.rank // local  # torchrun numbers a node's ranks consecutively
            others = [a for r in range(self.d.world) if r // local != node for a in audio[r::self.d.world]
                      if a not in bad]
            shared = all(has(a) for a in others[::max(1, len(others) // NODE_SAMPLE)])
            missing = [] if shared else [a for a in tqdm(audio, desc="feature cache check, every rank's clips",
                                                         unit="clip", disable=not self.d.main, dynamic_ncols=True)
                                         if a not in bad and not has(a)]  # (older entries read whole: said, counted)
            if all_sum(torch.tensor([len(missing)]), self.d).item():
                log(f"the feature cache {root} lacks {len(missing):,} utterances other ranks encoded (a disk of this "
                    "node's own): this node's ranks encode them too")
                self._encode_into(cache, missing[self.d.local_rank % local::local])
                host_wait(self.d)

    def _encode_into(self, cache: FeatureCache, todo: list[str]) -> None:
        """`todo`'s features into the cache, ENCODE_BATCH clips at a time, until its disk refuses one (a quota, a
        read-only folder, a run beside it that took the room: its room check saw free space): the rest would be
        encoded only to be thrown away (hours of a GPU at the paper's ASR stage), so they are left to the steps that
        need them."""
        refused = cache.unstored
        for start in tqdm(range(0, len(todo), ENCODE_BATCH), desc="encoder features", disable=not todo or
                          not self.d.main, dynamic_ncols=True):
            self._note_bad(self._features(cache, todo[start:start + ENCODE_BATCH])[1])
            if cache.unstored > refused:
                break

    def _features(self, cache: FeatureCache, audio: list[str]) -> tuple[list[np.ndarray | None], list[tuple]]:
        """The clips' features from the cache, computed where it lacks them; a clip that cannot be read or decoded
        (damaged, or never checked: the manifest check reads no audio) gets None, and (audio, why) goes into the
        second list. One bad clip among hours of a cache fill, or in a batch of a lazy cache, stopped the run."""
        try:
            return cache.get_or_compute(audio, self._encode), []
        except AudioError:
            pass
        feats, bad = [], []
        for a in audio:  # one at a time: the others are still encoded
            try:
                feats += cache.get_or_compute([a], self._encode)
            except AudioError as err:
                feats.append(None)  # the encoder's own errors ("audio #0: 31.0 s is longer ...") name no file
                bad.append((a, str(err) if str(err).startswith(shown(a)) else f"{shown(a)}: {err}"))
        return feats, bad

    @torch.inference_mode()
    def _encode(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Audio -> per-clip (T_i, D) features, on the model's device; on CUDA under autocast in the model's dtype."""
        device, dtype = self.model.device, self.model.llm_dtype
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda" and dtype != torch.float32):
            h, mask = self.model.encoder.encode(audios)
        h, mask = h.float().cpu().numpy(), mask.cpu().numpy()
        return [h[i][mask[i]] for i in range(len(audios))]

    def batch_of(self, examples) -> dict:
        """A model batch of these examples, built here (dev batches; missing features computed now)."""
        return self._finish(self.collator(examples))

    def _finish(self, batch: dict, note: Callable[[list], Any] | None = None) -> dict:
        """In the training process: features the cache lacked (precompute_features off) computed and padded; the
        feature tensors moved to the model's device (from pinned memory, without blocking). The (audio, why) pairs
        of clips that cannot be decoded go to `note` (default: said, `_note_bad`)."""
        note = self._note_bad if note is None else note
        note(batch.pop("skipped", []))
        pending = batch.pop("pending_audio", None)
        if pending is not None:
            feats, bad = self._features(self.cache, pending)
            if bad:  # their examples leave the batch, as the collator leaves out what it cannot decode
                note(bad)
                batch = _only_rows(batch, [i for i, f in enumerate(feats) if f is not None])
                feats = [f for f in feats if f is not None]
            if not feats:  # no example is left: the caller replaces the batch (`_replacement`)
                return batch
            batch["features"], batch["feature_mask"] = pad_features(feats)
        device = self.model.device
        for key in ("features", "feature_mask"):
            if key in batch:
                batch[key] = batch[key].to(device, non_blocking=True)
        return batch

    # ---- training batches -------------------------------------------------------------------------------------------
    def _loader(self) -> torch.utils.data.DataLoader:
        workers = loader_workers(self.cfg.num_workers, self.model.device)
        if workers:  # the tokenizer's own threads must not meet fork()
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return torch.utils.data.DataLoader(
            _Batches(self.dataset, self.collator), sampler=_Stream(self.sampler), batch_size=None,
            collate_fn=_as_is, num_workers=workers, prefetch_factor=PREFETCH if workers else None,
            worker_init_fn=functools.partial(_keep_serving, os.getpid()), pin_memory=self.model.device.type == "cuda",
            multiprocessing_context=SERVING_START if workers else None,
            generator=torch.Generator().manual_seed(self.cfg.seed))  # its own: the global RNG (dropout) untouched

    def next_batch(self) -> dict:
        if self._batches is None:
            with sigterm_held_for_workers():  # every thread of a worker holds SIGTERM for `_keep_serving`'s
                self._batches = iter(self._loader())
        batch = next(self._batches)
        if "error" in batch:  # from a worker (`_Batches`)
            raise batch["error"]
        self._position = batch.pop("position")
        indices = batch.pop("indices")
        batch = self._finish(batch)
        if batch["ids"]:
            return batch
        epoch = self._position[0]
        batch, failed = self._replacement(lambda i: self.dataset.example(i, epoch), len(self.dataset), indices,
                                          f"data.train {short(self.cfg.train)}")
        self.substituted += 1
        either = f"{failed} clip(s) after it could not be decoded either; " if failed else ""
        self._say(f"warning: every clip of a batch of data.train {short(self.cfg.train)} cannot be decoded: "
                  f"{len(batch['ids'])} example(s) after it take its place ({either}{self.substituted} such batch(es) "
                  "so far on this rank)")
        return batch

    def _replacement(self, example_at: Callable[[int], Any], n: int, indices: list[int], what: str) -> tuple[dict, int]:
        """The batch in place of the batch of `indices` (of the n examples `example_at` gives) whose every clip cannot
        be decoded (data.batch_size 1, or a clip with a batch's worth of rows): as many examples with speech after
        its last (on from the first after the last), not of its clips, and on until one decodes; and the clips met
        on the way that cannot be decoded, counted, not said one by one (their own batches say them). It depends on
        the data and the batch alone (not on the clips this run has met: a resume draws the same), and every rank
        keeps its count of batches (a rank that stopped there stopped them all, and every resume stopped there
        again). Raises LLMSRTError after SEARCH_EXAMPLES examples (or SEARCH_BATCHES batches' worth) that do not
        decode: an unreachable audio folder made each rank open every clip of the data set before it stopped."""
        skip = {example_at(i).audio for i in indices}  # read lazily below: a clip that failed is not tried again
        todo = (e for e in map(example_at, ((indices[-1] + k) % n for k in range(1, n)))
                if e.task.needs_speech and e.audio not in skip)
        limit, tried, failed = max(SEARCH_EXAMPLES, SEARCH_BATCHES * len(indices)), 0, []
        while tried < limit and (part := list(itertools.islice(todo, len(indices)))):
            tried += len(part)
            bad: list[tuple[str, str]] = []
            batch = self._finish(self.collator(part), note=bad.extend)
            failed += bad
            if batch["ids"]:
                return batch, len(failed)
            skip.update(a for a, _ in bad)
        why = failed[0][1] if failed else next((self.bad_clips[a] for a in sorted(skip) if a in self.bad_clips),
                                               "see the warnings above")
        raise LLMSRTError(f"{what}: no clip of a batch, nor of the {tried} example(s) with speech after it, can be "
                          f"decoded (e.g. {why}); check that the audio folder is reachable (a volume unmounted, a "
                          "network disk dropped), or remove the damaged clips' rows from the manifest")

    def _say(self, line: str) -> None:
        """A line in the run's log; on a rank other than 0 (whose log is quiet) on stderr, tagged with the rank."""
        if self.d.main:
            self.log(line)
        else:
            print(f"[rank {self.d.rank}] {line}", file=sys.stderr, flush=True)

    def _note_bad(self, bad) -> None:
        """Say once per clip, of (audio, why) pairs, which examples were left out for audio that cannot be read
        or decoded (a worker's own print would not reach the run's log); they are counted in `bad_clips`."""
        for audio, error in bad:
            if audio not in self.bad_clips:
                self.bad_clips[audio] = error
                self._say(f"warning: {error}; left out of its batches ({len(self.bad_clips)} such clip(s) so far on "
                          "this rank): remove its rows from the manifest (allow_changes=true to resume)")

    def state_dict(self) -> dict:
        """The position after the last batch next_batch() returned (the DataLoader may have read further), and the
        number and ids' digest of the examples it counts."""
        return {**self.sampler.state_dict(self._position), **self._read}

    def load_state_dict(self, state: dict, allow_changes: bool = False) -> int:
        """Resume at the saved position; returns the batches skipped to reach a whole step of this run's ranks x
        micro-batches (`BucketBatchSampler.load_state_dict`). A position saved over other rows than this run reads
        (a manifest edited since, resumed with allow_changes; with data.skip_bad, clips gone since, which the
        manifests' hashes the resume compares do not show) is taken as it is with `allow_changes`, said in the log
        (an edited manifest resumed there without a word), and refused without it under data.skip_bad."""
        if "ids" in state and {k: state[k] for k in self._read} != self._read:
            saved, n = state["examples"], self._read["examples"]
            said = (f"data.train {short(self.cfg.train)}: the checkpoint's data position counts {saved:,} examples, "
                    f"this run reads {n:,}{' other ones' if saved == n else ''}, and the rest of the epoch would train "
                    "some twice and never reach others")
            if self.cfg.skip_bad and not allow_changes:  # (the resume refused other manifests or task mixes
                #   before: data.skip_bad's doing)
                raise LLMSRTError(f"{said}: data.skip_bad dropped other rows than before (clips missing or changed "
                                  "since: see the warnings above); restore those clips, or add allow_changes=true to "
                                  "go on so")
            self.log(f"warning: {said}{' (allow_changes)' if allow_changes else ''}")
        skipped = self.sampler.load_state_dict(state)
        self._position = (self.sampler.epoch, self.sampler.batch)
        self._batches = None  # prefetched batches of the old position are dropped with their workers
        return skipped

    # ---- dev ---------------------------------------------------------------------------------------------------------
    def _dev_batch(self, examples: list, start: int, replace: bool) -> tuple[dict | None, bool]:
        """The dev batch of `examples` from `start`, and whether it is theirs. Where every clip of it cannot be
        decoded: None (not run, not scored), or with `replace` (a sharded model, whose forward needs every rank) the
        next examples' (`_replacement`), run but not scored. Said once, not at every evaluation, and not counted in
        `substituted` (training's count)."""
        part = examples[start:start + self.cfg.batch_size]
        batch = self.batch_of(part)
        if batch["ids"]:
            return batch, True
        if (ids := tuple(e.id for e in part)) not in self.dev_unscored:
            self.dev_unscored.add(ids)
            self._say(f"warning: every clip of a batch of data.dev {self.cfg.dev} ({len(ids)} example(s) from id "
                      f"{ids[0]}) cannot be decoded: left out of every evaluation ({len(self.dev_unscored)} such dev "
                      "batch(es) on this rank)")
        if not replace:
            return None, False
        indices = list(range(start, start + len(part)))
        return self._replacement(examples.__getitem__, len(examples), indices, f"data.dev {self.cfg.dev}")[0], False

    @torch.no_grad()
    def evaluate(self, model, autocast, sharded: bool = False) -> dict[str, float | None]:
        """Dev loss and, with dev_decode, a BLEU / WER sample (scored on rank 0; None when no token was scored):
        both with their batches split across ranks, the decoded texts gathered to rank 0. With a sharded (FSDP) model
        every forward needs every rank, so all ranks run the same number of batches (a rank short of rows repeats one
        and does not count it) and decode in step (`synced_ranks`). Before 2026-12-04 every rank decoded the whole
        sample under FSDP (on 16 GPUs, 16 times the decoding, every decode step gathering every layer), and rank 0
        alone decoded it under DDP."""
        model.eval()
        d, bs = self.d, self.cfg.batch_size
        dev = [self.dev[i] for i in range(min(len(self.dev), self.cfg.dev_size))]
        starts = list(range(0, len(dev), bs))
        mine = starts[d.rank::d.world]
        rounds = math.ceil(len(starts) / d.world) if sharded else len(mine)
        replace = sharded and d.world > 1  # an undecodable batch: another run in its place, or none
        loss_sum, tokens = torch.zeros(()), torch.zeros(())
        for k in range(rounds):
            start = mine[k] if k < len(mine) else starts[0]
            batch, own = self._dev_batch(dev, start, replace)
            if batch is None:
                continue
            with autocast:
                out = model(batch)
            if k < len(mine) and own:
                loss_sum += out["loss"].float().cpu() * out["n_tokens"].cpu()
                tokens += out["n_tokens"].cpu()
        for t in (loss_sum, tokens):
            all_sum(t, d)
        result: dict[str, float | None] = {"dev_loss": (loss_sum / tokens).item() if tokens > 0 else None}
        if self.cfg.dev_decode:
            examples = [self.dev[i] for i in range(min(len(self.dev), self.cfg.dev_decode))]
            rows = {e.id: e for e in examples}
            starts = list(range(0, len(examples), bs))
            mine = starts[d.rank::d.world]
            done: dict[int, dict[str, str]] = {}  # this rank's batches: start -> their texts by example id
            for k in range(math.ceil(len(starts) / d.world) if sharded else len(mine)):
                start = mine[k] if k < len(mine) else starts[0]
                batch, own = self._dev_batch(examples, start, replace)  # a clip that cannot be decoded is left out
                hyps = [] if batch is None else dev_sample.decode_as_evaluate(model, batch, rows,
                                                                              synced_ranks=replace)  # one FSDP
                #   process: the fast greedy loop (it drops ended rows); HF's synced_gpus path steps every row to the
                #   end
                if k < len(mine):
                    done[start] = dict(zip(batch["ids"], hyps)) if own else {}
            if d.world > 1:
                parts = [None] * d.world if d.main else None
                dist.gather_object(done, parts, dst=0, group=host_group(d))
                done = {start: hyps for part in parts for start, hyps in part.items()} if d.main else {}
            if d.main:
                texts = {i: h for start in starts for i, h in done[start].items()}
                scored = [e for e in examples if e.id in texts]  # a clip that could not be decoded: left out
                result.update(dev_sample.dev_scores(self.main_task, scored, [texts[e.id] for e in scored], self.tags))
        return result


HELD_OUT = tuple(s for s in SPLIT_ORDER if s != "train")  # the splits `prepare` writes apart from train

# ---- reading a stage's rows once ----------------------------------------------------------------------------------
def read_stage_rows(cfg: DataSection, main_task: Task, hashes: bool = True) -> StageRows:
    """Read and validate the training manifests and the dev manifest (every audio file checked), choose the dev
    rows, and (with `hashes`) hash every audio file once. Run on rank 0 only (see from_rank0). A text-only stage
    (mt alone) never reads its training rows' audio: their files are not checked, and their texts are bounded as
    the longest clip's would be (their durations may say nothing)."""
    longest = WINDOW_SECONDS  # a longer clip would stop the stage at the encoder, on one rank

    def read(manifest: str, speech: bool) -> list[Row]:
        return read_manifest(manifest, check_audio=speech, skip_bad=cfg.skip_bad,
                             max_duration=longest if speech else None, max_text=None if speech else text_limit(longest))

    train = [read(m, any(Task(t).needs_speech for t in cfg.tasks)) for m in cfg.manifests]
    train = [_transcribed(rows, cfg.tasks, "data.train", m, cfg.skip_bad) for m, rows in zip(cfg.manifests, train)]
    for manifest, rows in zip(cfg.manifests, train):
        if held := [r for r in rows if r.split in HELD_OUT]:
            warn_each_time(f"data.train {manifest}: {len(held)} of its rows are marked split "
                           f"{'/'.join(sorted({r.split for r in held}))} (e.g. id {held[0].id}): held-out rows are "
                           "trained on; give the train split's manifest", stacklevel=2)
    dev: list[Row] = []
    if cfg.dev:
        rows = [r for r in read(cfg.dev, main_task.needs_speech) if r.is_asr == (main_task is Task.ASR)]
        rows = _transcribed(rows, main_task, "data.dev", cfg.dev, cfg.skip_bad)
        dev = stratified(rows, max(cfg.dev_size, cfg.dev_decode), seed=cfg.seed)
    return _hashed(StageRows(train, dev, {}), hashes)


def _hashed(rows: StageRows, hashes: bool) -> StageRows:
    """`rows` with every audio file's content hash (`hashes`: for a feature cache), or none."""
    audio = [r.audio for part in rows.train for r in part] + [r.audio for r in rows.dev]
    return StageRows(rows.train, rows.dev, content_hashes(audio) if hashes else {})


def _transcribed(rows: list[Row], task: Task | Mapping[str, float], key: str, manifest: str,
                 skip_bad: bool) -> list[Row]:
    """`rows` of `manifest` (given as `key`: data.train or data.dev) where a translation row without the transcript
    `task` (a mix) reads is a bad row: with `skip_bad` left out, one warning giving the count (`with_transcripts`);
    else refused in one line naming the manifest's line, before every audio file is hashed (it was
    `SpeechTextDataset`'s error once they were, for data.dev naming no file: "the manifest's")."""
    where = f"{key} {manifest}"
    if skip_bad:
        return with_transcripts(rows, task, where)
    reader, blank = blank_transcripts(rows, task)
    if blank:
        line = line_of(manifest, blank[0].id)
        raise LLMSRTError(f"{shown(where)}{f':{line}' if line else ''}: task {reader.value} reads each translation "
                          f"row's transcript, but {len(blank)} of this manifest's have none (first: id {blank[0].id})"
                          "; fill them in, skip them (data.skip_bad=true), or train s2tt (speech -> translation "
                          "alone)")
    return rows


def _checked_task(cfg: DataSection) -> Task:
    """The stage's main task, once data.train names a manifest and a text-only mt share is the smaller one."""
    if not any(cfg.manifests):
        raise ConfigError("data.train: give the training manifest (e.g. data/mini/train.jsonl)")
    main_task = Task(cfg.main_task)
    if mixes_text(cfg.tasks) and main_task is Task.MT:
        raise ConfigError("data.tasks: text-only mt joins a speech stage as a smaller share than its largest "
                          "speech task; lower mt's weight")
    return main_task


def _uses_cache(cfg: DataSection, main_task: Task) -> bool:
    return cfg.feature_cache is not None and main_task is not Task.MT


def stage_rows(cfg: DataSection, d: Dist, read: StageRows | None = None) -> StageRows:
    """The stage's rows for `TrainingData`: read, checked row by row and hashed (with a feature cache) by rank 0
    (`read_stage_rows`), received by every rank, or rank 0's error raised on every rank (`from_rank0`). `read`: rank
    0's rows as a curriculum's checks read them before its first stage trained (unhashed, their warnings held): not
    read again (a large manifest took minutes), hashed here and their warnings given now, as reading them would."""
    main_task = _checked_task(cfg)
    hashes = _uses_cache(cfg, main_task)

    def on_rank0() -> StageRows:
        if read is None:
            return read_stage_rows(cfg, main_task, hashes=hashes)
        for w in read.said:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=None)
        return _hashed(read, hashes)
    return from_rank0(d, on_rank0)


def from_rank0(d: Dist, fn: Callable[[], Any]) -> Any:
    """`ranks.from_rank0` over this run's ranks, in the group that waits HOST_WAIT (rank 0 may read for hours)."""
    return ranks.from_rank0(fn, d.rank, d.world, host_group(d))


def said_has(cache: FeatureCache, log: Callable[[str], None]) -> Callable[[str], bool]:
    """`cache.has`, which says in one line, at the first entry it meets that an older version of the toolkit stored
    (has() reads such an entry whole, once, to check its numbers and move it to the current format), that the check
    reads them: on a cache of hundreds of GB filled before, hours that looked like a stall. Said only then (every
    run that found a cache folder said it, older entries or none: a line that told nothing)."""
    said = False

    def has(clip: str) -> bool:
        nonlocal said
        before = cache.adopted
        found = cache.has(clip)
        if not said and cache.adopted > before:  # (an older entry that is not sound, deleted, is said at the next
            said = True  # sound one)
            log(f"the feature cache {cache.root} holds entries an older version of the toolkit stored: each one "
                "the check meets is read whole once, to check its numbers and move it to the current format")
        return found
    return has


def loader_workers(configured: int | None, device: torch.device) -> int:
    """data.num_workers, or its default: 2 worker processes on CUDA, none on the CPU."""
    if configured is not None:
        return configured
    return GPU_WORKERS if device.type == "cuda" else 0
