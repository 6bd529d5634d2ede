"""`llm-srt evaluate`: run one or more systems over a test manifest and write the paper's report.

    llm-srt evaluate --model curriculum=runs/embedded/srt/final --model cascade \
        --manifest data/mini/test.jsonl --out reports/mini

Each manifest row (an utterance-direction) is translated; failures are listed, never abort the rest. Under
torchrun the rows are sharded across ranks and rank 0 writes the report.
"""

import json
import os
from pathlib import Path

from tqdm import tqdm

from ..data.manifest import Row, read_manifest
from ..errors import LLMSRTError
from ..model.decoding import DecodingOptions
from ..prompts import Task
from .report import UtteranceResult, build_report, format_table, load_results, score_system, write_report


def model_task(model: str) -> Task:
    """The task a model folder was trained for (SRT unless its last stage was direct S2TT / ASR)."""
    cfg = Path(model) / "train_config.json"
    if cfg.is_file():
        tasks = json.loads(cfg.read_text()).get("data", {}).get("tasks", {})
        if tasks:
            main = Task(max(tasks, key=tasks.get))
            return main if main in (Task.S2TT, Task.ASR) else Task.SRT
    return Task.SRT


def run_system(translator, rows: list[Row], task: Task, options: DecodingOptions, batch_size: int,
               desc: str = "evaluate") -> list[UtteranceResult]:
    """Translate every row, grouped by direction; one UtteranceResult per row, in row order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r.src_lang, r.tgt_lang or ""), []).append(i)
    out: list[UtteranceResult | None] = [None] * len(rows)
    with tqdm(total=len(rows), desc=desc, dynamic_ncols=True) as bar:
        for (src, tgt), idx in groups.items():
            t = Task.ASR if not tgt else task
            results = translator.translate([rows[i].audio for i in idx], src, tgt or None, task=t, options=options,
                                           batch_size=batch_size, progress=bar.update)
            for i, res in zip(idx, results):
                r = rows[i]
                out[i] = UtteranceResult(
                    id=r.id, src=src, tgt=tgt or src, error=res.error,
                    hyp_transcript=res.transcript if t in (Task.SRT, Task.ASR) and not res.error else None,
                    hyp_translation=(res.transcript if t is Task.ASR else res.translation) if not res.error else None,
                    ref_transcript=r.transcript or None,
                    ref_translation=(r.translation if tgt else None) or None)
    return out


def text_mt_bleu(rows: list[Row], options: DecodingOptions, batch_size: int, llm: str | None = None
                 ) -> dict[tuple[str, str], float]:
    """BLEU of the frozen LLM translating the reference transcripts (the x axis of paper Figure 3)."""
    from .. import device
    from ..model.systems import TextMTSystem

    mt = TextMTSystem(llm, device.resolve())
    rows = [r for r in rows if r.tgt_lang]
    hyps = []
    for start in tqdm(range(0, len(rows), batch_size), desc="text MT", dynamic_ncols=True):
        chunk = rows[start:start + batch_size]
        hyps += mt.translate([r.transcript for r in chunk], [r.src_lang for r in chunk], [r.tgt_lang for r in chunk],
                             options)
    scores = score_system("text MT", [UtteranceResult(id=r.id, src=r.src_lang, tgt=r.tgt_lang, hyp_translation=h,
                                                      ref_translation=r.translation) for r, h in zip(rows, hyps)])
    return {d: s.score for d, s in scores.bleu.items()}


def hyps_path(out: str | Path, system: str, rank: int | None = None) -> Path:
    """Where a system's utterance results go: hyps.<system>.jsonl (hyps.<system>.rank<k>.jsonl: one rank's part)."""
    return Path(out) / f"hyps.{file_name(system)}{'' if rank is None else f'.rank{rank}'}.jsonl"


def _write_hyps(path: Path, results: list[UtteranceResult]) -> None:
    path.write_text("".join(json.dumps(vars(r), ensure_ascii=False) + "\n" for r in results))


def file_name(system: str) -> str:
    """A system name as it appears in file names ("w/o SMT" must not make a folder)."""
    return system.replace("/", "_").replace("\\", "_")


def parse_models(specs: list[str]) -> dict[str, str]:
    """['curriculum=runs/a/final', 'cascade'] -> {'curriculum': 'runs/a/final', 'cascade': 'cascade'}."""
    models = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else (Path(spec).parent.name if Path(spec).name == "final" else
                                                Path(spec).name or spec, spec)
        if name in models:
            raise LLMSRTError(f"--model: the name {name!r} is used twice; write NAME=PATH")
        models[name] = path
    return models


def evaluate(models: dict[str, str], manifest: str | Path, out: str | Path, task: str = "auto",
             options: DecodingOptions = DecodingOptions(), batch_size: int = 8, limit: int | None = None,
             with_mt: bool = False, skip_bad: bool = False, log=print):
    from ..infer import SpeechTranslator

    rows = read_manifest(manifest, skip_bad=skip_bad)
    if limit:
        rows = rows[:limit]
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    mine = rows[rank::world]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    systems = {}
    for name, path in models.items():
        t = model_task(path) if task == "auto" else Task(task)
        translator = SpeechTranslator.from_pretrained(path)
        results = run_system(translator, mine, t, options, batch_size, desc=f"evaluate {name}")
        _write_hyps(hyps_path(out, name, rank), results)
        systems[name] = results
        failed = [r for r in results if r.error]
        if failed:
            log(f"{name}: {len(failed)} of {len(results)} utterances failed, e.g. {failed[0].id}: {failed[0].error}")
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        dist.barrier()
        if rank != 0:
            return None
        for name in models:
            systems[name] = [r for k in range(world) for r in load_results(hyps_path(out, name, k))]
    for name in models:
        _write_hyps(hyps_path(out, name), systems[name])
    mt = text_mt_bleu(rows, options, batch_size) if with_mt else None
    report = build_report(systems, mt_bleu=mt)
    files = write_report(report, out)
    log(format_table(report))
    log("wrote " + ", ".join(str(p) for p in files.values()))
    return report


def add_arguments(parser) -> None:
    parser.add_argument("--model", action="append", required=True,
                        help="NAME=FOLDER, a model folder, 'whisper' or 'cascade'; repeat to compare systems")
    parser.add_argument("--manifest", required=True, help="test manifest (JSONL)")
    parser.add_argument("--out", required=True, help="report folder")
    parser.add_argument("--task", default="auto", choices=["auto", "srt", "s2tt"],
                        help="auto: what the model folder was trained for")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    parser.add_argument("--with-mt", action="store_true", help="also score the LLM's text MT (Figure 3)")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad manifest rows instead of stopping")


def main(args) -> int:
    models = parse_models(args.model)
    report = evaluate(models, args.manifest, args.out, args.task,
                      DecodingOptions(beam_size=args.beam, max_new_tokens=args.max_new_tokens), args.batch_size,
                      args.limit, args.with_mt, args.skip_bad)
    if report is None:  # a rank other than 0 under torchrun
        return 0
    hyps = [r for name in models for r in load_results(hyps_path(args.out, name))]
    return 0 if any(r.error is None for r in hyps) else 1  # 1: not one utterance could be translated
