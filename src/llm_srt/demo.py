"""`llm-srt demo` (what `make demo` runs): the whole method on the embedded default, end to end, on this machine.

1. the embedded models (Whisper base, Gemma-3-270M) converted once (`llm-srt setup`);
2. the mini corpus: gettext sentences spoken by espeak-ng in 6 languages (`llm-srt prepare mini`);
3. from the shipped ASR stage (checkpoints/embedded/asr, trained here on several voices with the CTC loss and
   LoRA; see its README), with
   equal budgets on the same examples (steps x batch over the same speech): the curriculum SMT -> SRT, the paper's
   Baseline (direct S2TT) and Table 8's "w/o SMT" ablation (SRT alone), each single run one pass a stage;
4. the scored directions chosen by the LLM's measured text MT (on dev sentences), then evaluation on every
   held-out test sentence of them: the three runs and the cascade (Whisper -> Gemma text MT);
5. the paper's two claims checked on these numbers (paired bootstrap p-values on BLEU and on the teacher-forced
   loss of the references), with what bounds them, measured: the plain LLM's text MT and what each run's LoRA
   left of it, the transcripts' error rates, the outputs' shapes; and one held-out clip translated and printed.
A re-run reuses the corpus, the features and the finished stages; it evaluates again (step 4 on) from scratch.
"""

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from .data.manifest import read_manifest, write_manifest
from .data.prepare import MINI_FOLDER
from .demo_checks import demo_placement, require_clone, run_with_budget
from .demo_claims import bleu_per_direction, check_claims, claims_record
from .errors import LLMSRTError
from .paths import write_json

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs" / "embedded"
SHIPPED = REPO / "checkpoints" / "embedded"
DEMO_CONFIGS = CONFIGS / "demo"  # smt.yaml, srt.yaml, baseline.yaml: the demo's runs from the shipped ASR stage
# the directions the demo may score (both sides spoken by espeak-ng and written in Latin script) ...
DEMO_DIRECTIONS = (("eng", "deu"), ("eng", "fra"), ("eng", "spa"), ("deu", "eng"), ("fra", "eng"),
                   ("spa", "eng"))
SCORED_DIRECTIONS = 2  # ... of which the LLM's best at text MT are scored, on every held-out test sentence
MT_PROBE_SENTENCES = 8  # dev sentences per candidate direction for that text-MT measurement
DEMO_SENTENCES = 8  # test sentences per direction in `test_subset`'s default
TRAIN_SENTENCES = "train_sentences.txt"  # in a shipped checkpoint: the sentence ids of its training corpus
LIST_HOW = ("one a line: the sorted sentence_id values of the train.jsonl and prose.jsonl it trained on, as "
            "checkpoints/embedded/asr/README.md writes them")  # no command writes it; a run's final/ has none
# test sentences the corpus adds after its train split, none in a shipped model's training data: with the split's
# 40, 80 sentences, as the power of 2026-12-03's Table 8 asked (+3.1 BLEU found 80% of the time with ~86)
UNSEEN_TEST = 40
EVAL_BATCH = 16  # rows per decoding batch in the evaluation: 271 s vs 289 s at 8 for the 4 x 80 rows, same outputs


def test_subset(test_manifest: Path, out: Path, directions=DEMO_DIRECTIONS, sentences: int = DEMO_SENTENCES,
                exclude: frozenset[str] = frozenset()) -> Path:
    """The demo's test rows: the first `sentences` test sentence ids in each of `directions` (the SRT output's
    transcript gives WER/CER, so no separate ASR rows), skipping the ids in `exclude` (sentences a shipped model
    was trained on: the mini corpus's split depends on the gettext catalogues a machine has installed)."""
    keep = first_sentences(read_manifest(test_manifest), directions, sentences, exclude)
    if not keep:
        raise LLMSRTError(f"{test_manifest}: none of the demo directions {sorted(set(directions))} is in the test "
                          "split")
    write_manifest(out, keep)
    return out


def first_sentences(rows: list, directions, k: int, exclude: frozenset[str] = frozenset()) -> list:
    """The rows of the first `k` sentence ids (in order) of each of `directions` (src, tgt), skipping `exclude`; per
    direction: a sentence one direction lacks takes no other direction's place."""
    ids = {pair: set(sorted({r.sentence_id for r in rows if (r.src_lang, r.tgt_lang) == pair} - exclude)[:k])
           for pair in set(directions)}
    return [r for r in rows if r.sentence_id in ids.get((r.src_lang, r.tgt_lang), ())]


def demo_stages(work: Path, data: Path, asr: Path = SHIPPED / "asr", dtype: str = "auto",
                seed: int = 0) -> dict[str, list]:
    """The demo's training runs as typed configs, composed with `dataclasses.replace` (a folder such as
    "runs/demo #1" stays as it is), all from the ASR stage in `asr` and on the mini corpus in `data`: the
    curriculum (smt, srt under `work`), the Baseline and the w/o-SMT ablation (srt alone), the last two with the
    curriculum's budget and on its examples: one pass a curriculum stage (`single_passes`); `dtype`: the frozen
    weights' (TrainConfig.dtype); `seed`: every run's model-init/dropout seed and data-order seed (TrainConfig.seed,
    DataConfig.seed)."""
    from .train.config import load_config
    from .train.curriculum import plan

    if not (asr / "config.json").is_file():
        raise LLMSRTError(f"{asr}: no config.json; the demo starts from the shipped ASR stage: restore it "
                          f"(git checkout -- {asr}) or train it (see configs/embedded/shipped/asr_ctc.yaml) and "
                          f"list the sentence ids it trained on in its {TRAIN_SENTENCES} ({LIST_HOW})")

    def on_corpus(cfg):
        return replace(cfg, data=replace(cfg.data, train=str(data / "train.jsonl"), dev=str(data / "dev.jsonl"),
                                         seed=seed),
                       model=replace(cfg.model, init_from=str(asr)), dtype=dtype, seed=seed)

    curriculum = plan([str(DEMO_CONFIGS / "smt.yaml"), str(DEMO_CONFIGS / "srt.yaml")], out_root=work,
                      adjust=on_corpus)
    if len({(s.config.data.batch_size, s.config.optim.accumulation) for s in curriculum}) != 1:
        raise LLMSRTError(f"{DEMO_CONFIGS}: smt.yaml and srt.yaml must share one batch_size and accumulation (equal "
                          "budgets)")
    singles = {"baseline": ("baseline.yaml", "baseline"), "no_smt": ("srt.yaml", "srt_no_smt")}
    return {"curriculum": curriculum, **{
        run: single_passes(DEMO_CONFIGS / file, on_corpus(load_config(DEMO_CONFIGS / file)), curriculum, work / name)
        for run, (file, name) in singles.items()}}


def single_passes(file: Path, cfg, curriculum: list, out: Path) -> list:
    """A single-stage run (`cfg`, the TrainConfig of YAML `file`) on exactly the curriculum's examples: one pass per
    curriculum stage (folders OUT_1, OUT_2, ...), each with that stage's steps, batch, accumulation and data start
    (the stream's start: the paper's stages each go over the whole data, so SRT goes over the rows SMT did), each
    from the one before's final/ with a fresh optimizer and warm-up as each stage has; the last pass's final/ is the
    run's model. Until 2026-12-07 (17:55) a single run went once over the summed steps and heard twice the
    curriculum's distinct speech (README, "Three corrections")."""
    from .train.curriculum import Stage
    from .train.final import FINAL

    passes: list = []
    for k, stage in enumerate(curriculum, 1):
        start = cfg.model.init_from if not passes else str(Path(passes[-1].config.output_dir) / FINAL)
        its = stage.config
        passes.append(Stage(f"{out.name}_{k}", file, replace(
            cfg, output_dir=str(out.with_name(f"{out.name}_{k}")), max_steps=its.max_steps,
            model=replace(cfg.model, init_from=start),
            data=replace(cfg.data, batch_size=its.data.batch_size, start_step=its.data.start_step),
            optim=replace(cfg.optim, accumulation=its.optim.accumulation))))
    return passes


def probe_rows(dev_manifest: Path, directions, sentences: int = MT_PROBE_SENTENCES) -> list:
    """The text-MT probe: the rows of the first `sentences` dev sentence ids of each of `directions` (src, tgt)."""
    rows = first_sentences(read_manifest(dev_manifest), directions, sentences)
    if not rows:
        raise LLMSRTError(f"{dev_manifest}: none of the directions {sorted(set(directions))} is in the dev split")
    return rows


def text_mt_bleu(system, rows: list, log=print) -> dict[str, float]:
    """BLEU per direction ("src-tgt") of a text-MT system translating the rows' gold transcripts. Failed rows count as
    empty translations and are said (count and first error); a direction whose every row failed measured nothing:
    an LLMSRTError, not a BLEU of 0 that would rank it last."""
    from .evaluate.report import score_system
    from .evaluate.run import run_text_mt
    from .model.decoding import DecodingOptions

    results = run_text_mt(system, rows, DecodingOptions(), batch_size=8)
    failed = [r for r in results if r.error is not None]
    if failed:
        ran = {(r.src, r.tgt) for r in results if r.error is None}
        lost = sorted({f"{r.src}->{r.tgt}" for r in failed if (r.src, r.tgt) not in ran})
        if lost:
            raise LLMSRTError(f"{system.name}: text MT failed on every probe row of {', '.join(lost)} (first: "
                              f"{failed[0].error}); nothing was measured there")
        log(f"warning: {system.name}: text MT failed on {len(failed)} of {len(results)} probe rows (first: "
            f"{failed[0].error}); they count as empty translations")
    scores = score_system("text MT", results).bleu
    return {f"{s}-{t}": round(b.score, 2) for (s, t), b in scores.items()}


def choose_directions(dev_manifest: Path, log=print, candidates=DEMO_DIRECTIONS, n: int = SCORED_DIRECTIONS,
                      sentences: int = MT_PROBE_SENTENCES, placement=None) -> dict:
    """The LLM's own text MT (the cascade's second pass: gold transcript -> translation) measured on the first
    `sentences` dev sentences of each candidate direction; the `n` directions with the highest BLEU are the ones
    the demo scores (where a speech LLM can show anything, its LLM must translate). -> {"bleu": {"src-tgt":
    BLEU}, "chosen": [(src, tgt), ...], "sentences": k}, k the most any candidate had (at most `sentences`; the
    log names those with fewer)."""
    from . import device
    from .model.systems import TextMTSystem

    rows = probe_rows(dev_manifest, candidates, sentences)
    scores = text_mt_bleu(TextMTSystem(None, placement or device.resolve("auto")), rows, log)
    ranked = sorted(scores, key=lambda d: (-scores[d], d))
    chosen = [tuple(d.split("-")) for d in ranked[:n]]
    each = {f"{s}->{t}": len({r.sentence_id for r in rows if (r.src_lang, r.tgt_lang) == (s, t)})
            for s, t in dict.fromkeys(candidates)}
    k = max(each.values())  # per direction (probe_rows of the chosen ones with it again: the same rows)
    fewer = ", ".join(f"{d} {m}" for d, m in each.items() if m < k)
    best_first = {d: scores[d] for d in ranked}
    log(f"the LLM's text MT on {k} dev sentences{f' (fewer in {fewer})' if fewer else ''} (gold transcript -> "
        "translation), BLEU: " + bleu_per_direction(best_first)
        + f"; scored: {', '.join(f'{s}->{t}' for s, t in chosen)}")
    return {"bleu": best_first, "chosen": chosen, "sentences": k}


def run_demo(work: Path, data: Path, log=print, dtype: str = "auto", asr: Path = SHIPPED / "asr",
             seed: int = 0) -> dict:
    """The demo (module docstring) with the frozen weights in `dtype` (auto, float32 or bfloat16) for training and
    evaluation alike, every run starting from the ASR stage in `asr` (default: the shipped one) with training seed
    `seed` (each claim in claims.json records it)."""
    from .data.mini import build_mini
    from .embedded import ensure_embedded
    from .evaluate.render import MATRIX_PNG, REPORT_MD, RESULTS_JSON, SCATTER_PNG
    from .evaluate.report import load_results
    from .evaluate.outputs import hyps_path
    from .evaluate.run import evaluate
    from .infer import SpeechTranslator

    require_clone(DEMO_CONFIGS)
    placement = demo_placement(dtype, log)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    def step(name, fn):
        log(f"\n=== {name}")
        t = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t, 1)
        log(f"=== {name}: {timings[name]:.0f} s")
        return result

    step("embedded models", ensure_embedded)
    if not (asr / TRAIN_SENTENCES).is_file():  # a run's final/ (a stage trained on this corpus is fine: its
        #   splits are by sentence id), or a stage trained elsewhere, on sentences that may be this test's
        log(f"warning: {asr} has no {TRAIN_SENTENCES}: the test sentences cannot be checked against that stage's "
            f"training sentences; to check them, write the file ({LIST_HOW})")
    built = (data / "test.jsonl").is_file()
    if not built or older_demo_corpus(data):
        if built:
            log(f"{data}: the demo corpus of before {UNSEEN_TEST} test sentences were added; built again (the "
                "same train, dev and test rows, then the new ones)")
        summary = step("mini corpus", lambda: build_mini(corpus_options(data, asr)))
        log("\n".join(summary.lines()))
    elif not demo_corpus(data):
        log(f"{data}: not a corpus the demo built (other options, or no summary.json); used as it is")
    stages = demo_stages(work, data, asr=asr, dtype=placement.dtype_name, seed=seed)
    finals = step("curriculum SMT -> SRT (from the shipped ASR stage)",
                  lambda: run_with_budget(stages["curriculum"], log=log))
    baseline = step("baseline (S2TT, same examples)", lambda: run_with_budget(stages["baseline"], log=log)[-1])
    no_smt = step("ablation w/o SMT (SRT alone, same examples)",
                  lambda: run_with_budget(stages["no_smt"], log=log)[-1])
    directions = step("the LLM's text MT per direction (dev)",
                      lambda: choose_directions(data / "dev.jsonl", log, placement=placement))
    write_json(work / "report" / "directions.json", directions)
    seen = set().union(*(shipped_training_sentences(folder) for folder in trained_models(asr)))
    tests = {r.sentence_id for r in read_manifest(data / "test.jsonl")}
    clash = seen & tests
    if clash:
        log(f"\n{len(clash)} test sentences of {data} were in a shipped model's training data "
            f"({TRAIN_SENTENCES} of {asr}, {SHIPPED / 'srt'}); they are left out of the evaluation")
    subset = test_subset(data / "test.jsonl", work / "test_subset.jsonl", directions=directions["chosen"],
                         sentences=len(tests), exclude=frozenset(clash))
    systems = {"LLM-SRT (this run)": str(finals[-1]), "Baseline (this run)": str(baseline),
               "LLM-SRT w/o SMT (this run)": str(no_smt), "Cascade": "cascade"}
    # an earlier run's report goes whole before this evaluation: removed in part (its claims), a run stopped in the
    #   evaluation left that run's results.json, report.md, plots and hypotheses beside this run's directions.json
    for path in (*(work / "report" / name for name in ("claims.json", "timings.json", RESULTS_JSON, REPORT_MD,
                                                        MATRIX_PNG, SCATTER_PNG)),
                 *(hyps_path(work / "report", name) for name in systems)):
        path.unlink(missing_ok=True)
    report = step("evaluation", lambda: evaluate(systems, subset, work / "report", batch_size=EVAL_BATCH, log=log,
                                                   placement=placement, restart=True))
    own = {name: folder for name, folder in systems.items() if name.endswith("(this run)")}
    scored = [r for r in read_manifest(subset) if r.translation and r.tgt_lang]
    probe = probe_rows(data / "dev.jsonl", directions["chosen"], directions["sentences"])
    runs = step("teacher-forced loss of the references; each run's text MT (its LoRA applied)",
                lambda: measure_runs(own, scored, probe, log, placement))
    claims = check_claims({name: load_results(hyps_path(work / "report", name)) for name in systems}, runs["losses"],
                          loss_rows=scored, loss_tasks=runs["loss_tasks"],
                          text_mt={f"{s}-{t}": directions["bleu"][f"{s}-{t}"] for s, t in directions["chosen"]},
                          lora_text_mt=runs["text_mt"], own_prompt_mt=runs["text_mt_own_prompt"])
    log("\n" + "\n".join(claims["lines"]))
    write_json(work / "report" / "claims.json", claims_record(claims["numbers"], seed))

    def one_clip():
        row = read_manifest(subset)[0]
        shipped = SHIPPED / "srt"
        model = str(shipped) if (shipped / "config.json").is_file() else systems["LLM-SRT (this run)"]
        translator = SpeechTranslator.from_pretrained(model, device=placement.device, dtype=placement.dtype)
        res = translator.translate([row.audio], row.src_lang, row.tgt_lang)[0]
        audio = Path(row.audio)
        if res.error:  # printed as an empty transcript and translation, the step said done
            raise LLMSRTError(f"one held-out clip: {audio} failed: {res.error}")
        log(f"audio:       {audio.relative_to(data.resolve()) if data.resolve() in audio.parents else audio}")
        log(f"model:       {model}")
        log(f"transcript:  {res.transcript}")
        log(f"translation: {res.translation}")
        log(f"reference:   {row.transcript}  ->  {row.translation}")
        return res
    step("one held-out clip", one_clip)
    timings["total"] = round(time.perf_counter() - t_all, 1)
    write_json(work / "report" / "timings.json", timings)
    log(f"\ndemo finished in {timings['total'] / 60:.1f} min; report in {work / 'report'}")
    return {"report": report, "timings": timings}


def corpus_options(data: Path, asr: Path = SHIPPED / "asr"):
    """The demo's mini corpus in `data`: the default splits, then UNSEEN_TEST test sentences that neither the ASR
    stage in `asr` nor the shipped SRT model trained on (their TRAIN_SENTENCES files)."""
    from .data.mini import MiniOptions

    listed = tuple(folder / TRAIN_SENTENCES for folder in trained_models(asr) if (folder / TRAIN_SENTENCES).is_file())
    return MiniOptions(out=data, unseen_test=UNSEEN_TEST, unseen_by=listed)


def trained_models(asr: Path = SHIPPED / "asr") -> tuple[Path, Path]:
    """The trained models whose training sentences the demo keeps out of its test: the ASR stage every run starts
    from and the shipped SRT model (the held-out clip's)."""
    return asr, SHIPPED / "srt"


def older_demo_corpus(data: Path) -> bool:
    """Whether `data` is the corpus an earlier demo built, before the UNSEEN_TEST sentences: exactly what
    `build_mini(MiniOptions(data))` writes (the default languages, directions, splits and seed, espeak-ng alone, no
    augmentation, prose or held-out voice; its voices.jsonl tells the seed and the voices): the demo builds it
    again, which keeps its rows. Any other corpus (other options, a corpus of the user's) is used as it is: a build
    with the demo's options would replace its rows, prose.jsonl and heldout/."""
    from .data import mini
    from .data.manifest import parse_directions

    summary = _summary(data)
    langs = list(mini.DEFAULT_LANGS)
    if (summary is None or "unseen_test" in summary or summary.get("sentences") != mini.DEFAULT_SIZES
            or summary.get("langs") != langs or summary.get("extra") or "voices" in summary
            or summary.get("directions") != [f"{s}-{t}" for s, t in parse_directions("all", langs)]
            or any((data / name).exists() for name in ("prose.jsonl", "heldout.jsonl", "heldout"))):
        return False
    try:
        with open(data / "voices.jsonl", encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
    except (OSError, ValueError):  # none in a corpus built before the voice options: its seed cannot be told
        return False

    def drawn_by_default(record) -> bool:
        parts = Path(str(record.get("audio", ""))).parts
        if len(parts) != 3 or parts[0] != "audio" or parts[1] not in langs or not parts[2].endswith(".flac"):
            return False
        voice, speed, pitch = mini.espeak_draw(0, parts[2].removesuffix(".flac"), parts[1])
        return record == {"audio": record["audio"], "voice": str(voice), "speed": speed, "pitch": pitch}
    return bool(records) and all(isinstance(r, dict) and drawn_by_default(r) for r in records)


def demo_corpus(data: Path) -> bool:
    """Whether `data` is the corpus this demo builds (its UNSEEN_TEST sentences are there)."""
    summary = _summary(data)
    return summary is not None and summary.get("unseen_test") == UNSEEN_TEST


def _summary(data: Path) -> dict | None:
    try:
        summary = json.loads((data / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def shipped_training_sentences(folder: Path = SHIPPED / "srt") -> set[str]:
    """Sentence ids the shipped model was trained on (its TRAIN_SENTENCES file, one id a line; empty if none)."""
    path = folder / TRAIN_SENTENCES
    return set(path.read_text(encoding="utf-8").split()) if path.is_file() else set()


def measure_runs(systems: Mapping[str, str], rows: list, probe: list | None = None, log=print, placement=None
                 ) -> dict[str, dict]:
    """What each speech LLM folder (name -> folder) is measured by beside BLEU, each model loaded once (where
    `placement` says; default `auto`, as the evaluation): "losses": name -> the teacher-forced loss of each row's
    reference translation, in the task the run was trained for (None for a row whose audio could not be used: said
    in the log line, with its file); "text_mt" (with `probe`, text-MT rows): name ->
    BLEU per direction of the run's own LLM, its LoRA applied, translating the probe's gold transcripts from the
    plain LLM's MT prompt: what training on speech left of the LLM's translation, the curriculum's upper bound;
    "text_mt_own_prompt": the same from the speech LLM's own text-MT prompt (Task.MT, transcript<|src|><|tgt|>:
    the format its SMT and SRT stages used), through the one system that runs a speech LLM on a batch."""
    from . import device
    from .evaluate.loss import reference_losses
    from .evaluate.run import model_task
    from .model.speech_llm import SpeechLLM
    from .model.systems import SpeechLLMSystem, TextMTSystem

    placement = placement or device.resolve("auto")
    out: dict[str, dict] = {"losses": {}, "loss_tasks": {}, "text_mt": {}, "text_mt_own_prompt": {}}
    for name, folder in systems.items():
        task = model_task(folder)
        out["loss_tasks"][name] = task.value
        model = SpeechLLM.from_pretrained(folder, device=placement.device, dtype=placement.dtype, merge_lora=True)
        measured = reference_losses(model, rows, task)
        out["losses"][name], scored = measured.losses, measured.scored()
        line = (f"{name}: mean reference loss {sum(scored) / len(scored):.3f} nats/token ({task.value}, "
                f"{len(scored)} of {len(rows)} rows)" if scored else f"{name}: no row's reference loss ({task.value})")
        if measured.unscored:
            line += f" [{measured.note()}]"
        if probe:
            bleu = out["text_mt"][name] = text_mt_bleu(TextMTSystem.of_speech_llm(model, name), probe, log)
            own = out["text_mt_own_prompt"][name] = text_mt_bleu(SpeechLLMSystem(model, name), probe, log)
            line += (f"; its LLM's text MT, BLEU {bleu_per_direction(bleu)} (from its own MT prompt: "
                     f"{bleu_per_direction(own)})")
        log(line)
        del model
    return out


def add_arguments(parser) -> None:
    parser.add_argument("--work", default="runs/demo", help="where stages and the report go")
    parser.add_argument("--data", default=str(MINI_FOLDER), help="the mini corpus folder (built if missing)")
    parser.add_argument("--asr", default=str(SHIPPED / "asr"),
                        help="the ASR stage every run starts from (a speech LLM folder; the sentences its "
                             "train_sentences.txt lists are left out of test, and without one the demo says they "
                             "cannot be checked; default: the shipped checkpoints/embedded/asr)")
    parser.add_argument("--dtype", default="auto",
                        help="the frozen Whisper and LLM weights' dtype in training and evaluation: auto (bfloat16 on "
                             "CUDA and on CPUs with AMX, else float32), float32, or bfloat16 (README, 'make demo')")
    parser.add_argument("--seed", type=int, default=0,
                        help="every run's training seed (model init, dropout, data order; default 0): another seed "
                             "repeats the experiment with other training noise (give it another --work)")


def main(args) -> int:
    from dataclasses import fields

    from .train.config import TrainConfig

    allowed = next(f for f in fields(TrainConfig) if f.name == "seed").metadata["range"]  # the runs' own bounds
    if allowed.problem(args.seed):
        raise LLMSRTError(f"--seed {args.seed}: give a seed from {allowed.ge} to {allowed.le}")
    run_demo(Path(args.work), Path(args.data), dtype=args.dtype, asr=Path(args.asr), seed=args.seed)
    return 0
