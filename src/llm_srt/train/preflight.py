"""What a training stage is checked for before its model loads (train/recipe.py, and a curriculum for every stage
before the first trains), and the notes and choices its config alone decides: frozen LoRA, bf16 autocast, whether
a batch may leave trained parameters unused."""

from __future__ import annotations

import shlex
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import device as device_lib
from .. import paths
from ..errors import ConfigError, LLMSRTError, first_few
from ..prompts import Task
from . import checkpoint, resume
from .config import TrainConfig
from .final import FINAL, _more_steps, _more_steps_refused, finished_at, is_finished, quiet

if TYPE_CHECKING:
    from .data import StageRows


def lora_note(cfg: TrainConfig) -> str | None:
    """A line when model.lora is set but not trained (`trainable` lacks lora): a LoRA carried frozen from
    model.init_from is legitimate (the shipped smt_*.yaml), a fresh one is zero-init and changes nothing but the
    speed. None otherwise."""
    from ..model.speech_llm import LORA_FILE

    m = cfg.model
    if m.lora is None or "lora" in cfg.trainable:
        return None
    if m.init_from and (Path(m.init_from) / LORA_FILE).is_file():
        return f"[{cfg.stage}] model.lora is kept frozen (not in trainable): its weights come from {m.init_from}"
    source = f"model.init_from {m.init_from} holds none" if m.init_from else "no model.init_from"
    return (f"[{cfg.stage}] warning: model.lora is kept frozen (not in trainable) and starts fresh (zero-init; "
            f"{source}): it changes nothing: drop model.lora or add lora to trainable")


def skips_trained(cfg: TrainConfig) -> bool:
    """Whether a batch may leave trained parameters unused: a text-only mt batch skips the adapter and the CTC head
    (trained as `adapter`); LoRA runs in every batch, and a frozen adapter is no concern of DDP's (`Parallel.wrap`
    leaves frozen parameters out of it). Under FSDP every rank then skips them alike: TrainConfig refuses a mix of
    text and speech batches there."""
    return Task.MT.value in cfg.data.tasks and "adapter" in cfg.trainable


def check_before_start(cfg: TrainConfig, device: torch.device | None = None, manifests: bool = True,
                       source: str | None = None, rows: bool = True) -> StageRows | None:
    """What a stage can be refused for before any model loads: bf16 autocast on a CPU host, a manifest, encoder or
    LLM that is not there (not model.init_from: a curriculum's later stage starts from a folder an earlier one
    writes, and a resumed run needs it no more), a finished model trained for more steps than max_steps, a resume
    with another data.seed or data.start_step (`_check_same_seed`). A curriculum checks every stage so before the
    first trains: a typo in the SRT stage stopped it after the ASR and SMT stages (days at the paper's scale).
    `manifests`: check data.train and data.dev (under torchrun rank 0 alone reads them: another node need not hold
    them). `source`: the stage's YAML, which the precision error names (a curriculum names each stage's file before
    its errors). `rows`: with `manifests`, read and check their rows too (`_check_rows`: a curriculum's stages; the
    recipe reads a stage's rows once, before its model, to train on them); returns the rows read (None where none
    were), which a curriculum hands to its first stage that trains."""
    use_bf16(cfg, device if device is not None else device_lib.resolve_device(cfg.device, flag="device="), source)
    if not any(str(m).strip() for m in cfg.data.manifests):  # [] or the default ""
        raise ConfigError("data.train: give the training manifest (e.g. data/mini/train.jsonl)")
    named = [("data.train", m) for m in cfg.data.manifests] + [("data.dev", cfg.data.dev)] if manifests else []
    if missing := [(key, m) for key, m in named if m and not Path(m).exists()]:  # (their rows: `_check_rows`)
        raise ConfigError(_missing_manifests(missing, len(cfg.data.manifests)))
    for key, manifest in named:
        if manifest and Path(manifest).is_dir():
            raise ConfigError(f"{key}: {manifest}: a folder, not a manifest; name its .jsonl file (e.g. "
                              f"{Path(manifest) / 'train.jsonl'})")
    for key, folder in [("model.encoder", cfg.model.encoder), ("model.llm", cfg.model.llm)]:
        if not folder.strip():  # an empty path is the current folder ("<cwd>: not a Hugging Face Whisper folder")
            raise ConfigError(f"{key} is empty (it would be the current folder); give a Hugging Face model folder "
                              f"or {paths.EMBEDDED}, or set the variable it came from")
        if folder != paths.EMBEDDED and not Path(folder).exists():
            meant = f" (did you mean {paths.EMBEDDED!r}?)" if paths.meant_embedded(folder) else ""
            raise ConfigError(f"{key}: {folder}: no such folder{meant}; fix the path (or the variable it came from)")
    out = Path(cfg.output_dir)  # a finished stage trained past a lowered max_steps: refused at its turn otherwise
    done = finished_at(out)
    if done is not None and done > cfg.max_steps and not cfg.allow_changes:
        raise ConfigError(_more_steps_refused(_more_steps(out, done, cfg.max_steps), done, cfg.max_steps))
    if not is_finished(out) or done is not None and done < cfg.max_steps:  # it resumes (a finished run whose
        #   settings differ is the recipe's to refuse, or with allow_changes to take as it is)
        _check_same_seed(cfg, out)
    if manifests and rows and not cfg.data.skip_bad and not trained_to_end(cfg):
        return _check_rows(cfg)  # (a finished stage reads none; data.skip_bad refuses no row)
    return None


def trained_to_end(cfg: TrainConfig) -> bool:
    """Whether cfg.output_dir holds a model finished at max_steps or more: a stage that trains no step, its final/
    handed back (or written again from its checkpoints)."""
    done = finished_at(cfg.output_dir)
    return done is not None and done >= cfg.max_steps


def _check_rows(cfg: TrainConfig) -> StageRows:
    """The stage's manifests read and checked row by row as it will read them (`read_stage_rows`, no audio hashed),
    their warnings held for the stage's turn (`data.stage_rows` gives them then, whether it reads the rows again or
    takes these). A ConfigError, which a curriculum names the stage before: a bad row of its SRT stage stopped it
    once the ASR and SMT stages had trained."""
    from .data import read_stage_rows

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")  # (held, not shown: the filters of the stage's turn decide)
        try:
            read = read_stage_rows(cfg.data, Task(cfg.data.main_task), hashes=False)
        except LLMSRTError as e:
            raise ConfigError(str(e)) from None
    read.said = list(said)
    return read


def _missing_manifests(missing: list[tuple[str, str]], total: int, shown: int = 3) -> str:
    """One line for every manifest that is not there (13 of 15 Common Voice locales not prepared yet: naming the
    first alone, each run found one more): data.train's counted, the first `shown` named."""
    mini = {_mini_folder(m) for _, m in missing}  # a fresh clone's configs/embedded: the command that builds them
    build = (f"llm-srt prepare mini --out {shlex.quote(str(mini.pop()))}" if len(mini) == 1 and None not in mini else
             "llm-srt prepare")
    if len(missing) == 1:
        key, manifest = missing[0]
        return f"{key}: {manifest}: no such manifest; build it with `{build}` or fix the path"
    train = [str(m) for key, m in missing if key == "data.train"]
    parts = [f"{key}: {m}: no such manifest" for key, m in missing if key != "data.train" or len(train) == 1]
    if len(train) > 1:
        parts.insert(0, f"data.train: {len(train)} of its {total} manifests are not there: "
                        f"{first_few(train, shown)}")
    return "; ".join(parts) + f"; build them with `{build}` or fix the paths"


def _mini_folder(manifest: str) -> Path | None:
    """The folder of a manifest `llm-srt prepare mini` writes (train, dev or test.jsonl) in the embedded mini corpus's
    own folders (data/mini, as configs/embedded name it, or prepare's default out): as the config names it."""
    from ..data.mini import DEFAULT_SIZES  # (its splits)
    from ..data.prepare import MINI_FOLDER, default_mini_dir

    folder = Path(manifest).parent
    if Path(manifest).name not in {f"{split}.jsonl" for split in DEFAULT_SIZES}:
        return None
    return folder if folder.absolute() in {MINI_FOLDER.absolute(), default_mini_dir()} else None


def check_start_finished(cfg: TrainConfig) -> None:
    """A fresh start from model.init_from naming a stage's final/ whose run holds a checkpoint past final/'s steps:
    that stage was run again (max_steps raised) and stopped, so final/ is the older model, not the one the stage
    trains towards. README's loop over the stages went on after such a stop and the next stage trained from the old
    final/ without a word. Not `check_before_start`'s: a curriculum resumes that stage before the next one starts."""
    init = cfg.model.init_from
    if not init or Path(init).name != FINAL:
        return
    run = Path(init).parent
    done = finished_at(run)
    newest = checkpoint.latest(run, log=quiet) if done is not None else None
    if newest is not None and newest.step > done:
        raise ConfigError(f"model.init_from: {init}: its stage was run on and stopped: it has a checkpoint at step "
                          f"{newest.step} ({newest.path}), newer than final/, which has {done} steps; finish that "
                          f"stage first (run its train command again: it resumes at step {newest.step}), or remove "
                          f"its checkpoints past step {done} to start from final/ as it is")


def _check_same_seed(cfg: TrainConfig, out: Path) -> None:
    """A resume cannot take another data.seed, allow_changes or not. The seed does not only shuffle the epochs: it
    picks which rows a task mix's smaller tasks and a weighted manifest's repeats are in each epoch's examples, and
    the dev rows, so the examples the saved position trained on are not the new seed's, and the rest of the epoch
    cannot be told (as it is after another batch size: `BucketBatchSampler.load_state_dict`). allow_changes went on
    and stopped in the data loader after the model had loaded. The newest checkpoint that stores its settings is
    read as stored (every checkpoint of a run shares its seed: none could be resumed with another). Nor can it take
    another data.start_step, which places a fresh start's data stream alone (a resume goes on from the checkpoint's
    position): with allow_changes it would go on as the checkpoint's run and record the new start as its own."""
    for _, folder in checkpoint._step_folders(out / "checkpoints"):
        settings = checkpoint.stored_settings(folder)
        if settings is None:
            continue
        seed = settings.get("data.seed")
        if seed is not None and seed != cfg.data.seed:
            raise ConfigError(f"{folder}: data.seed {cfg.data.seed} here, but this output_dir's run was seeded {seed} "
                              "(its data order, its task mix's draws and its dev rows): no resume can take another "
                              f"seed (allow_changes=true neither); set data.seed={seed} to resume, or start another "
                              f"output_dir with model.init_from={folder} to train on from its weights with seed "
                              f"{cfg.data.seed}")
        if (began := settings.get(resume.START_STEP, 0)) != cfg.data.start_step:  # (a record from before: step 0)
            raise ConfigError(f"{folder}: resuming with settings that differ from the checkpoint's: "
                              f"{resume.START_STEP} {began} -> {cfg.data.start_step}; no resume can take these (the "
                              "start places a fresh run's data stream, a resume goes on from the checkpoint's "
                              f"position: allow_changes=true neither). Set {resume.START_STEP}={began} to resume, or "
                              "choose another output_dir")
        return


def use_bf16(cfg: TrainConfig, device: torch.device, source: str | None = None) -> bool:
    """Whether the train step runs under bf16 autocast; precision: bf16 off CUDA is refused, naming `source` (the
    stage's YAML, where known: the paper configs write bf16, and a CPU host needs the command line's fp32)."""
    if cfg.precision == "bf16" and device.type != "cuda":
        where = f"{source}: " if source else ""
        raise ConfigError(f"{where}precision: bf16 autocast needs a CUDA device here, and this run's device is "
                          f"{device.type}; add precision=fp32 (or precision=auto) to the command line to train on it")
    if device.type != "cuda":
        return False  # auto: bf16 autocast where the GPU has native bfloat16 (not emulated: V100, T4)
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device_lib.native_bf16(device))
