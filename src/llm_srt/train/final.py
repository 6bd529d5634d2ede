"""final/, the finished model in output_dir: whether a run is finished, for how many steps and with which settings, and
writing it, whole or not at all (the last step's weights, or with final_weights: best a checkpoint's).
"""

import json
from dataclasses import replace
from pathlib import Path

from .. import config as config_lib
from ..errors import ConfigError, LLMSRTError
from ..paths import FINAL, TRAIN_CONFIG
from . import checkpoint, resume
from .config import TrainConfig

INIT_RECORD = "init_from.json"  # in final/: the folder it started from and `resume.init_identity` of its weights
RUN_SETTINGS = "run_settings.json"  # in final/: the settings it was trained with (`resume.run_settings`)
RANKS = "ranks"  # in RUN_SETTINGS, beside them: the ranks it was trained on (its examples per step are compared with
#   a run's on as many)
DEV_SET_KEYS = ("data.dev", "data.dev_size", "data.seed", "data.skip_bad")  # of `resume.run_settings`: what
#   picks the dev rows (`data.read_stage_rows`: the manifest's content hash, how many, which, bad rows left out)


def is_finished(output_dir: str | Path) -> bool:
    return (Path(output_dir) / FINAL / "config.json").is_file()


def _more_steps(out: Path, done: int, max_steps: int) -> str:
    return (f"{out / FINAL} was trained for {done} steps, more than max_steps {max_steps}: final/ is the {done}-step "
            "model")


def _more_steps_refused(said: str, done: int, max_steps: int) -> str:
    return (f"{said}; set max_steps={done} to use it, add allow_changes=true to take it as it is, or choose another "
            f"output_dir for a {max_steps}-step run")


def finished_steps(output_dir: str | Path) -> int | None:
    """max_steps the finished model was trained for (None if its train_config.json is missing or unreadable)."""
    try:
        return int(json.loads((Path(output_dir) / FINAL / TRAIN_CONFIG).read_text())["max_steps"])
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError):
        return None


def finished_at(output_dir: str | Path) -> int | None:
    """`finished_steps` of the model finished in `output_dir`; None where none is (or its steps cannot be read)."""
    return finished_steps(output_dir) if is_finished(output_dir) else None


def finished_state(cfg: TrainConfig, out: Path, world: int, log) -> tuple[bool, bool]:
    """(finished, extending) for `out`: finished if it holds a model trained for max_steps (refused where that
    model is another run's: other settings, another start, more steps); extending if a finished run whose max_steps
    was raised (or whose final_weights changed) continues from its newest checkpoint. `world`: this run's ranks."""
    if not is_finished(out):
        return False, False
    check_same_start(cfg, out)
    done = finished_steps(out)
    if done is None or done >= cfg.max_steps:
        _check_finished_settings(cfg, out, world, log)
        if done is not None and done > cfg.max_steps:
            _check_more_steps(cfg, out, done, log)
        if done == cfg.max_steps and final_weights_changed(cfg, out, log):
            return False, True  # from the checkpoint at max_steps: no step left to train, final/ written
        log(f"[{cfg.stage}] already finished: {out / FINAL}")
        return True, False
    log(f"[{cfg.stage}] {out / FINAL} has {done} steps; max_steps is now {cfg.max_steps}: continuing from the "
        "newest checkpoint")
    return False, True


def _check_more_steps(cfg: TrainConfig, out: Path, done: int, log) -> None:
    """A finished model trained for more steps than max_steps asks for is refused, as a checkpoint past max_steps
    is when the run was interrupted: it was handed back as "already finished", the longer model for the shorter
    one asked for. allow_changes takes it as it is, said in the log (as other settings of a finished run)."""
    said = _more_steps(out, done, cfg.max_steps)
    if not cfg.allow_changes:
        raise ConfigError(_more_steps_refused(said, done, cfg.max_steps))
    log(f"[{cfg.stage}] {said} (allow_changes)")


def final_weights_changed(cfg: TrainConfig, out: Path, log) -> bool:
    """Whether final/ holds other weights than final_weights now asks for (a stage finished with last, or before
    the key: the paper configs now ask for best), with the checkpoint at max_steps still there to write final/
    again from (the run resumes there and trains nothing). Without that checkpoint final/ is kept, said so."""
    try:
        had = json.loads((out / FINAL / TRAIN_CONFIG).read_text()).get("final_weights", "last")
    except (OSError, ValueError, AttributeError):
        return False
    if had == cfg.final_weights:
        return False
    newest = checkpoint.latest(out, log=log)
    if newest is None or newest.step != cfg.max_steps:
        log(f"[{cfg.stage}] {out / FINAL} holds the {had} weights (final_weights: {had}), and no checkpoint at "
            f"step {cfg.max_steps} is left to write it again with final_weights: {cfg.final_weights}; kept as it is")
        return False
    log(f"[{cfg.stage}] {out / FINAL} holds the {had} weights; final_weights is now {cfg.final_weights}: writing "
        "it again from the checkpoints (no step is trained)")
    return True


def _check_finished_settings(cfg: TrainConfig, out: Path, world: int, log) -> None:
    """A finished model trained with other settings than this config's (lr, task mix, manifests, precision...)
    is another run's: an error unless allow_changes, never handed back as this run's result. The number of ranks
    may differ (a curriculum run again on another cluster reuses its finished stages); on as many ranks as it was
    trained on, its examples per step are compared, as a resume compares them (optim.accumulation 4 for a model
    trained with 1 was handed back as "already finished")."""
    saved = _finished_settings(out)
    if saved is None:
        return  # a final/ from before the record, without a checkpoint: not checked
    current = resume.run_settings(cfg, world)
    same_ranks = saved.pop(RANKS, None) == world  # (None: a final/ from before the ranks' record)
    # a finished model is whole whatever the ranks (on others, its examples per step are not compared), and a stage
    # that finished before the weights shared out each kind of row is still that run's
    for key in (resume.WEIGHTED,) if same_ranks else (resume.PER_STEP, resume.WEIGHTED):
        saved.pop(key, None)
        current.pop(key, None)
    changed = [c for c in resume.changes(saved, current) if not c.startswith("model.init_from")]  # checked apart
    if changed and not cfg.allow_changes:
        raise ConfigError(f"{out / FINAL}: this output_dir holds a model finished with other settings: "
                          f"{resume.listed(changed)}. Choose another output_dir to train with these, set them "
                          "back to use it, or add allow_changes=true to take it as it is")
    if changed:
        log(f"[{cfg.stage}] taking the finished model trained with other settings (allow_changes): "
            f"{'; '.join(changed)}")


def init_record(out: Path) -> tuple[str | None, str | None] | None:
    """(the folder its start was, the identity of that start's weights) from `out`'s final/ INIT_RECORD; None for a
    final/ from before the record (or one that cannot be read): not checked."""
    try:
        record = json.loads((out / FINAL / INIT_RECORD).read_text())
        return record["init_from"], record["weights"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return None


def check_same_start(cfg: TrainConfig, out: Path) -> None:
    """A finished model started from other weights than this config's model.init_from is another run's (e.g.
    SRT trained from SMT, now asked for without SMT): an error, never handed back as this run's result."""
    if (record := init_record(out)) is None:
        return  # a final/ from before the record: not checked
    was, stored = record
    init = cfg.model.init_from
    current = resume.init_identity(init)
    if stored != current and not (init and current is None):  # a missing init_from folder: nothing to compare
        raise LLMSRTError(f"[{cfg.stage}] {out / FINAL} was trained from {was or 'scratch'}, but "
                          f"model.init_from is now {init and Path(init).resolve() or 'none'} (other weights); "
                          "use another output_dir for this run")


def _finished_settings(out: Path) -> dict | None:
    """The settings a finished run was trained with: final/'s record, else (a final/ from before it) the newest
    checkpoint's; None when neither is there. A record that is not a JSON object (a list, a number) is one that
    cannot be read, as bad JSON is (it stopped the run on a TypeError traceback)."""
    try:
        saved = json.loads((out / FINAL / RUN_SETTINGS).read_text())
    except (OSError, ValueError, RecursionError):
        saved = None
    if isinstance(saved, dict):
        return saved
    newest = checkpoint.latest(out, log=lambda *_: None)
    return checkpoint.stored_settings(newest.path) if newest is not None else None


def dev_set(settings: dict | None) -> dict | None:
    """What a run's dev losses are measured on, from its `resume.run_settings`: the dev rows and the task that
    scores them (the main task: `TrainingData.main_task`). Checkpoints store it with their dev loss; the best is
    chosen among those of one dev set (`checkpoint.measured_on`). None without settings (not compared)."""
    if settings is None:
        return None
    tasks = settings.get("data.tasks")
    main = max(tasks, key=tasks.get) if isinstance(tasks, dict) and tasks else None
    return {**{key: settings.get(key) for key in DEV_SET_KEYS}, "main task": main}


def best_weights(folder: Path, last: dict) -> dict:
    """A checkpoint folder's trainable weights in `SpeechLLM.trainable_state`'s form, for the groups `last` (the
    model's own) has: the files a checkpoint and a final/ folder share."""
    from ..model.speech_llm import ADAPTER_FILE, CTC_FILE, LORA_FILE, _load_weights

    files = {"adapter": ADAPTER_FILE, "lora": LORA_FILE, "ctc": CTC_FILE}
    return {group: None if state is None else _load_weights(folder / files[group]) for group, state in last.items()}


def _save_final(model, out: Path, weights: dict, cfg: TrainConfig, settings: dict,
                start: tuple[str | None, str | None] | None = None) -> None:
    """final/ whole: the weights, train_config.json, the run's settings and INIT_RECORD, from `start` (the folder
    the weights grew from and its weights' identity; default: this config's model.init_from and its identity)."""
    from safetensors import SafetensorError

    was, identity = start if start is not None else (cfg.model.init_from, settings[resume.INIT_KEY])
    trained = getattr(getattr(model, "config", None), "adapter", cfg.model.adapter)
    ranks = settings[resume.PER_STEP] // (cfg.data.batch_size * cfg.optim.accumulation)  # (batch x micro-batches x
    #   ranks: `resume.run_settings`)
    if trained != cfg.model.adapter:  # the adapter trained: model.init_from's, whatever model.adapter says
        cfg = replace(cfg, model=replace(cfg.model, adapter=trained))
    try:
        model.save_pretrained(out / FINAL, state=weights, extra_files={  # one folder, whole or not at all: a
            #   final/ without its train_config.json would count as finished and never continue
            TRAIN_CONFIG: json.dumps(config_lib.to_dict(cfg), indent=2) + "\n",
            RUN_SETTINGS: json.dumps({**settings, RANKS: ranks}, indent=1) + "\n",  # what a later run of this
            #   output_dir must match
            INIT_RECORD: json.dumps({"init_from": was, "weights": identity}) + "\n"})
        #   init_from: the path as configured (a folder moved stays readable)
    except (OSError, SafetensorError) as e:
        detail = (str(e).splitlines() or [type(e).__name__])[0]
        raise LLMSRTError(f"{out / FINAL}: cannot write the finished model ({detail}); free space or fix the folder, "
                          "then run the same command to resume from the last checkpoint") from None


def quiet(*_) -> None:
    """A log that says nothing (a rank other than 0; a read whose problems are reported elsewhere)."""


def best_dev_loss(out: Path, step: int, dev_set: dict | None = None) -> float | None:
    """The best dev loss of the checkpoints a run resumed at `step` keeps, at that step or before: a later one
    belongs to the steps this resume abandons (a damaged newest checkpoint; `checkpoint.save` drops it from the
    best), whose best must not hide an earlier kept one. With `dev_set`, of the checkpoints measured on it: another
    set's loss is not comparable (after a resume with another data.dev, the best starts anew)."""
    root = out / "checkpoints"
    index = checkpoint.read_index(root, log=quiet)
    best = index["best_step"]
    if best is not None and best <= step and checkpoint.measured_on(root / checkpoint.step_name(best), dev_set):
        return index["best_loss"]
    return checkpoint._best(root, [s for s in index["steps"] if s <= step], dev_set)[1]


def final_weights_of(out: Path, step_now: int, cfg: TrainConfig, last: dict, dev_set: dict | None,
                     log) -> tuple[dict, str]:
    """On rank 0, for a run at `step_now`: the weights final/ takes (`last`, the last step's, or with final_weights:
    best the best intact checkpoint's, read from its folder), and which they are, for the log. A damaged best
    checkpoint (`checkpoint.verify`) gives way to the next best kept one, said in the log; the last step's weights
    only when no intact checkpoint has a finite dev loss. Only checkpoints measured on the run's `dev_set` count (a
    resume with another data.dev: `checkpoint.measured_on`)."""
    if cfg.final_weights != "best":
        return last, f"the last step's weights, step {step_now}"
    root = out / "checkpoints"
    index = checkpoint.read_index(root, log=log)
    kept = {s for s in index["steps"] + [index["best_step"]] if s is not None and s <= step_now}
    damaged = []
    for step, loss in checkpoint.by_dev_loss(root, sorted(kept), dev_set):
        folder = root / checkpoint.step_name(step)
        if (problem := checkpoint.verify(folder)) is not None:
            log(f"[{cfg.stage}] final_weights: best: {folder} (dev loss {loss:.4g}) is damaged ({problem}); "
                "trying the next best checkpoint")
            damaged.append(step)
            continue
        which = f"the best checkpoint's weights, step {step}, dev loss {loss:.4g}"
        if damaged:
            which += f" (the best intact: step {', '.join(map(str, damaged))} damaged)"
        return best_weights(folder, last), which
    if damaged:
        return last, f"the last step's weights, step {step_now}: every checkpoint with a dev loss is damaged"
    return last, f"the last step's weights, step {step_now}: no checkpoint has a finite dev loss"
