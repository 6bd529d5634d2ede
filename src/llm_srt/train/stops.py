"""How a training run stops, each in one line on every rank: a signal (a checkpoint saved at the step first), a loss
or gradient that is not finite, a micro-batch out of memory, a log that cannot be written, a CTC stage with nothing
to train on. `Recipe`'s own methods (it inherits them): they read its config, step and newest checkpoint."""

import signal

from tqdm import tqdm

from ..audio import SAMPLE_RATE
from ..errors import LLMSRTError
from . import checkpoint
from .data import mixes_text
from .signals import Kept, Noted


FOREIGN_CHARS = 200  # another's text in a stop's line (the OS's, a library's) is cut here; ours (an LLMSRTError:
#   paths, step-N names and what to do) never: "resume from step-00000700" read "step-0000070" once cut


def _first_line(error: BaseException, text: str | None = None) -> str:
    """An error's first line (of `text`, its own words where None) for a stop's line: an LLMSRTError's whole (its own
    sentence, on another rank behind "rank N: rank 0 stopped: "), another's text cut at FOREIGN_CHARS; its type's
    name where it says nothing."""
    line = ((str(error) if text is None else text).splitlines() or [type(error).__name__])[0]
    return line if isinstance(error, LLMSRTError) else line[:FOREIGN_CHARS]


class RunStops:
    """The stops of `Recipe` (train/recipe.py), which sets `cfg`, `step`, `last_good`, `out`, `d`, `device`, `bar`,
    `log`, `writer`, `ctc_short_said`, `eval_pending` and `step_dev_loss`, and defines `save_checkpoint`."""

    def _short_speech(self, short: int, rows: int) -> None:
        """`short` of a step's `rows` had fewer adapter vectors than their CTC path needs (`CTCHead.loss`): said once;
        a ctc.only step of such rows alone trains nothing (it logged 0.0 and saved an untrained final/): it stops."""
        more = ("give the adapter more output vectors: a larger model.adapter_kwargs.num_queries for a Q-Former, or "
                "a projector (model.adapter: linear or pooled, a vector per k or pool encoder frames)")
        if self.cfg.ctc.only and short == rows:
            raise LLMSRTError(f"[{self.cfg.stage}] ctc.only: none of the {rows} rows of step {self.step + 1} has as "
                              "many speech vectors as its transcript needs, so the CTC loss has nothing to train on; "
                              f"{more}")
        if not self.ctc_short_said:
            self.ctc_short_said = True
            with tqdm.external_write_mode():  # a line of its own, not after the progress bar
                self.log(f"[{self.cfg.stage}] ctc: {short} of {rows} rows of step {self.step + 1} have fewer speech "
                         "vectors than transcript tokens (plus repeats): they add nothing to the CTC loss (said "
                         f"once); {more}")

    def _stop_on_signal(self, noted: Noted, saved: bool, dev_loss: float | None, eval_due: bool = False) -> None:
        """After a whole step (a consistent state: the weights, the optimizer and the data position all past that
        step), every rank saves a checkpoint there unless the step saved one, then raises the signal's exception
        through its own handler (`Noted.stop`: `Terminated` on a rank that got none itself) so the exit status says
        what stopped the run, and a next SIGTERM during the clean-up ends the process as cli's handler arranges.
        `eval_due`: the step's due dev evaluation was skipped (the grace is for the step and its save): the
        checkpoint says so, and a resume runs it first."""
        name = signal.Signals(noted[0]).name if noted else "a signal to another rank"
        try:
            if not saved:
                self.save_checkpoint(dev_loss, eval_due)
            done, saved = f"saved a checkpoint, {self.last_good}; the same command resumes from it", True
        except LLMSRTError as e:
            saved = self._in_place()
            done = (f"the checkpoint attempt failed ({_first_line(e)}); the newest one is "
                    f"{self.last_good or 'none'}")
        self.bar.close()  # the line below on a line of its own
        self.log(f"[{self.cfg.stage}] {name} at step {self.step}: {done}")
        noted.stop(Kept(self.step, saved, self.last_good))  # cli's last line says what it kept

    def _in_place(self) -> bool:
        """After a failed or cut save of this step: whether its checkpoint is in place all the same (its folder
        written whole, the index not: "step-N is saved"), then the newest (`last_good`), which the same command
        resumes from (`checkpoint.latest` reads the folders). The stop's lines named the one before it, and said step
        N unsaved."""
        folder = self.out / "checkpoints" / checkpoint.step_name(self.step)
        if folder != self.last_good:  # (the one it resumed from, saved again at a signal: it stays)
            if not (folder.is_dir() and checkpoint.verify(folder) is None):
                return False
            self.last_good = folder
        return True

    def _note_kept(self, error: BaseException) -> None:
        """What a run stopped otherwise than by its own signal line (`_stop_on_signal`) kept, on the exception for
        cli's last line (`error.kept`): another rank gone (`ranks.peer_gone`: it said "the training state is its last
        checkpoint" where none was saved, and the same command started again from step 0), a second signal (the step
        in progress unsaved: it said "resume from its last checkpoint, if it saved one"), a signal while the model or
        data load. Only once `find_resume` has agreed where the run starts (`agreed`, on every rank: `settings` is
        rank 0's alone, and the other ranks' lines said "if it saved one"): before, it is not known. Read from this
        rank's own record and the shared output_dir, with no collective (the peer may be gone)."""
        kept = getattr(error, "kept", None)
        if (kept is not None and kept.step is not None) or not self.agreed:
            return
        self._in_place()
        newest, step = self.last_good, self.step
        if newest is None and self.latest is not None:  # (its weights not loaded yet)
            newest = self.latest.path
        if self.latest is not None:  # (its step not restored yet)
            step = max(step, self.latest.step)
        error.kept = Kept(step, newest is not None and newest.name == checkpoint.step_name(step), newest)

    def _stop_not_finite(self, what: str, quantity: str) -> None:
        """Stop before the optimizer step, which would spoil the weights (and the next checkpoint): the newest
        checkpoint on disk stays the one to resume from. Stopping, not skipping the step: the same settings reach the
        same `quantity` again (the data order and RNG are resumed exactly), so a skipped step would hide a run that
        diverges or a batch that poisons it. With none saved yet, the same command starts again from step 0 (it
        said "add allow_changes=true to resume from it", with nothing to resume from)."""
        if self.last_good is None:
            raise LLMSRTError(f"[{self.cfg.stage}] {what} at step {self.step + 1}: training stopped before any "
                              f"checkpoint was saved (save_every {self.cfg.save_every}): the run starts again from "
                              "step 0. Lower optim.lr and run the same command (the same settings reach the same "
                              f"{quantity} again), or check the data")
        where = f"; the last good checkpoint is {self.last_good}"
        raise LLMSRTError(f"[{self.cfg.stage}] {what} at step {self.step + 1}: training stopped{where}. Lower optim.lr "
                          f"and add allow_changes=true to resume from it (the same settings reach the same {quantity} "
                          f"again; a {quantity} that is not finite at once then means that checkpoint's weights are "
                          "spoiled too: start a new output_dir with model.init_from=<an earlier checkpoint>), or check "
                          "the data")

    def _stop_out_of_memory(self, stage: str, i: int, batch: dict, error: BaseException) -> None:
        """One line for a micro-batch that does not fit (the heaviest batch may come at any step: buckets are
        shuffled): where, what the batch held, the checkpoint to resume from, and the settings that need less memory.
        Under torchrun the other ranks are in the step's collectives already: they end as after any rank's failure
        (torchrun's SIGTERM, its SIGKILL 30 s later for a rank blocked in NCCL), as before, with this line the cause."""
        cfg = self.cfg
        if "features" in batch:
            longest = f"up to {batch['features'].shape[1]} encoder frames a row, "  # the padded (B, T, D): no sync
        elif audio := [a for a in batch.get("audio") or () if a is not None]:
            longest = f"up to {max(len(a) for a in audio) / SAMPLE_RATE:.1f} s of audio a row, "
        else:
            longest = ""
        what = (f"micro-batch {i + 1} of {cfg.optim.accumulation}: {len(batch['ids'])} rows, {longest}"
                f"{batch['n_target_tokens']} target tokens; data.batch_size {cfg.data.batch_size}")
        ways = []
        if (factor := next((f for f in range(2, cfg.data.batch_size + 1) if cfg.data.batch_size % f == 0), None)):
            ways.append(f"data.batch_size={cfg.data.batch_size // factor} optim.accumulation="
                        f"{cfg.optim.accumulation * factor} allow_changes=true (the same examples per step)")
        if not cfg.activation_checkpointing:
            ways.append("activation_checkpointing=true")
        shardable = not mixes_text(cfg.data.tasks)  # TrainConfig refuses fsdp for text-only mt beside speech
        if self.d.world > 1 and cfg.distributed != "fsdp" and shardable:
            ways.append("distributed=fsdp (the LLM sharded over the ranks)")
        where = (f"the newest checkpoint is {self.last_good}" if self.last_good else
                 f"no checkpoint in {self.out} yet (save_every {cfg.save_every})")
        fix = (f"To {'resume from it' if self.last_good else 'start again'} with less memory a step, run the same "
               f"command with {', or '.join(ways)}" if ways else
               "This step needs more memory than this machine gives it: train on a GPU (device=cuda), or free memory "
               "or use a machine with more" if str(self.device).startswith("cpu") else
               "This step needs more GPUs (torchrun with distributed=fsdp) or one with more memory" if shardable else
               "This step needs a GPU with more memory (FSDP, which would shard the LLM over more GPUs, does not "
               "take a stage that mixes text-only mt with speech tasks)")
        raise LLMSRTError(f"[{cfg.stage}] out of memory on {self.device} at step {self.step + 1}, in the {stage} of "
                          f"{what} ({str(error).splitlines()[0][:160]}); {where}. {fix}") from error

    def _stop_after_log_failure(self, error: Exception) -> None:
        """One line after a last checkpoint attempt. A disk's failure (an OSError, or another rank's report of one)
        says to free space; any other error (TensorBoard's own, a bug) keeps its type, and is chained for --debug's
        traceback: running the same command would meet it again. The checkpoint holds the step's dev loss where its
        evaluation ran (its log line failed), or says the evaluation was due (the step's train line failed before
        it): a resume runs it first, as after a signal. Saved without either, the resume never evaluated that step
        (the last one's included: final_weights best chose among the earlier ones)."""
        disk = isinstance(error, (OSError, LLMSRTError))
        text = (f"{error.strerror or error}" if isinstance(error, OSError) else str(error) if disk
                else type(error).__name__ + (f": {error}" if str(error) else ""))
        reason = _first_line(error, text)  # an empty message: AssertionError()
        where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
        self.writer = None  # broken: not flushed again on the way out
        try:
            self.save_checkpoint(self.step_dev_loss, eval_due=self.eval_pending)
            saved = f"saved a last checkpoint, {self.last_good}"
        except LLMSRTError as e:
            self._in_place()
            saved = f"the last checkpoint attempt failed too ({_first_line(e)}); the newest one is " \
                    f"{self.last_good or 'none'}"
        go_on = "to resume" if self.last_good else "and the run starts again from step 0"  # (it said "resume" there)
        what = (f"Free space or fix the folder, then run the same command {go_on}" if disk else
                "--debug shows where it was raised; once it is fixed, the same command "
                + ("resumes" if self.last_good else "starts the run again from step 0"))
        raise LLMSRTError(f"[{self.cfg.stage}] cannot write the training logs in {self.out}{where} at step "
                          f"{self.step}: {reason}; {saved}. {what}") from (None if disk else error)
