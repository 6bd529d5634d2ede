"""The one training recipe. A curriculum stage (ASR, SMT, SRT, the baseline's S2TT) is a config, not code.

    llm-srt train configs/embedded/asr.yaml [key=value ...]
    torchrun --nproc_per_node 4 -m llm_srt.cli train configs/paper/qwen2.5-3b/asr.yaml   # DDP
    torchrun --nproc_per_node 4 -m llm_srt.cli train configs/paper/qwen2.5-32b/asr.yaml  # distributed: fsdp

`Recipe.run` reads top-down: set-up (processes, device; the manifests' rows checked) -> model -> data -> optimizer /
resume -> train (train step, evaluate, save checkpoint) -> save final/. The order is required; each step's docstring
says what it needs first. Only rank 0 writes.
"""

import contextlib
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import config as config_lib
from .. import device as device_lib
from .. import paths, ranks
from ..errors import ConfigError, LLMSRTError
from ..model.cpu_linear import kernel_rule
from . import checkpoint
from .config import TrainConfig, _check_adapter_matches, load_config
from .data import StageRows, from_rank0, has_speech, stage_rows
from .final import FINAL, _save_final, best_dev_loss, dev_set, final_weights_of, finished_state, quiet
from .logs import _drop_log_after, _log_json, _tensorboard
from .parallel import (Parallel, all_max, all_sum, barrier, host_group, init_distributed, llm_device, on_main,
                       release_groups)
from .preflight import check_before_start, check_start_finished, lora_note, skips_trained, use_bf16
from .resume_settings import check_settings
from .rng import _gather_rng, _restore_rng, seed_own_stream
from .schedule import _apply_optim_settings, _follow_schedule, lr_lambda, schedule_note
from .run_lock import RunLock
from .shared import failing_rank, shared_checkpoint, shared_output
from .signals import Noted, signals_noted
from .stops import RunStops


def train(cfg: TrainConfig, log=print, source: str | None = None, rows: StageRows | None = None) -> Path:
    """Run (or resume) one training stage; returns the final model folder. CPU products take their fixed kernels
    (`kernel_rule`), none chosen by timing: a resumed run and its dev metrics repeat the killed one's exactly.
    torch's CPU threads (config key threads) are this stage's alone: put back as they were when it ends. `source`:
    the stage's YAML, named by the start-up checks' precision error. `rows`: rank 0's rows of the stage's manifests
    as a curriculum's checks read them (`read_rows` takes them instead of reading the manifests again)."""
    threads = torch.get_num_threads()  # (a curriculum's next stage with threads: 0 ran on this one's count)
    with kernel_rule():
        try:
            return Recipe(cfg, log, source, rows).run()
        finally:  # the model, its optimizer and (FSDP) the reference cycles around them are gone before the next
            device_lib.release()  # stage of a curriculum loads its own on the same GPU
            torch.set_num_threads(threads)


# ---- the recipe ---------------------------------------------------------------------------------------------------
class Recipe(RunStops):
    """One stage's run. `run` is the table of contents; each step below is one method, in the order it runs."""

    def __init__(self, cfg: TrainConfig, log=print, source: str | None = None, rows: StageRows | None = None):
        self.cfg, self.log, self.source = cfg, log, source  # source: the stage's YAML, where known
        self.out = Path(cfg.output_dir)
        self.step = 0
        self.latest: checkpoint.CheckpointInfo | None = None  # the checkpoint this run resumes from
        self.saved_once = False  # whether this run has written a checkpoint yet
        self.last_good: Path | None = None  # the newest checkpoint on disk (named on NaN, out of memory, a signal)
        self.lr = 0.0  # the learning rate the last step trained with
        self.ctc_loss: float | None = None  # the last step's CTC loss (token-weighted over ranks), with cfg.ctc on
        self.grad_norm = 0.0  # the last step's global gradient norm, before clipping
        self.ctc_short_said = False  # whether rows too short for their transcripts' CTC were reported
        self.best_dev: float | None = None  # the lowest dev loss a checkpoint holds (an evaluation that beats it saves)
        self.eval_due = False  # the checkpoint resumed from skipped its due dev evaluation (a signal): it runs first
        self.eval_pending = False  # this step's dev evaluation is due and has not run yet, and
        self.step_dev_loss: float | None = None  # the dev loss it measured: what a stop at a failed log line saves
        #   with the step (`_stop_after_log_failure`: marked eval_due, or with its dev loss)
        self.bar, self.writer = None, None  # progress bar, TensorBoard (rank 0)
        self.parallel: Parallel | None = None
        self.lock: RunLock | None = None  # this run's hold on output_dir (rank 0)
        self.room: checkpoint.CheckpointSize | None = None  # what one checkpoint takes (rank 0)
        self.settings: dict | None = None  # what a resume must match (train/resume.py), stored in checkpoints (rank
        #   0's: None on the other ranks, which know where the run starts once `agreed`)
        self.agreed = False  # whether `find_resume` has agreed, on every rank, where the run starts
        self.start: tuple[str | None, str | None] = (None, None)  # final/'s INIT_RECORD: the folder the trained
        #   weights grew from and its weights' identity (rank 0's; `_check_settings`)
        self.rows = None  # the manifests' rows (`read_rows`), until `setup_data` hands them to TrainingData
        self.read = rows  # rank 0's rows as a curriculum's checks read them, until `read_rows` takes them
        self.sink_error: Exception | None = None  # a failed write to the progress bar or TensorBoard, reported at
        #   the next log line

    def run(self) -> Path:
        try:
            self.join_processes()  # 0. the process group (under torchrun) and this rank's device
            if self.finished_on_rank0():  # 0b. finished already? (rank 0 decides for every rank)
                return self.out / FINAL
            self.setup_processes()  # 1. the frozen weights' dtype, seeds; the output folder locked
            self.find_resume()  # 1b. the newest intact checkpoint, its settings checked against this run's
            self.read_rows()  # 1c. the manifests' rows, read and checked row by row (rank 0), before any model
            self.setup_model()  # 2. the model; the newest checkpoint's trainable weights, before any sharding
            self.setup_data()  # 3. activation checkpointing, data (the whole encoder fills the feature cache), then
            #                       shard (FSDP) / wrap (DDP) the model
            self.setup_optimizer()  # 4. optimizer + schedule over the wrapped parameters; resume them, the RNG last
            self.train()  # 5. train_step, evaluate and save_checkpoint until max_steps
            return self.save_final()  # 6. final/ (its presence marks the run finished)
        except BaseException as e:
            self._note_kept(e)  # what cli's last line says the run kept (another rank gone, a signal)
            raise
        finally:
            self.cleanup()  # 7. logs closed; a process group of our own (1-rank FSDP) ended

    # ---- 0. process group; finished already? ----------------------------------------------------------------------
    def join_processes(self) -> None:
        """The process group (under torchrun) and this rank's device, before anything reads output_dir."""
        self.d, self.device = init_distributed(self.cfg.distributed_timeout_min, self.cfg.device)

    def finished_on_rank0(self) -> bool:
        """Whether output_dir holds a model trained for max_steps, and whether a finished run goes on (`extending`:
        `final.finished_state`), as rank 0 sees output_dir, for every rank: ranks that decided apart (a node-local
        output_dir, a stale listing) would leave one returning `final/` while the others wait at the first collective
        until the timeout. An error there (another run's final/) stops every rank."""
        done, self.extending = from_rank0(self.d, lambda: finished_state(self.cfg, self.out, self.d.world, self.log))
        return done

    # ---- 1. set-up --------------------------------------------------------------------------------------------------
    def setup_processes(self) -> None:
        """The start-up checks (`check_before_start`, agreed: a model folder missing on one node stopped that node in
        one line and left the others in a collective, a transport traceback or a hang), the frozen weights' dtype on
        this rank's device, the seeds; rank 0 locks output_dir."""
        cfg = self.cfg
        ranks.on_every_rank(lambda: check_before_start(cfg, self.device, self.d.main, self.source, rows=False),
                            self.d.rank, self.d.world, host_group(self.d), name_rank=True)  # (rank 0 alone reads the
        #   manifests; their rows: `read_rows`)
        self.placement = device_lib.Placement(self.device, device_lib.resolve_dtype(cfg.dtype, self.device, True))
        if not self.d.main:  # one rank speaks; errors still surface from every rank
            self.log = quiet
        note = device_lib.bf16_note(self.placement, cfg.dtype)
        if note is not None:
            plain = "" if use_bf16(cfg, self.device) else (", no autocast (float16 training would need loss "
                                                            "scaling, which this recipe does not do)")
            self.log(f"[{cfg.stage}] {note}{plain}")
        if (schedule := schedule_note(cfg)) is not None:
            self.log(schedule)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.lock = on_main(self.d, self._claim_output)
        shared_output(self.d, self.out)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)

    def _claim_output(self) -> RunLock:
        checkpoint.check_writable(self.out, need_bytes=checkpoint.LOG_ROOM)  # (a full disk, before the model)
        lock = RunLock(self.out).acquire()
        for leftover in paths.atomic_dir_leftovers(self.out / FINAL):  # a killed write of final/: the trained
            shutil.rmtree(leftover, ignore_errors=True)  # weights' size each, kept for ever (the lock is ours)
        checkpoint.remove_leftovers(self.out, log=self.log)  # and of a checkpoint: only now, the lock held (before
        #   it, `finished_on_rank0` reads the checkpoints while another run may be writing one)
        return lock

    def find_resume(self) -> None:
        """The checkpoint to resume from, as rank 0 finds it (every rank resumes from that one: a rank deciding for
        itself on a node whose output_dir holds no checkpoint, or an older listing, would start from step 0 beside
        rank 0's step N); every rank must read it (`shared_checkpoint`). Rank 0 compares its settings with this
        run's (before any model is built): a change stops the run unless allow_changes is set."""
        self.latest = from_rank0(self.d, lambda: checkpoint.latest(self.out, log=self.log))
        shared_checkpoint(self.d, self.latest)
        if self.latest is None:  # a fresh start: from a stage's final/ only where that stage has not trained on since
            on_main(self.d, lambda: check_start_finished(self.cfg))
        if self.latest is not None and self.latest.step > self.cfg.max_steps:
            raise LLMSRTError(f"{self.latest.path}: the newest checkpoint is at step {self.latest.step}, past "
                              f"max_steps {self.cfg.max_steps}; raise max_steps to at least {self.latest.step} or use "
                              "another output_dir")
        if self.extending and self.latest is None:
            raise LLMSRTError(f"{self.out}: no checkpoint left to continue the finished run from; raise max_steps in "
                              "a new output_dir with model.init_from pointing at the finished model instead")
        self.settings = on_main(self.d, self._check_settings)
        self.agreed = True

    def _check_settings(self) -> dict:
        """Rank 0: this run's settings against the checkpoint's (`check_settings`); the start final/ records."""
        settings, self.start = check_settings(self.cfg, self.d.world, self.latest, self.log)
        return settings

    def read_rows(self) -> None:
        """The training and dev manifests' rows, read and checked row by row by rank 0 and received by every rank
        (`data.stage_rows`; rank 0's error stops every rank), for `setup_data` to train on: a bad row was reported
        once the model had loaded (minutes per rank at 7B/32B). Rows a curriculum's checks read are not read again."""
        self.rows, self.read = stage_rows(self.cfg.data, self.d, self.read), None

    # ---- 2. model ---------------------------------------------------------------------------------------------------
    def setup_model(self) -> None:
        """SpeechLLM from the config (or from model.init_from, the previous stage), straight on this rank's device
        (under FSDP the LLM stays on the host on rank 0 and is a weightless skeleton on the others: `llm_device`),
        then the trainable weights of the newest checkpoint: they load into whole tensors, so before `setup_data`
        shards the model."""
        from ..model.speech_llm import SpeechLLM, SpeechLLMConfig, read_config

        cfg, m = self.cfg, self.cfg.model
        place = dict(device=self.device, llm_device=llm_device(cfg.distributed, self.d, self.device))
        # final/config.json records them: absolute, so the trained model loads from any folder
        encoder, llm = paths.absolute_model(m.encoder), paths.absolute_model(m.llm)
        model_cfg = SpeechLLMConfig(encoder=encoder, llm=llm, adapter=m.adapter,
                                    adapter_kwargs=dict(m.adapter_kwargs), lora=m.lora, trainable=tuple(cfg.trainable),
                                    dtype=self.placement.dtype_name, pad_to_30s=m.pad_to_30s,
                                    ctc_head=cfg.ctc.active)
        if m.init_from:
            init = Path(m.init_from)
            absent = not (init / "config.json").is_file()
            if (rank := failing_rank(absent, self.d)) is not None:  # every rank stops, the same way
                few = all_sum(torch.tensor([float(absent)]), self.d).item() < self.d.world  # not on every rank
                on = f" on rank {rank}" if few else ""
                alone = (f", or resume from {self.latest.path} alone with model.init_from=null allow_changes=true (it "
                         "holds every trained weight)" if self.latest is not None else "")
                raise LLMSRTError(f"model.init_from: {init} is not a model folder (no config.json){on}; train the "
                                  f"previous stage first or fix the path (one that every rank reads){alone}")
            # the encoder / LLM paths come from this config, not the folder's config.json (it may come from
            # another host); the adapter's shape comes from the folder
            if (kept := _check_adapter_matches(m, init)) is not None:
                self.log(f"[{cfg.stage}] model.adapter: {m.adapter} in the config, but model.init_from {init} holds "
                         f"a {kept} adapter: training that one (its record in final/ says so)")
            if (trained := bool(read_config(init).get("pad_to_30s", False))) != m.pad_to_30s:  # an imported
                #   reference model (30 s padding) under a stock config: its adapter reads frames it never saw
                self.log(f"[{cfg.stage}] model.pad_to_30s: {str(m.pad_to_30s).lower()} in the config, but model."
                         f"init_from {init} was trained with {str(trained).lower()}: its adapter now reads "
                         f"{'30 s padded' if m.pad_to_30s else 'variable-length'} encoder frames it was not trained "
                         f"on; set model.pad_to_30s={str(trained).lower()} to keep its input")
            self.model = SpeechLLM.from_pretrained(init, encoder=encoder, llm=llm, lora=m.lora,
                                                   trainable=model_cfg.trainable, dtype=model_cfg.dtype,
                                                   pad_to_30s=m.pad_to_30s, ctc_head=cfg.ctc.active, **place)
            self.log(f"[{cfg.stage}] initialized from {init}")
        else:
            self.model = SpeechLLM(model_cfg, **place)
            if self.latest is None:  # (a resume loads the checkpoint's weights below)
                self.log(f"[{cfg.stage}] starting from a fresh {' and '.join(cfg.trainable)} (model.init_from: null)")
        counts = self.model.parameter_counts()
        self.log(f"[{cfg.stage}] trainable parameters: adapter {counts['adapter'] / 1e6:.2f}M, lora "
                 f"{counts['lora'] / 1e6:.2f}M, total {counts['trainable'] / 1e6:.2f}M of {counts['all'] / 1e6:.1f}M "
                 f"({self.placement})")
        if (frozen := lora_note(cfg)) is not None:
            self.log(frozen)
        on_main(self.d, self._check_room)  # room for a checkpoint, now that its size is known
        if self.latest is not None:
            self.model.load_trainable(self.latest.path)
            self.last_good = self.latest.path

    def _check_room(self) -> None:
        """Rank 0: room in output_dir for one checkpoint: what it saves (a frozen adapter under trainable: [lora]
        too) and the trainable weights' AdamW moments; its size kept for the check after the feature cache's fill."""
        self.room = checkpoint.checkpoint_size(self.model.trainable_parameters(), self.model.trainable_state(),
                                               ranks=self.d.world)
        checkpoint.check_room(self.out, self.room, self.cfg.keep_last, margin=self._log_room())

    def _log_room(self) -> int:
        return checkpoint.log_room(self.cfg.save_every, self.cfg.log_every)

    # ---- 3. data ----------------------------------------------------------------------------------------------------
    def setup_data(self) -> None:
        """Activation checkpointing (before sharding), the training data (its feature cache runs the whole
        encoder), then wrap the model for DDP or shard it for FSDP: after this, parameters may be sharded."""
        from .data import TrainingData

        cfg, d = self.cfg, self.d
        self.parallel = Parallel(self.model, cfg.distributed, d, self.device,
                                 activation_checkpointing=cfg.activation_checkpointing,
                                 unused_parameters=skips_trained(cfg),
                                 within_node=cfg.fsdp_within_node)
        if self.parallel.checkpointed_layers:
            self.log(f"[{cfg.stage}] activation checkpointing: {self.parallel.checkpointed_layers} LLM decoder layers "
                     "recomputed in backward")
        self.data = TrainingData(cfg.data, self.model, d, log=self.log, batches=cfg.max_steps * cfg.optim.accumulation,
                                 accumulation=cfg.optim.accumulation,  # (self.room: rank 0's, known since the model)
                                 keep=None if self.room is None else (self.out, self.room.total + self._log_room()),
                                 rows=self.rows)  # (read by `read_rows`)
        self.rows = None  # (TrainingData holds what it trains on)
        self.parallel.wrap()
        if self.parallel.sharded:
            held, whole = self.parallel.llm_numel()
            over = f"{d.world} ranks: rank {d.rank} holds" if d.world > 1 else "1 process (one device): it holds"
            self.log(f"[{cfg.stage}] FSDP over {over} {held / 1e6:.3f}M of the LLM's {whole / 1e6:.3f}M parameters")
        # the room for a checkpoint again: a feature cache on output_dir's disk (data.feature_cache: auto, under the
        #   home folder, beside runs/) took what its own check left, and the first save failed save_every steps in
        when = " now that the feature cache is filled (data.feature_cache may share this disk)" \
            if self.data.cache is not None else ""
        on_main(d, lambda: checkpoint.check_room(self.out, self.room, cfg.keep_last, when, self._log_room()))

    # ---- 4. optimizer / resume --------------------------------------------------------------------------------------
    def setup_optimizer(self) -> None:
        """AdamW + the warm-up schedule over the (wrapped) trainable parameters; on resume their states, the data
        position and the step, and the RNG last (everything before it may draw random numbers)."""
        cfg = self.cfg
        self.params = self.model.trainable_parameters()
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas),
                                           weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg.optim, cfg.max_steps))
        if self.latest is not None:
            state = checkpoint.load_trainer_state(self.latest.path,
                                                  required=("step", "optimizer", "scheduler", "data", "rng"))
            self.parallel.load_optimizer_state(self.optimizer, state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            if cfg.allow_changes:  # the loaded states carry the old lr / betas / weight decay: this run's apply
                _apply_optim_settings(self.optimizer, self.scheduler, cfg)
            else:
                _follow_schedule(self.optimizer, self.scheduler, cfg, self.log)
            if skipped := self.data.load_state_dict(state["data"], cfg.allow_changes):
                self.log(f"[{cfg.stage}] the checkpoint's data position ({state['data']['batch']} batches of "
                         f"{state['data'].get('replicas', 1)} rank(s) into epoch {state['data']['epoch']}) is no whole "
                         f"step of {self.d.world} rank(s) x {cfg.optim.accumulation} micro-batch(es): skipping "
                         f"{skipped} batch(es) of that epoch")
            if note := self.data.sampler.resume_note:  # another batch size (allow_changes): the epoch's examples left
                self.log(f"[{cfg.stage}] {note}")
            self.step = state["step"]
            self.eval_due = bool(state.get("eval_due"))
            self.best_dev = from_rank0(self.d, lambda: best_dev_loss(self.out, self.step, dev_set(self.settings)))
            _restore_rng(state["rng"], self.d, cfg.seed, self.step, log=self.log)
            on_main(self.d, lambda: _drop_log_after(self.out, self.step))
            self.log(f"[{cfg.stage}] resumed from {self.latest.path} at step {self.step}")
        else:  # a fresh start; a run killed before its first checkpoint left its log lines: they go
            on_main(self.d, lambda: _drop_log_after(self.out, 0))
            if self.d.rank:  # every weight is placed (and broadcast from rank 0), so from here on the other ranks
                #   draw their own dropout masks and CTC negatives, not copies of rank 0's
                seed_own_stream(cfg.seed, 0, self.d.rank)

    # ---- 5. train ---------------------------------------------------------------------------------------------------
    def train(self) -> None:
        """Steps until max_steps: a train step, its logs, a dev evaluation and a checkpoint when they are due (and a
        checkpoint at an evaluation whose dev loss is the best yet). A SIGTERM or Ctrl-C (SLURM's preemption, `docker
        stop`, torchrun) lets the step in progress end, then saves it (`_stop_on_signal`); a dev evaluation due at
        that step is skipped (a resume goes on from the next step)."""
        cfg = self.cfg
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16(cfg, self.device)
                         else contextlib.nullcontext())
        # TensorBoard drops a killed run's events past the resumed step (or all, on a fresh start after a run killed
        #   before its first checkpoint), as train_log.jsonl did. Rank 0's alone: its failure stops every rank
        #   (`on_main`; the others went on to the first step's collective and died of a transport error)
        purge = self.step + 1
        self.writer = on_main(self.d, lambda: _tensorboard(self.out, purge))
        self.bar = tqdm(total=cfg.max_steps, initial=self.step, desc=f"train {cfg.stage}", disable=not self.d.main,
                        dynamic_ncols=True)
        self.step_seconds, self.steps_timed = 0.0, 0  # the training steps' time: not evaluations' nor checkpoints'
        self.model.train()
        self.current = self.step  # the step whose work (train, log, evaluate, save) runs: what a signal waits for
        with signals_noted(lambda: f"step {self.current} of {cfg.max_steps}") as noted:
            if self.eval_due and self.data.has_dev:  # the evaluation a signal skipped at this step runs first, as
                #   the uninterrupted run ran it there; a best dev loss saves the step again with it (final_weights:
                #   best would pass it over, the last step's included)
                self.eval_pending = True
                dev_loss = self.evaluate().get("dev_loss")
                best = self._best(dev_loss)
                if best:
                    self.save_checkpoint(dev_loss)
                if self._signalled(noted):  # one that came during it (minutes at 7B) stops here, the step saved with
                    #   its dev loss: a step trained and saved first ran past the signal's grace (torchrun's 30 s)
                    self._stop_on_signal(noted, best, dev_loss)
            while self.step < cfg.max_steps:
                self.current = self.step + 1
                loss = self.train_step()
                last = self.step == cfg.max_steps
                due = self.data.has_dev and ((cfg.eval_every and self.step % cfg.eval_every == 0) or last)
                self.eval_pending, self.step_dev_loss = bool(due), None
                self.log_step(loss)
                if due and self._signalled(noted):  # the grace a signal leaves (torchrun's 30 s, docker stop's 10 s)
                    #   is for the step and its save, not a dev evaluation (minutes at 7B): it runs on resume
                    self._stop_on_signal(noted, False, None, eval_due=True)
                dev_loss = self.evaluate().get("dev_loss") if due else None
                best = self._best(dev_loss)
                # an evaluation between checkpoints (eval_every 250, save_every 100) that beats every saved dev loss
                # is saved too: else the best model by dev loss would be lost. dev_loss is summed over ranks (the
                # same on every rank), so the ranks agree on this collective
                saved = self.step % cfg.save_every == 0 or last or best
                if saved:
                    self.save_checkpoint(dev_loss)
                if self._signalled(noted):
                    self._stop_on_signal(noted, saved, dev_loss)
            # one that came after the last step's agreement (its checkpoint is saved: the last step saves) still
            # stops the run, on every rank alike (the next is save_final's collective)
            if self._signalled(noted):
                self._stop_on_signal(noted, True, None)

    def _best(self, dev_loss: float | None) -> bool:
        """Whether `dev_loss` beats every dev loss a checkpoint holds (then it is the best: `best_dev`)."""
        best = dev_loss is not None and math.isfinite(dev_loss) and (self.best_dev is None or dev_loss < self.best_dev)
        if best:
            self.best_dev = dev_loss
        return best

    def train_step(self) -> float:
        """One optimizer step over `optim.accumulation` micro-batches; the loss, token-weighted over all ranks."""
        from torch.distributed.tensor import DTensor

        cfg, d, parallel = self.cfg, self.d, self.parallel
        start = self._clock()
        self.optimizer.zero_grad(set_to_none=True)
        micro = [self.data.next_batch() for _ in range(cfg.optim.accumulation)]
        # on the device: the step's one wait for it is after the last backward (a CPU tensor here went to the GPU and
        # back before the first forward, and each micro-batch's sums came back to the CPU after its backward)
        n_total = all_sum(torch.tensor(float(sum(b["n_target_tokens"] for b in micro)), device=self.device), d)
        # token-weighted sums of the loss and of its CTC part, the tokens of the batches with speech (a stage that
        # mixes in text-only mt has batches without: no CTC there) and one row its transcript fits at least, and
        # the rows the CTC scored of all it read (the forward's "ctc_rows"), reduced over ranks together
        sums = torch.zeros(5, device=self.device)
        ctc = cfg.ctc if cfg.ctc.active else None
        for i, batch in enumerate(micro):
            heard = ctc if ctc is not None and has_speech(batch) else None
            stage = "forward"
            try:
                with parallel.sync_gradients(i == len(micro) - 1):
                    with self.autocast:  # the forward only: backward runs in the dtypes autocast chose
                        result = parallel.runner(batch, ctc=heard)
                    stage = "backward"
                    # token-weighted so that N ranks x B examples equals 1 rank x N*B examples
                    weight = result["n_tokens"].float() * d.world / n_total.clamp(min=1)
                    (result["loss"] * weight).backward()
            except RuntimeError as e:  # torch.OutOfMemoryError, or a library's "out of memory" (cuBLAS)
                if device_lib.is_out_of_memory(e):
                    self._stop_out_of_memory(stage, i, batch, e)
                raise
            n = result["n_tokens"].float()
            rows = result["ctc_rows"].to(n.device) if heard else n.new_zeros(2)  # (feasible rows, rows)
            scored = n * (rows[0] > 0)  # a batch no row of which fits its speech has a CTC loss of 0: not averaged
            parts = [result["loss"].detach().float() * n, result["ctc_loss"].float() * scored if heard else scored,
                     scored, *rows]
            sums += torch.stack(parts).to(sums.device)
        total = all_sum(sums, d).cpu()
        loss = float(total[0] / n_total.cpu().clamp(min=1))
        self.ctc_loss = float(total[1] / total[2]) if ctc is not None and total[2] > 0 else None
        if total[4] > total[3]:
            self._short_speech(int(total[4] - total[3]), int(total[4]))
        if not math.isfinite(loss):  # the NaN guard: stop before the optimizer spoils the weights
            self._stop_not_finite(f"loss is {loss}", "loss")
        # the gradients' guard: one NaN element (a finite loss) makes the global norm NaN, and clipping by it or
        # AdamW would turn trainable weights NaN, saved at the next checkpoint. The norm is global (DDP averaged the
        # gradients; FSDP's is a DTensor over the shards); the ranks still decide together. Without clipping it is
        # computed all the same: one norm over the trainable gradients, small beside the step's backward
        norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        self.grad_norm = float(norm.full_tensor() if isinstance(norm, DTensor) else norm)
        if all_max(torch.tensor([0.0 if math.isfinite(self.grad_norm) else 1.0]), d).item():
            self._stop_not_finite(f"the gradient norm is {self.grad_norm} (loss {loss:.4g})", "gradient norm")
        if cfg.optim.grad_clip:
            torch.nn.utils.clip_grads_with_norm_(self.params, cfg.optim.grad_clip, norm)
        self.lr = self.optimizer.param_groups[0]["lr"]  # this step's: after scheduler.step() it is the next one's
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.steps_timed += 1
        self.step_seconds += self._clock() - start
        return loss

    def _clock(self) -> float:
        """The time, once this rank's device has done the work queued on it: on a GPU the clipping and the
        optimizer's update return once queued, and read without a wait, their time went to the next step's figure
        (the last step's to none)."""
        device_lib.synchronize(self.device)
        return time.perf_counter()

    def _signalled(self, noted: Noted) -> bool:
        """Whether any rank got a signal, agreed on every rank (a collective): torchrun or SLURM may reach some only."""
        return bool(all_max(torch.tensor([float(bool(noted))]), self.d).item())

    def log_step(self, loss: float) -> None:
        """The three sinks: the progress bar, TensorBoard, and train_log.jsonl every log_every steps."""
        lr = self.lr
        try:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", refresh=False)  # update() redraws, as often
            self.bar.update(1)  # as its mininterval allows (30 s into a log file, cli.quiet_progress_when_logged)
            if self.writer is not None:
                self.writer.add_scalar("train/loss", loss, self.step)
                self.writer.add_scalar("train/lr", lr, self.step)
                self.writer.add_scalar("train/grad_norm", self.grad_norm, self.step)
                if self.ctc_loss is not None:
                    self.writer.add_scalar("train/ctc_loss", self.ctc_loss, self.step)
        except Exception as e:  # noqa: BLE001  a full or read-only disk under the log, or TensorBoard's own
            self.sink_error = self.sink_error or e  # error: reported (on every rank) at the log line
        if self.step % self.cfg.log_every == 0 or self.step == self.cfg.max_steps:
            self.write_logs(lambda: _log_json(self.out, {
                "step": self.step, "loss": loss, "lr": lr, "grad_norm": self.grad_norm,
                **({"ctc_loss": self.ctc_loss} if self.ctc_loss is not None else {}),
                "s_per_step": self.step_seconds / self.steps_timed}))  # dev evaluations and saves left out

    def write_logs(self, write) -> None:
        """Rank 0 runs `write` (log lines); an I/O failure there or in the progress bar / TensorBoard since the last
        call stops every rank with a one-line error, after a last checkpoint attempt (a collective: every rank
        calls this at the same steps)."""
        def guarded():
            if self.sink_error is not None:
                raise self.sink_error
            write()

        try:
            on_main(self.d, guarded)
        except Exception as e:  # noqa: BLE001  any failure: rank 0 re-raises its own (a ValueError of TensorBoard's,
            self._stop_after_log_failure(e)  # say) where the other ranks get an LLMSRTError; had rank 0 alone left,
            #   the others would wait at the last checkpoint's collectives until the process group's timeout

    def evaluate(self) -> dict[str, float]:
        """Dev loss (none when no dev token was scored) and, with data.dev_decode, dev BLEU / WER on every rank's
        share; logged by rank 0."""
        dev = {k: v for k, v in self.data.evaluate(self.model, self.autocast, sharded=self.parallel.sharded).items()
               if v is not None}  # no dev loss when no dev token was scored
        self.eval_pending, self.step_dev_loss = False, dev.get("dev_loss")

        def write():
            self.bar.write(f"[{self.cfg.stage}] step {self.step}: " + ", ".join(f"{k} {v:.3f}" for k, v in dev.items()))
            _log_json(self.out, {"step": self.step, **dev})
            if self.writer is not None:
                for k, v in dev.items():
                    self.writer.add_scalar(f"dev/{k.removeprefix('dev_')}", v, self.step)

        self.write_logs(write)
        self.model.train()
        return dev

    def save_checkpoint(self, dev_loss: float | None, eval_due: bool = False) -> None:
        """Weights + exact-resume state (optimizer, schedule, data position, every rank's RNG), written by rank 0;
        `eval_due`: its dev evaluation, due, was skipped (a signal), and a resume runs it first. Gathering whole
        tensors is a collective under FSDP: every rank calls this."""
        weights = self.parallel.trainable_state()
        state = {"step": self.step, "optimizer": self.parallel.optimizer_state(self.optimizer),
                 "scheduler": self.scheduler.state_dict(), "data": self.data.state_dict(), "rng": _gather_rng(self.d),
                 "config": config_lib.to_dict(self.cfg), "settings": self.settings} | (
                     {"eval_due": True} if eval_due else {})
        model, out, cfg = self.model, self.out, self.cfg
        start = None if self.saved_once else self.latest.step if self.latest is not None else 0  # what lies past
        #   it on disk, this run passed over: its first save keeps those folders aside (`checkpoint._set_aside`)
        def write() -> None:
            self.last_good = checkpoint.save(out, self.step, lambda p: model.save_pretrained(p, state=weights), state,
                                             cfg.keep_last, dev_loss, log=self.log, resumed_from=start,
                                             dev_set=dev_set(self.settings))  # rank 0's at once: saved, if another
            #   rank goes before they agree
        on_main(self.d, write)
        self.last_good = out / "checkpoints" / checkpoint.step_name(self.step)  # on every rank, not rank 0's alone
        self.saved_once = True

    # ---- 6. save --------------------------------------------------------------------------------------------------
    def save_final(self) -> Path:
        """final/: the trained weights and train_config.json (a collective under FSDP; rank 0 writes)."""
        weights = self.parallel.trainable_state()  # a collective under FSDP: every rank, whichever weights go

        def write() -> str:
            chosen, which = final_weights_of(self.out, self.step, self.cfg, weights, dev_set(self.settings),
                                             self.log)
            _save_final(self.model, self.out, chosen, self.cfg, self.settings, self.start)  # init_from's hash,
            #   taken at start
            return which

        which = on_main(self.d, write)
        if self.d.main:
            self.log(f"[{self.cfg.stage}] done: {self.out / FINAL} ({which}; "
                     f"{self.step_seconds / max(1, self.steps_timed):.2f} s/step)")
        barrier(self.d)
        return self.out / FINAL

    # ---- 7. clean up -------------------------------------------------------------------------------------------------
    def cleanup(self) -> None:
        """Close the progress bar and TensorBoard, end a 1-rank process group of our own, let go of output_dir (also
        after an error: a sink that cannot flush any more is named in the log, not raised over the first error)."""
        for sink in (self.bar, self.writer):
            try:
                if sink is not None:
                    sink.close()
            except OSError as e:
                self.log(f"[{self.cfg.stage}] closing the {type(sink).__name__} failed: {e.strerror or e}")
        if self.parallel is not None:
            self.parallel.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None


# ---- CLI ----------------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("items", nargs="+", metavar="CONFIG_OR_OVERRIDE",
                        help="a stage YAML (e.g. configs/embedded/asr.yaml), then key=value overrides "
                        "(e.g. optim.lr=1e-5 max_steps=10)")


def main(args) -> int:
    configs, overrides = config_lib.split_items(args.items)
    if len(configs) > 1:
        raise ConfigError(f"give one config file, got {configs}; use `llm-srt curriculum` for several stages")
    try:
        train(load_config(configs[0] if configs else None, overrides), source=configs[0] if configs else None)
    finally:  # also a run refused or stopped under torchrun: its groups left to the interpreter aborted a rank
        release_groups()
    return 0
