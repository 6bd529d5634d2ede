"""The three-stage curriculum: ASR -> SMT -> SRT, each stage initialized from the previous stage's final folder.

    llm-srt curriculum configs/embedded                       # asr.yaml, smt.yaml, srt.yaml in that folder
    llm-srt curriculum configs/embedded --stages asr,srt      # the "w/o SMT" ablation
    llm-srt curriculum a.yaml b.yaml max_steps=10 srt:optim.lr=1e-5

A finished stage (its output_dir holds final/) is skipped on re-run; an interrupted one resumes from its newest
checkpoint. Overrides apply to every stage, or to one stage with a `stage:` prefix.
"""

from pathlib import Path

from ..errors import ConfigError
from .recipe import load_config, train

DEFAULT_STAGES = ("asr", "smt", "srt")


def stage_files(items: list[str], stages: list[str] | None) -> list[Path]:
    if len(items) == 1 and Path(items[0]).is_dir():
        folder = Path(items[0])
        names = stages or list(DEFAULT_STAGES)
        files = [folder / f"{name}.yaml" for name in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ConfigError(f"{folder}: no stage config {missing[0]}; expected {', '.join(n + '.yaml' for n in names)}")
        return files
    files = [Path(i) for i in items]
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{f}: no such stage config")
    return files


def run_curriculum(items: list[str], overrides: list[str] | None = None, stages: list[str] | None = None,
                   out_root: str | None = None, log=print) -> list[Path]:
    files = stage_files(items, stages)
    finals: list[Path] = []
    previous: Path | None = None
    for f in files:
        name = f.stem
        mine = [o.split(":", 1)[1] for o in overrides or [] if ":" in o.split("=", 1)[0] and o.startswith(name + ":")]
        common = [o for o in overrides or [] if ":" not in o.split("=", 1)[0]]
        init = [f"model.init_from={previous}"] if previous is not None else []
        out = [f"output_dir={Path(out_root) / name}"] if out_root else []
        cfg = load_config(f, common + init + out + mine)
        log(f"== stage {len(finals) + 1}/{len(files)}: {name} ({f}) -> {cfg.output_dir}"
            + (f", from {previous}" if previous else ""))
        previous = train(cfg, log=log)
        finals.append(previous)
    return finals


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
