"""What `llm-srt demo` (demo.py) refuses, and when: before any work, a copy of the package without the repository's
configs and a dtype it cannot train in; before a run trains, a --work whose runs were trained with other steps or
other settings. Each refusal names the demo's own flags: its runs' configs are not the user's to edit."""

import re
from pathlib import Path

from .errors import LLMSRTError

# The training's refusals of an output_dir whose run had other settings (train/final.py, train/recipe.py,
# train/preflight.py) -> what changed, for the demo's one line: they advise allow_changes=true or another output_dir,
# neither of which a `llm-srt demo` user can give.
_OTHER_SETTINGS = (
    (re.compile(r"(?:finished with other settings|differ from the checkpoint's|the shapes of the trained weights): "
                r"(.+?)(?:\. Choose another output_dir|\. Set them back|; no resume can take these)"),
     lambda m: m.group(1)),
    (re.compile(r"data\.seed (\S+) here, but this output_dir's run was seeded (\S+) "),
     lambda m: f"data.seed {m.group(2)} -> {m.group(1)}"),
    (re.compile(r"was trained from (.+?), but model\.init_from is now (.+?) \(other weights\)"),
     lambda m: f"model.init_from {m.group(2)}: other weights than it was trained from ({m.group(1)})"),
    # a stage cut short (checkpoints, no final/) whose budget was lowered since (train/recipe.py's resume)
    (re.compile(r"the newest checkpoint is at step (\d+), past max_steps (\d+);"),
     lambda m: f"a stage cut short at step {m.group(1)}, past the demo's budget for it of {m.group(2)} steps"),
)


def require_clone(configs: Path) -> None:
    """The demo reads the repository's configs/ and checkpoints/, which are not package data: from a copy of the package
    alone it failed minutes in, telling users to `git checkout` files they never had."""
    if not configs.is_dir():
        raise LLMSRTError(f"{configs}: not found; llm-srt demo runs from a clone of the repository (make setup "
                          "installs it editable)")


def demo_placement(dtype: str = "auto", log=print):
    """Where the demo runs: `auto` as every command resolves it (bfloat16 on a GPU, float32 on the CPU), except on a
    CPU with AMX, where the demo trains and evaluates in bfloat16 (measured on README's 2-core Xeon: 13-14.5 min cold
    against 20 in float32, the same verdicts). int8 and float16 are refused before any work: the demo trains, and
    training takes neither (float16 was refused by the first stage's config, after the corpus was built); so is an
    unknown dtype, with the demo's own choices."""
    import torch

    from . import device as device_lib

    if (dtype or "auto").strip().lower() not in ("auto", *device_lib.DTYPES):  # before resolve, whose list of
        #   dtypes has float16 and int8, refused below
        raise LLMSRTError(f"--dtype {dtype}: unknown dtype; the demo takes auto, float32 or bfloat16 (or fp32, bf16)")
    if device_lib.is_int8(dtype):
        raise LLMSRTError("--dtype int8: the demo trains, and int8 layers have no gradient; use float32 or bfloat16 "
                          "(int8 is for translate, evaluate and serve)")
    if device_lib.DTYPES.get((dtype or "auto").strip().lower()) is torch.float16:
        raise LLMSRTError(f"--dtype {dtype}: the demo trains, and training takes bfloat16 or float32 frozen weights; "
                          "use auto, float32 or bfloat16 (float16 is for translate, evaluate and serve)")
    placement = device_lib.resolve("auto", dtype, training=True)
    if (dtype or "auto").strip().lower() == "auto" and placement.device.type == "cpu" and device_lib.cpu_has_amx():
        placement = device_lib.resolve("cpu", "bfloat16")
        log("this CPU has AMX (amx_bf16): the demo runs in bfloat16 (on README's 2-core Xeon with AMX, 1.4x as fast "
            "as in float32); --dtype float32 for float32")
    return placement


def run_with_budget(stages: list, log=print) -> list[Path]:
    """`run_stages`, refused first where a stage's model was trained for more steps than the demo's budget for it:
    a finished stage is reused when it has at least as many (train.recipe), so after a config's max_steps was lowered
    a run kept more steps than the others' equal budget, without a word (and later stages trained from it). A run
    in the stages' folder (--work) trained with other settings (another --dtype, --seed, --data or --asr), or cut
    short at a step past its budget lowered since, is refused in the demo's terms: the training's own refusal advises
    allow_changes=true, a higher max_steps or another output_dir."""
    from .train.curriculum import run_stages
    from .train.final import finished_at, is_finished

    for k, stage in enumerate(stages):
        out, asked = stage.config.output_dir, stage.config.max_steps
        done = finished_at(out)
        if done is not None and done > asked:
            later = [s.config.output_dir for s in stages[k:]]
            raise LLMSRTError(f"{out}: trained for {done} steps, and the demo's budget for it is {asked}: the runs' "
                              f"budgets would differ; remove {', '.join(later)} to train again")
    try:
        return run_stages(stages, log=log)
    except LLMSRTError as e:
        changed = next((say(m) for pattern, say in _OTHER_SETTINGS if (m := pattern.search(str(e)))), None)
        if changed is None:
            raise
        work = Path(stages[0].config.output_dir).parent
        runs = [str(d) for d in _refused(stages, e) if is_finished(d) or (d / "checkpoints").is_dir()]
        raise LLMSRTError(f"{work} holds runs trained with other settings ({changed}): give another --work, or remove "
                          f"{', '.join(runs)}") from None


def _refused(stages: list, e: LLMSRTError) -> list[Path]:
    """The run folders a refusal of other settings asks to remove: the stage it refused (the one training,
    `curriculum_stage`, else the one whose folder its line names) and the stages after it, trained from it. Every run
    in --work was named, so an old runs/demo/srt (from before data.start_step) cost the other runs' hours too."""
    folders = [Path(s.config.output_dir) for s in stages]
    name = getattr(e, "curriculum_stage", (None,))[0]
    named = [k for k, (s, out) in enumerate(zip(stages, folders))
             if getattr(s, "name", None) == name or re.search(rf"(?<![\w/.-]){re.escape(str(out))}(?![\w.-])", str(e))]
    if named:
        return folders[named[0]:]
    work = folders[0].parent  # a line naming no stage's folder: every run there
    return sorted(d for d in work.iterdir() if d.is_dir())
