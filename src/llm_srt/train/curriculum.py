"""The three-stage curriculum: ASR -> SMT -> SRT, each stage initialized from the previous stage's final folder.

    llm-srt curriculum configs/embedded                       # asr.yaml, smt.yaml, srt.yaml in that folder
    llm-srt curriculum configs/embedded --stages asr,srt --out-root runs/no_smt   # the "w/o SMT" ablation
    llm-srt curriculum a.yaml b.yaml max_steps=10 srt:optim.lr=1e-5

A finished stage (its output_dir holds final/) is skipped on re-run; an interrupted one resumes from its newest
checkpoint. Overrides apply to every stage, or to one stage with a `stage:` prefix (a prefix naming no stage that
runs is an error). Each stage needs its own output_dir: stages sharing one are refused before any runs. With
--out-root, a first stage that starts from another stage's output (smt.yaml's init_from: the asr stage's
output_dir/final) starts from OUT_ROOT/<that stage>/final instead, which must be there. A later stage whose YAML
starts it from a stage that runs here too starts from that one's final/ where it writes in this run (`--stages
asr,smt,srt,baseline`: the Baseline from asr; with `asr:output_dir=X`, from X/final); `model.init_from=X` for every
stage is the first one's start only. One whose YAML writes `init_from: null` is refused (say which start), and each
stage is checked against the model it starts from (adapter options, LoRA, encoder and LLM; a finished stage's
recorded start) before any trains.
"""

import difflib
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import yaml

from .. import paths, ranks
from ..config import MAX_CONFIG_BYTES, expand_variables, parse_yaml, short, split_items
from ..errors import ConfigError, LLMSRTError, first_few
from ..model.adapter import adapter_options
from . import checkpoint, resume
from .config import TrainConfig, load_config
from .final import (FINAL, check_same_start, final_weights_changed, finished_steps, init_record, is_finished,
                    quiet)
from .data import StageRows, from_rank0
from .parallel import host_group, init_distributed, release_groups
from .preflight import check_before_start, trained_to_end
from .recipe import train

DEFAULT_STAGES = ("asr", "smt", "srt")


@dataclass(frozen=True)
class Stage:
    name: str  # the YAML's stem: asr, smt, srt, ...
    file: Path  # the stage YAML
    config: TrainConfig  # as it will run: overrides applied, output_dir and model.init_from chained


def _likeness(a: str, b: str) -> float:
    """difflib's score of `a` against `b`, as `get_close_matches` ranks it (ties are named together)."""
    return difflib.SequenceMatcher(None, a, b).ratio()


def stage_files(items: list[str], stages: list[str] | None) -> list[Path]:
    """The stage YAMLs to run: `stages` (or asr, smt, srt) from a folder, or the files listed, in order (with
    `stages`, those of them whose stem is named)."""
    if not items:  # `llm-srt curriculum $CFG_DIR max_steps=3` with CFG_DIR unset ran nothing and said "done"
        raise ConfigError("no stage configs given: name a folder holding asr.yaml, smt.yaml and srt.yaml (e.g. "
                          "configs/embedded), or the stage YAMLs in order")
    if len(items) == 1 and Path(items[0]).is_dir():
        folder = Path(items[0])
        names = stages or list(DEFAULT_STAGES)
        known = [n for n in names if n in DEFAULT_STAGES]  # each stage starts from the last: asr from srt's
        if known != sorted(known, key=DEFAULT_STAGES.index) or "asr" in names[1:]:  # (or baseline's) weights is no
            #   curriculum
            raise ConfigError(f"--stages {','.join(names)}: {' -> '.join(DEFAULT_STAGES)} run in that order, each "
                              f"from the last, asr first; list them so")
        files = [folder / f"{name}.yaml" for name in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:  # (a typo in --stages was "expected" again: what the folder holds, and the closest of it)
            held = sorted(f.stem for f in folder.glob("*.yaml") if f.is_file())
            name = Path(missing[0]).stem
            close = difflib.get_close_matches(name, [h for h in held if h not in names], n=3)
            best = [c for c in close if _likeness(c, name) == _likeness(close[0], name)]
            meant = f" (did you mean {' or '.join(best)}?)" if best else ""
            holds = f"it holds {first_few([h + '.yaml' for h in held], 8)}" if held else "it holds no .yaml file"
            raise ConfigError(f"{folder}: no stage config {missing[0]}{meant}; {holds}")
        return files
    files = [Path(i) for i in items]
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{f}: no such stage config")
    if stages:
        unknown = [s for s in stages if s not in {f.stem for f in files}]
        if unknown:
            raise ConfigError(f"--stages names {unknown[0]}, but the stage configs given are "
                              f"{', '.join(f.stem for f in files)}; name stages by their files' stems")
        files = [f for f in files if f.stem in stages]
        if [f.stem for f in files] != [s for s in stages if s in {f.stem for f in files}]:
            raise ConfigError(f"--stages {','.join(stages)} lists the stages in another order than the configs given "
                              f"({', '.join(f.stem for f in files)}), which run in the order given; list them in one "
                              "order")
    return files


def _check_prefixes(overrides: list[str], names: list[str]) -> None:
    """A `stage:key=value` override whose stage is not run would silently do nothing: an error."""
    for o in overrides:
        key = o.split("=", 1)[0]
        if ":" in key and key.split(":", 1)[0] not in names:
            raise ConfigError(f"override {o}: no stage {key.split(':', 1)[0]!r} runs here; the stages are "
                              f"{', '.join(names)} (prefix with one of them, or drop the prefix for all)")


def _check_folders(result: list[Stage]) -> None:
    """Each stage writes its own output_dir and starts from another folder than its own final/ (a shared folder
    would make the later stages look finished, and hand back the first stage's model), and all have one collective
    timeout (a later stage's was ignored)."""
    seen: dict[Path, str] = {}
    for stage in result:
        out = Path(stage.config.output_dir).resolve()
        if out in seen:
            raise ConfigError(f"stages {seen[out]} and {stage.name} both write {stage.config.output_dir}; give each "
                              "stage its own output_dir (or use --out-root)")
        seen[out] = stage.name
        first = result[0]
        if stage.config.distributed_timeout_min != first.config.distributed_timeout_min:
            raise ConfigError(f"stage {stage.name}: distributed_timeout_min {stage.config.distributed_timeout_min:g}, "
                              f"stage {first.name}'s {first.config.distributed_timeout_min:g}: one process group "
                              "serves every stage, made with the first stage's timeout; give every stage the same")
        init = stage.config.model.init_from
        if init and Path(init).resolve() == out / FINAL:
            raise ConfigError(f"stage {stage.name}: model.init_from {init} is its own final model; start it from the "
                              "previous stage's output_dir/final")


def _sets(overrides: list[str], key: str) -> bool:
    """Whether one of `overrides` sets the dotted `key`: as `key=...`, or within a mapping given to a key above it
    (`model={init_from: x}` sets model.init_from as much as `model.init_from=x` does)."""
    for item in overrides:
        name, _, value = item.partition("=")
        name = name.strip()
        if name == key:
            return True
        if not key.startswith(name + "."):
            continue
        try:
            node = parse_yaml(value)
        except (yaml.YAMLError, RecursionError):  # load_config has read it already: not reached
            continue
        for part in key[len(name) + 1:].split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return True
    return False


def _written(f: Path, key: str) -> str | None:
    """The text the stage YAML `f` gives the dotted `key`, as load_config reads it (${VAR} and ~/ expanded) but
    without the command line's overrides; None where it gives none, or not so (a variable this run does not set)."""
    try:
        if not f.is_file() or f.stat().st_size > MAX_CONFIG_BYTES:
            return None
        node = parse_yaml(f.read_text(encoding="utf-8"))
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and node.strip():
            return os.path.expanduser(expand_variables(node, str(f), key))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError, ConfigError):
        pass
    return None


def _outputs_of(init: str, stage_file: Path) -> list[str]:
    """The stems of the stage YAMLs beside `stage_file` whose output_dir's final/ is `init` (smt.yaml's init_from is
    the asr stage's output: ["asr"]). Only the YAMLs' top-level output_dir is read (a sibling may need variables this
    run does not set)."""
    target = Path(init).resolve()
    if target.name != FINAL:
        return []
    found = []
    for f in sorted([*stage_file.parent.glob("*.yaml"), *stage_file.parent.glob("*.yml")]):
        out = None if f == stage_file else _written(f, "output_dir")  # ${RUNS}/asr as load_config reads it
        if out is not None and Path(out).resolve() / FINAL == target:
            found.append(f.stem)
    return found


def _first_start(cfg: TrainConfig, f: Path, out_root: str | Path, user: list[str]) -> TrainConfig:
    """The first stage under --out-root: a model.init_from that is another stage's output in the configs (its
    output_dir/final) is that stage's under OUT_ROOT, which must be finished: else `--stages asr --out-root R`, then
    `--stages smt,srt --out-root R` trained SMT from the configs' ASR model, not R's. An init_from the user's
    overrides set is kept as given."""
    init = cfg.model.init_from
    if not init or _sets(user, "model.init_from"):
        return cfg
    before = _outputs_of(init, f)
    done = [b for b in before if is_finished(Path(out_root) / b)]
    if len(done) == 1:
        return replace(cfg, model=replace(cfg.model, init_from=str(Path(out_root) / done[0] / FINAL)))
    if not before:
        return cfg
    if done:  # two stage YAMLs with one output_dir, both run under OUT_ROOT: which is meant is not told
        raise ConfigError(f"stage {f.stem} ({f}): model.init_from {init} is the output of stages {', '.join(before)}, "
                          f"and under --out-root {out_root} {', '.join(done)} are finished; choose the start "
                          f"explicitly: {f.stem}:model.init_from={Path(out_root) / done[0] / FINAL}")
    raise ConfigError(f"stage {f.stem} ({f}): model.init_from {init} is the {before[0]} stage's output; under "
                      f"--out-root {out_root} that stage writes {Path(out_root) / before[0]}, which holds no finished "
                      f"model: run --stages {before[0]} with this --out-root first, or choose the start explicitly: "
                      f"{f.stem}:model.init_from={init}")


def _chained_to(k: int, files: list[Path], outputs: list[Path], init: str | None) -> int | None:
    """The stage before stage `k` that its YAML's start `init` is the output of (`outputs`: each stage's
    output_dir/final as its YAML writes it), or None: it starts from the previous stage. `--stages
    asr,smt,srt,baseline` trained the Baseline (from asr/final in its YAML) on the finished SRT model, and still did
    with `asr:output_dir=X` or `model.init_from=X` given (the one moved asr's output, the other hid the YAML's
    start)."""
    if not init:
        return None
    found = [j for j, out in enumerate(outputs) if j != k and out == Path(init).resolve()]
    before, after = [j for j in found if j < k], [j for j in found if j > k]
    if len(before) > 1:
        raise ConfigError(f"stage {files[k].stem} ({files[k]}): model.init_from {init} is the output of stages "
                          f"{', '.join(files[j].stem for j in before)} in their configs; choose the start "
                          f"explicitly: {files[k].stem}:model.init_from=...")
    if not before and after:
        raise ConfigError(f"stage {files[k].stem} ({files[k]}): model.init_from {init} is the output of stage "
                          f"{files[after[0]].stem}, which runs after it here; list {files[after[0]].stem} before "
                          f"{files[k].stem}")
    return before[0] if before else None


def _writes_fresh_start(f: Path) -> bool:
    """Whether the stage YAML `f` writes `init_from: null` under model (ablation_no_asr.yaml: SMT from a fresh
    adapter), rather than leaving the start to the curriculum. load_config has read it already."""
    model = (parse_yaml(f.read_text(encoding="utf-8")) or {}).get("model")
    return isinstance(model, dict) and "init_from" in model and model["init_from"] is None


def _load_stage(f: Path, overrides: list[str]) -> TrainConfig:
    """`load_config`, its error naming the stage where it names no file (an override's own error, e.g. an empty
    `srt:model.lora=`, is the same text in every stage)."""
    try:
        return load_config(f, overrides)
    except ConfigError as e:
        if str(f) in str(e):
            raise
        raise ConfigError(f"stage {f.stem} ({f}): {e}") from e


def plan(items: list[str], overrides: list[str] | None = None, stages: list[str] | None = None,
         out_root: str | Path | None = None, adjust: Callable[[TrainConfig], TrainConfig] | None = None
         ) -> list[Stage]:
    """Every stage's config before any stage runs (a bad one stops the curriculum before the first step).

    Per stage: its YAML with the user's `key=value` overrides (all stages, then `stage:key=value`), then `adjust`
    (a caller's typed change, e.g. the demo's corpus), then, composed with `dataclasses.replace`, the output folder
    OUT_ROOT/<stage> and model.init_from = the final/ of the stage its YAML starts it from where that stage runs
    here (baseline.yaml's: the asr stage's, where asr writes in this run), else of the previous stage (unless a
    stage override sets them; `model.init_from=X` for all is the first stage's start alone; the first stage's
    init_from under OUT_ROOT: `_first_start`)."""
    files = stage_files(items, stages)
    _check_prefixes(overrides or [], [f.stem for f in files])
    common = [o for o in overrides or [] if ":" not in o.split("=", 1)[0]]
    if out_root is not None and _sets(common, "output_dir"):  # it was silently replaced by OUT_ROOT/<stage>
        given = next(o for o in common if o.split("=", 1)[0].strip() == "output_dir")
        raise ConfigError(f"{short(given)[1:-1]} and --out-root {out_root} both say where the stages write; give "
                          "--out-root alone (each stage writes OUT_ROOT/<stage>), or STAGE:output_dir=... for one "
                          "stage")
    mine = {f: [o.split(":", 1)[1] for o in overrides or [] if ":" in o.split("=", 1)[0]
                and o.startswith(f.stem + ":")] for f in files}
    loaded = [_load_stage(f, common + mine[f]) for f in files]
    outputs = [Path(_written(f, "output_dir") or cfg.output_dir).resolve() / FINAL  # as the YAMLs write them: an
               for f, cfg in zip(files, loaded)]  # override or --out-root moves a stage, not the starts naming it
    result: list[Stage] = []
    for k, (f, cfg) in enumerate(zip(files, loaded)):
        name = f.stem
        configured = cfg.model.init_from
        start = _chained_to(k, files, outputs, _written(f, "model.init_from"))
        if adjust is not None:
            cfg = adjust(cfg)
        if out_root is not None and not _sets(mine[f], "output_dir"):
            cfg = replace(cfg, output_dir=str(Path(out_root) / name))
        if not result and out_root is not None and cfg.model.init_from == configured:  # not a start `adjust` chose
            cfg = _first_start(cfg, f, out_root, common + mine[f])
        if result and not _sets(mine[f], "model.init_from"):
            previous = Path(result[start if start is not None else -1].config.output_dir) / FINAL
            if _writes_fresh_start(f):  # (a model.init_from for all stages is the first one's start, not this one's)
                raise ConfigError(f"stage {name} ({f}): its config starts it from a fresh adapter (model.init_from: "
                                  f"null), and after stage {result[-1].name} it would start from {previous}; run it "
                                  f"first or alone, or say which: {name}:model.init_from={previous} or "
                                  f"{name}:model.init_from=null")
            cfg = replace(cfg, model=replace(cfg.model, init_from=str(previous)))
        if not any(cfg.data.manifests):  # a stage without data would fail only once its model had loaded
            raise ConfigError(f"stage {name} ({f}): data.train is empty; give its training manifest (e.g. "
                              f"{name}:data.train=data/mini/train.jsonl)")
        result.append(Stage(name, f, cfg))
    _check_folders(result)
    return result


def _check_fit(stages: list[Stage], world: int = 1) -> None:
    """Each stage fits the model it starts from, and a finished one was trained from the start planned for it, before
    any stage trains: these were refused at the stage's own turn, after the ones before it had trained (an SMT stage
    with 8 adapter queries after an ASR stage with 4; `curriculum ablation_no_asr.yaml srt.yaml` after the main
    curriculum, whose srt/final was trained from smt/final). `world`: this run's ranks."""
    shapes: list[tuple[str, dict] | None] = []  # each stage's trained adapter: (kind, options); None: not known
    how: list[str | None] = []  # how each stage changes its final/ in this run (`_trains`)
    for k, stage in enumerate(stages):
        m, init = stage.config.model, stage.config.model.init_from
        j = next((j for j in reversed(range(k)) if init and Path(init).resolve()
                  == Path(stages[j].config.output_dir).resolve() / FINAL), None)
        start = None if j is None else stages[j]
        if start is not None:
            shapes.append(_fits(stage, start, shapes[j]))
        elif init:
            shapes.append(_saved_adapter(Path(init)))
        else:
            shapes.append((m.adapter, {n: d for n, (_, d) in adapter_options(m.adapter).items()} | m.adapter_kwargs))
        _check_start_record(stage, start, None if j is None else how[j])
        how.append(_trains(stage, world, j is not None and how[j] is not None))


def _saved_adapter(init: Path) -> tuple[str, dict] | None:
    """The adapter a model folder holds (None where it is not there yet or cannot be read: its stage says why)."""
    from ..model.speech_llm import read_config

    try:
        saved = read_config(init)
    except LLMSRTError:
        return None
    kind, options = saved.get("adapter"), saved.get("adapter_kwargs")
    return (kind, options) if isinstance(kind, str) and isinstance(options, dict) else None


def _fits(stage: Stage, start: Stage, trained: tuple[str, dict] | None) -> tuple[str, dict] | None:
    """`stage` starts from `start`'s final/, whose adapter is `trained` (the one its own start trained, or fresh):
    the adapter options `stage` gives must be that adapter's (`config._check_adapter_matches`, the options `start`
    leaves out at their defaults), its LoRA of `start`'s r on at least `start`'s target_modules where `start` has
    LoRA (`llm.load_lora_state`: another r, or a module the LoRA weights have no layer for, is refused; added ones
    start afresh, alpha and dropout are free), and both run on one encoder and LLM (by their weights, as
    `SpeechLLM.from_pretrained` compares them: a copy at another path is the same). Returns the adapter `stage`
    trains."""
    m, before = stage.config.model, start.config.model

    def refuse(what: str, fix: str) -> None:
        raise ConfigError(f"stage {stage.name} ({stage.file}) starts from stage {start.name}'s final/, but {what}; "
                          f"{fix}")

    if trained is not None and m.adapter_kwargs and m.adapter != trained[0]:
        refuse(f"model.adapter is {m.adapter} in {stage.name}, {trained[0]} in {start.name}",
               "set the same adapter and options or drop them")
    for key, value in m.adapter_kwargs.items() if trained is not None else ():
        if trained[1].get(key) is not None and trained[1][key] != value:  # None: set by the LLM's width (mlp_hidden)
            refuse(f"model.adapter_kwargs.{key} is {value!r} in {stage.name}, {trained[1][key]!r} in {start.name}",
                   f"make them match or drop the key from {stage.name}")
    if before.lora is not None and m.lora is None:
        refuse(f"{start.name} has model.lora (its final/ holds LoRA weights) and {stage.name} model.lora: null",
               f"give {stage.name} {start.name}'s LoRA options")
    if before.lora is not None and (m.lora.r != before.lora.r
                                    or not set(before.lora.target_modules) <= set(m.lora.target_modules)):
        refuse(f"model.lora is r {m.lora.r} on {', '.join(m.lora.target_modules)} in {stage.name}, r "
               f"{before.lora.r} on {', '.join(before.lora.target_modules)} in {start.name}",
               f"give {stage.name} r {before.lora.r} and at least {start.name}'s target_modules (added ones start "
               "afresh)")
    for key in ("encoder", "llm"):
        mine, theirs = (os.path.realpath(paths.absolute_model(getattr(c, key))) for c in (m, before))
        if mine != theirs and not _same_weights(getattr(m, key), getattr(before, key), key):
            refuse(f"model.{key} is {getattr(m, key)} in {stage.name}, {getattr(before, key)} in {start.name} (the "
                   f"adapter learns one {key}'s output)", f"give both the same model.{key}")
    return trained


def _same_weights(a: str, b: str, kind: str) -> bool:
    """Whether the encoder / LLM folders `a` and `b` hold the same weights (`paths.weights_identity`, which a trained
    model records and loading compares); False where either cannot be read (the paths differ: not known the same)."""
    mine = paths.weights_identity(a, kind)
    return mine is not None and mine == paths.weights_identity(b, kind)


def _trains(stage: Stage, world: int, start_trains: bool) -> str | None:
    """How `stage` changes its final/ in this run (`final.finished_state` at its turn): it trains again (no finished
    model there, and no checkpoint to write the same one again from: `_writes_same_final`), trains further (a
    finished one whose max_steps was raised), or writes final/ again from its checkpoints (final_weights changed);
    None where its finished model is handed back as it is. `start_trains`: its start changes its final/ here."""
    cfg, out = stage.config, Path(stage.config.output_dir)
    if not is_finished(out):
        return None if not start_trains and _writes_same_final(cfg, out, world) else "trains again"
    done = finished_steps(out)
    if done is not None and done < cfg.max_steps:
        return f"trains further (max_steps {cfg.max_steps}, its final/ has {done})"
    if done == cfg.max_steps and final_weights_changed(cfg, out, quiet):
        return f"writes its final/ again (final_weights: {cfg.final_weights})"
    return None


def _writes_same_final(cfg: TrainConfig, out: Path, world: int) -> bool:
    """Whether a stage without final/ resumes at max_steps and writes the final/ it had again, training no step: its
    newest checkpoint is at max_steps, with this run's settings as its resume compares them (on `world` ranks) and
    final_weights the same. A run copied with its asr/final removed refused the finished SMT after it as trained
    from a start that "trains again". Any doubt (no settings stored, any difference, one allow_changes lets through
    too) is "it trains"."""
    newest = checkpoint.latest(out, log=quiet)
    if newest is None or newest.step != cfg.max_steps:
        return False
    saved = checkpoint.stored_settings(newest.path)
    if saved is None or checkpoint.stored_config(newest.path).get("final_weights", "last") != cfg.final_weights:
        return False
    return not resume.changes(saved, resume.run_settings(cfg, world), cfg.model.init_from)


def _check_start_record(stage: Stage, start: Stage | None, how: str | None) -> None:
    """A finished stage is handed back only when it was trained from the start planned now (`final.check_same_start`
    at its turn): checked here by the weights where that start is there already and stays so; where `start` changes
    its final/ in this run (`_trains`), the finished stage cannot have been trained from it, and was refused at its
    turn, after `start` had trained (the main curriculum again with smt/ removed to train it anew). So is an
    interrupted stage's checkpoint whose resume compares its start's weights (as its turn does, without
    allow_changes): ASR finished, SMT interrupted, then asr:max_steps raised trained ASR further, over asr/final, and
    only then refused to resume SMT, when its start could no longer be set back. `how`: `_trains` of `start`."""
    cfg, out = stage.config, Path(stage.config.output_dir)
    if not is_finished(out):
        if start is None or cfg.allow_changes or how is None:
            return
        newest = checkpoint.latest(out, log=quiet)
        if newest is not None and resume.INIT_KEY in (checkpoint.stored_settings(newest.path) or {}):
            raise ConfigError(f"stage {stage.name} ({stage.file}): {newest.path} resumes only from the start it was "
                              f"trained from, and its start, stage {start.name}'s final/, {how} in this run, so the "
                              f"resume would be refused once {start.name} had trained; remove {out / 'checkpoints'} "
                              "or use another output_dir")
        return
    if how is None:
        try:
            check_same_start(cfg, out)
        except LLMSRTError as e:
            raise ConfigError(f"stage {stage.name} ({stage.file}): {str(e).removeprefix(f'[{cfg.stage}] ')}") from None
        return
    if (record := init_record(out)) is None:
        return  # a final/ from before the record: not checked (as at its turn)
    was, _ = record
    raise ConfigError(f"stage {stage.name} ({stage.file}): {out / FINAL} was trained from {was or 'scratch'}, and its "
                      f"start, stage {start.name}'s final/, {how} in this run, so {out / FINAL} cannot be this "
                      f"start's; remove {out / FINAL} or use another output_dir")


def run_stages(stages: list[Stage], log=print) -> list[Path]:
    """Train the planned stages in order (a finished one is skipped, an interrupted one resumes), every one checked
    before the first trains (`_check_stages`); the first that trains takes the rows those checks read."""
    read = _check_stages(stages)
    finals: list[Path] = []
    for k, stage in enumerate(stages):
        cfg = stage.config
        log(f"== stage {k + 1}/{len(stages)}: {stage.name} ({stage.file}) -> {cfg.output_dir}"
            + (f", from {cfg.model.init_from}" if cfg.model.init_from else ""))
        try:
            rows = read.pop(k, None)  # (not held past its stage)
            finals.append(train(cfg, log=log) if rows is None else train(cfg, log=log, rows=rows))
        except BaseException as e:  # cli's last line names the stage that stopped, and those finished before it
            e.curriculum_stage = (stage.name, tuple(s.name for s in stages[:k]))
            raise
    return finals


def _check_stages(stages: list[Stage]) -> dict[int, StageRows]:
    """Every stage's manifests, models and precision (`check_before_start`), then how the stages fit together
    (`_check_fit`). Under torchrun the ranks join the process group first (the first stage's `train` finds it joined)
    and stop together: the first checks agreed over every rank, the fit as rank 0 reads the stages' folders. Each
    rank checked alone before any group existed: a folder missing on one node stopped that node, and the others went
    on into the first stage's process group, to wait there until the timeout. Returns the rows rank 0 read of the
    first stage that trains (by its index; those before it are finished: `trained_to_end`), for it to train on: it
    read its manifests again at once (minutes on a large one). A later stage's are let go (not held in memory while
    the ones before it train): it reads them at its turn, as they are then."""
    if not stages:
        return {}
    d, _ = init_distributed(stages[0].config.distributed_timeout_min, stages[0].config.device)

    def each() -> dict[int, StageRows]:
        kept, past = {}, False  # past: the first stage that trains has been checked
        for k, stage in enumerate(stages):
            try:
                rows = check_before_start(stage.config, manifests=d.rank == 0)  # (rank 0 alone reads the manifests)
            except ConfigError as e:
                raise ConfigError(f"stage {stage.name} ({stage.file}): {e}") from None
            if rows is not None and not past:
                kept[k] = rows
            past = past or rows is not None or not trained_to_end(stage.config)
        return kept

    kept = ranks.on_every_rank(each, d.rank, d.world, host_group(d), name_rank=True)
    from_rank0(d, lambda: _check_fit(stages, d.world))
    return kept


def run_curriculum(items: list[str], overrides: list[str] | None = None, stages: list[str] | None = None,
                   out_root: str | Path | None = None, log=print,
                   adjust: Callable[[TrainConfig], TrainConfig] | None = None) -> list[Path]:
    return run_stages(plan(items, overrides, stages, out_root, adjust), log=log)


def add_arguments(parser) -> None:
    parser.add_argument("items", nargs="+", help="a folder with asr/smt/srt.yaml, or stage YAMLs in order, then "
                        "key=value overrides (stage:key=value for one stage)")
    parser.add_argument("--stages", default=None, help="stage names to run (from the folder, or of the YAMLs given), "
                        "e.g. asr,srt")
    parser.add_argument("--out-root", default=None, help="write each stage to OUT_ROOT/<stage> (instead of the "
                        "configs' output_dir); a first stage configured to start from another stage's output starts "
                        "from OUT_ROOT/<that stage>/final")


def main(args) -> int:
    configs, overrides = split_items(args.items)
    if args.stages is not None and not args.stages.strip():  # `--stages "$STAGES"` unset ran every stage
        raise ConfigError("--stages is empty (an unset shell variable?); name the stages, e.g. --stages smt,srt, or "
                          "leave the option out to run them all")
    stages = args.stages.split(",") if args.stages is not None else None
    say = print if int(os.environ.get("RANK") or 0) == 0 else lambda *_: None  # under torchrun, rank 0 alone (every
    try:
        finals = run_curriculum(configs, overrides, stages, args.out_root, log=say)  # rank printed each stage's lines)
    finally:  # also a run refused or stopped under torchrun: its groups left to the interpreter aborted a rank
        release_groups()
    say("curriculum done: " + " -> ".join(str(p) for p in finals))
    return 0
