"""The three-stage curriculum: ASR -> SMT -> SRT, each stage initialized from the previous stage's final folder.

    llm-srt curriculum configs/embedded                       # asr.yaml, smt.yaml, srt.yaml in that folder
    llm-srt curriculum configs/embedded --stages asr,srt      # the "w/o SMT" ablation
    llm-srt curriculum a.yaml b.yaml max_steps=10 srt:optim.lr=1e-5

A finished stage (its output_dir holds final/) is skipped on re-run; an interrupted one resumes from its newest
checkpoint. Overrides apply to every stage, or to one stage with a `stage:` prefix.
"""

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from .recipe import FINAL, TrainConfig, load_config, train

DEFAULT_STAGES = ("asr", "smt", "srt")


@dataclass(frozen=True)
class Stage:
    name: str  # the YAML's stem: asr, smt, srt, ...
    file: Path  # the stage YAML
    config: TrainConfig  # as it will run: overrides applied, output_dir and model.init_from chained


def stage_files(items: list[str], stages: list[str] | None) -> list[Path]:
    if len(items) == 1 and Path(items[0]).is_dir():
        folder = Path(items[0])
        names = stages or list(DEFAULT_STAGES)
        files = [folder / f"{name}.yaml" for name in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            expected = ", ".join(n + ".yaml" for n in names)
            raise ConfigError(f"{folder}: no stage config {missing[0]}; expected {expected}")
        return files
    files = [Path(i) for i in items]
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{f}: no such stage config")
    return files


def plan(items: list[str], overrides: list[str] | None = None, stages: list[str] | None = None,
         out_root: str | Path | None = None, adjust: Callable[[TrainConfig], TrainConfig] | None = None
         ) -> list[Stage]:
    """Every stage's config before any stage runs (a bad one stops the curriculum before the first step).

    Per stage: its YAML with the user's `key=value` overrides (all stages, then `stage:key=value`), then `adjust`
    (a caller's typed change, e.g. the demo's corpus), then, composed with `dataclasses.replace`, the output folder
    OUT_ROOT/<stage> and model.init_from = the previous stage's final/ (unless a stage override sets them)."""
    result: list[Stage] = []
    for f in stage_files(items, stages):
        name = f.stem
        mine = [o.split(":", 1)[1] for o in overrides or [] if ":" in o.split("=", 1)[0] and o.startswith(name + ":")]
        common = [o for o in overrides or [] if ":" not in o.split("=", 1)[0]]
        cfg = load_config(f, common + mine)
        if adjust is not None:
            cfg = adjust(cfg)
        own = {o.split("=", 1)[0].strip() for o in mine}
        if out_root is not None and "output_dir" not in own:
            cfg = replace(cfg, output_dir=str(Path(out_root) / name))
        if result and "model.init_from" not in own:
            previous = Path(result[-1].config.output_dir) / FINAL
            cfg = replace(cfg, model=replace(cfg.model, init_from=str(previous)))
        result.append(Stage(name, f, cfg))
    return result


def run_stages(stages: list[Stage], log=print) -> list[Path]:
    """Train the planned stages in order (a finished one is skipped, an interrupted one resumes)."""
    finals: list[Path] = []
    for k, stage in enumerate(stages):
        cfg = stage.config
        log(f"== stage {k + 1}/{len(stages)}: {stage.name} ({stage.file}) -> {cfg.output_dir}"
            + (f", from {cfg.model.init_from}" if k and cfg.model.init_from else ""))
        finals.append(train(cfg, log=log))
    return finals


def run_curriculum(items: list[str], overrides: list[str] | None = None, stages: list[str] | None = None,
                   out_root: str | Path | None = None, log=print,
                   adjust: Callable[[TrainConfig], TrainConfig] | None = None) -> list[Path]:
    return run_stages(plan(items, overrides, stages, out_root, adjust), log=log)


def add_arguments(parser) -> None:
    parser.add_argument("items", nargs="+", help="a folder with asr/smt/srt.yaml, or stage YAMLs in order, then "
                        "key=value overrides (stage:key=value for one stage)")
    parser.add_argument("--stages", default=None, help="stage names to run from the folder, e.g. asr,smt,srt")
    parser.add_argument("--out-root", default=None, help="write each stage to OUT_ROOT/<stage> (instead of the "
                        "configs' output_dir)")


def main(args) -> int:
    configs = [i for i in args.items if "=" not in i]
    overrides = [i for i in args.items if "=" in i]
    stages = args.stages.split(",") if args.stages else None
    finals = run_curriculum(configs, overrides, stages, args.out_root)
    print("curriculum done: " + " -> ".join(str(p) for p in finals))
    return 0
