"""The systems an `llm-srt evaluate` run scores, as its --model options name them: a baseline (a key of
model/systems.SYSTEMS), a model folder, or an earlier evaluation's results files (`is_results_file`, read by
`load_runs`, scored again as one system: `pooled`); the Whisper and LLM folders each loads (`baseline_folders`,
`model_folders`), the checks made of them before any decoding (`check_models`), and what --with-mt's text MT runs
on (`mt_system`). Running them is run.py's.
"""

import inspect
import os
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from ..data.manifest import Row
from ..errors import LLMSRTError
from ..paths import EMBEDDED, checkpoint_relative, cwd_note, resolve_model
from ..model import folders, gguf_llm
from ..model.systems import SYSTEMS, SpeechLLMSystem, TextMTSystem
from .report import UtteranceResult, check_languages, load_results

MT_PROMPTS = ("auto", "tags", "instruction")  # --mt-prompt (`mt_system`)


def parse_models(specs: list[str]) -> dict[str, str]:
    """['curriculum=runs/a/final', 'cascade', 'r/hyps.base.jsonl'] -> {'curriculum': 'runs/a/final',
    'cascade': 'cascade', 'base': 'r/hyps.base.jsonl'}. Names and paths may both hold '=' and '/' (`_split`)."""
    models = {}
    for spec in specs:
        name, path = _split(spec)
        if name is None:
            p = Path(spec.split(",")[0])
            name = (p.parent.name if p.name == "final" else p.stem.removeprefix("hyps.") if is_results_file(spec)
                    else p.name or spec)
        if name in models:
            raise LLMSRTError(f"--model: the name {name!r} is used twice; write NAME=PATH")
        models[name] = path
    return models


def _split(spec: str) -> tuple[str | None, str]:
    """(NAME, PATH) of `spec`, or (None, spec) where it is a path alone. A path may hold '=' (a sweep's
    runs/lr=1e-4/srt/final) and a name '/' ("w/o SRT"): a spec whose comma-separated parts all exist is paths; else
    it is cut at the first '=' after which every part exists (or a system's name follows); else, nothing existing
    to tell, at the first '=' unless the text before it reads as a folder path (a '/', no space)."""
    def there(paths: str) -> bool:
        return all(os.path.exists(part) for part in paths.split(","))

    if there(spec):
        return None, spec
    cuts = [i for i, c in enumerate(spec) if c == "="]
    for i in cuts:
        if there(spec[i + 1:]) or spec[i + 1:] in SYSTEMS:
            return spec[:i], spec[i + 1:]
    name, sep, path = spec.partition("=")
    if not sep or (Path(name).name != name and " " not in name):
        return None, spec
    return name, path


def is_results_file(model: str) -> bool:
    """A --model that names a results file (hyps.NAME.jsonl of an earlier evaluation), or several separated by
    commas (one per training run, e.g. per seed): scored again, not run."""
    return all(Path(part).suffix == ".jsonl" for part in model.split(","))


def load_runs(model: str) -> list[list[UtteranceResult]]:
    """The runs of a results-file model (`is_results_file`), one list of results per file, each file's language
    codes checked (an unknown one is an error naming the file before any decoding, not after it), and a file
    without rows refused."""
    runs = []
    for part in model.split(","):
        runs.append(load_results(part))
        if not runs[-1]:  # scored as a system of no rows: "0 of 0", the others' tests left out, or exit status 1
            raise LLMSRTError(f"{part}: no result rows in it (an empty file); give the hyps.NAME.jsonl an "
                              "evaluation wrote")
        try:
            check_languages(runs[-1])
        except LLMSRTError as e:
            raise LLMSRTError(f"{part}: {e}") from None
    return runs


def limited(runs: list[list[UtteranceResult]], model: str, rows: list[Row] | None, limit: int,
            manifest: str | Path | None) -> list[list[UtteranceResult]]:
    """--limit on a results-file model's runs, so that its rows stay paired with the decoded systems': each run's
    rows among the first `limit` manifest rows (`rows`, read whether or not a system decodes them; None: no
    manifest given), else each run's first `limit` rows (an evaluation writes them in manifest order). A run left
    without a row is refused, before any decoding."""
    ids = {r.id for r in rows} if rows is not None else None
    cut = [[r for r in run if r.id in ids] if ids is not None else run[:limit] for run in runs]
    for part, run in zip(model.split(","), cut):
        if not run and ids is not None:
            raise LLMSRTError(f"--limit {limit}: {part} holds none of the first {limit} rows of {manifest} (a results "
                              "file of another test set?); leave out --limit, or that --model")
    return cut


def against_manifest(runs: list[list[UtteranceResult]], model: str, rows: list[Row], manifest: str | Path,
                     skipped: int = 0) -> tuple[list[list[UtteranceResult]], list[str]]:
    """A results-file model's runs scored against --manifest's references, not those the file holds (it keeps the
    ones it was decoded against: a reference corrected since was scored unsaid as it was): each row's reference
    transcript and translation from the manifest row of its id, as a decoded row takes them (`run._result`); and the
    ids of the rows whose stored references differed. A row whose id the manifest lacks, or of other languages than
    its row, is refused before any decoding (`skipped`: the bad rows --skip-bad left out of `rows`)."""
    by_id = {r.id: r for r in rows}
    replaced, differed = [], []
    for part, run in zip(model.split(","), runs):
        fixed = []
        for r in run:
            row = by_id.get(r.id)
            if row is None:
                raise LLMSRTError(f"{part}: row {r.id!r} is not in --manifest {manifest} ("
                                  + (f"--skip-bad skipped {skipped} bad rows of it, or " if skipped else "")
                                  + "a results file of another test set?); give the manifest it was decoded from, or "
                                  "leave --manifest out to score the references the file holds")
            asr = r.task == "asr" or row.is_asr  # a transcript: no reference translation (its tgt is its source)
            if r.src != row.src_lang or not asr and r.tgt != row.tgt_lang:
                raise LLMSRTError(f"{part}: row {r.id!r} is {r.src}->{r.tgt}, but --manifest {manifest} has it as "
                                  f"{row.src_lang}->{row.tgt_lang or row.src_lang}; give the manifest it was decoded "
                                  "from")
            new = replace(r, ref_transcript=row.transcript or None,
                          ref_translation=None if asr else row.translation or None)
            if (new.ref_transcript, new.ref_translation) != (r.ref_transcript, r.ref_translation):
                differed.append(r.id)
            fixed.append(new)
        replaced.append(fixed)
    return replaced, differed


def baseline_folders(spec: str, whisper: str | None, llm: str | None) -> dict[str, str | None]:
    """The --whisper / --llm folders the baseline `spec` (a key of SYSTEMS) loads, by the keywords its builder
    takes ({'whisper': ..., 'llm': ...}; None: the embedded one); {} for a model folder: its config.json names its
    own Whisper and LLM, and --whisper / --llm never re-point them (--llm made a trained model run on the cascade's
    LLM until 2026-12-06)."""
    if spec not in SYSTEMS:
        return {}
    takes = inspect.signature(SYSTEMS[spec]).parameters
    return {kind: folder for kind, folder in (("whisper", whisper), ("llm", llm)) if kind in takes}


def model_folders(spec: str, encoder: str | None, model_llm: str | None) -> dict[str, str | None]:
    """The --encoder / --model-llm folders the model folder `spec` loads its Whisper encoder and LLM from instead of
    those its config.json names (a folder moved to another machine), as `load_system`'s encoder= and llm= (None: the
    config's); {} for a baseline, whose folders are --whisper / --llm (`baseline_folders`)."""
    return {} if spec in SYSTEMS else {"encoder": encoder, "llm": model_llm}


MODEL_FOLDER_OPTIONS = {kind: options[1] for kind, options in folders.MODEL_FOLDER_OPTIONS.items()}  # evaluate's


def check_models(run_now: dict[str, str], whisper: str | None, llm: str | None, encoder: str | None = None,
                 model_llm: str | None = None) -> None:
    """Refuse, before any system loads, a --model to run that is neither a baseline (a key of SYSTEMS) nor a folder
    a model loads from (its config.json: a trained model, a checkpoint, `llm-srt convert`'s output), a model
    folder's Whisper encoder or LLM that is not there (--encoder / --model-llm, else the one its config.json names,
    read as `SpeechLLM.from_pretrained` reads it: a folder moved to another machine), --encoder / --model-llm with no
    model folder to run, and a baseline's --whisper / --llm folder (or the embedded one) that is not there: found
    when that system's turn came, each stopped the run after every earlier system had decoded, with no report."""
    from ..model.speech_llm import CONFIG_FILE, read_config

    repointed = {"encoder": encoder, "llm": model_llm}
    if any(repointed.values()) and all(spec in SYSTEMS for spec in run_now.values()):
        option = next(MODEL_FOLDER_OPTIONS[kind] for kind, folder in repointed.items() if folder)
        raise LLMSRTError(f"{option}: re-points a model folder's {'encoder' if option == '--encoder' else 'LLM'}, and "
                          "no --model to decode is a model folder; leave it out (a baseline's folders: --whisper, "
                          "--llm)")
    for name, spec in run_now.items():
        if spec not in SYSTEMS:
            folder = Path(spec)
            if not folder.exists():
                where = cwd_note(folder)
                raise LLMSRTError(f"--model {name}: {spec} is neither a baseline ({', '.join(SYSTEMS)}) nor a "
                                  f"folder{where}; give a model folder written by training or by `llm-srt convert`, "
                                  "or a baseline's name")
            try:
                meta = read_config(folder)
            except LLMSRTError as e:
                raise LLMSRTError(f"--model {name}: {e}") from None
            values = {kind: repointed[kind] or (checkpoint_relative(folder, meta[kind]) if isinstance(meta[kind], str)
                                                else meta[kind])  # as from_pretrained reads it (not a string: a
                      for kind in MODEL_FOLDER_OPTIONS}  # damaged config.json, loading says what is wrong with it)
            for kind, value in values.items():
                option = MODEL_FOLDER_OPTIONS[kind]
                if isinstance(value, str) and (why := _a_file(Path(value), kind, option)):
                    raise LLMSRTError(f"{option} {value}: {why} (--model {name} loads its {_what(kind)} from it)"
                                      if repointed[kind] else
                                      f"--model {name}: {folder / CONFIG_FILE} names the {kind} {value}: {why}")
            try:  # every folder not there named in one error with its option, as translate and serve say it
                folders.check_model_folders(folder, SimpleNamespace(**values), {k for k, v in repointed.items() if v})
            except LLMSRTError as e:
                raise LLMSRTError(f"--model {name}: {e}") from None
        for kind, given in baseline_folders(spec, whisper, llm).items():
            folder, why = _model_folder(name, given or EMBEDDED, "encoder" if kind == "whisper" else "llm", f"--{kind}")
            if why is not None:
                raise LLMSRTError(f"{f'--{kind} {given}' if given else f'the embedded {kind} {folder}'}: {why}; the "
                                  f"{spec} baseline (--model {name}) loads its "
                                  f"{'Whisper' if kind == 'whisper' else 'LLM'} from it: give a Hugging Face model "
                                  f"folder, or leave --{kind} out for the embedded one")


def _what(kind: str) -> str:
    return "Whisper encoder" if kind == "encoder" else "LLM"


def _a_file(path: Path, kind: str, option: str) -> str | None:
    """What is wrong with `path` as a `kind` (encoder | llm) folder where it is a file (None where it is not): a GGUF
    file to convert (by its magic, as `load_llm` tells one), or another file. `option`: what gives the folder."""
    if not path.is_file():
        return None
    if kind == "llm":
        with suppress(OSError):  # unreadable: a file all the same
            if gguf_llm.magic(path) == gguf_llm.GGUF_MAGIC:
                return (f"a GGUF file, not a Hugging Face model folder; run `llm-srt convert gguf {path} OUT`, then "
                        f"give {option} OUT")
    return (f"a file, not a Hugging Face {'Whisper' if kind == 'encoder' else 'model'} folder; give {option} the "
            "folder")


def _model_folder(name: str, value: str, kind: str, option: str) -> tuple[Path, str | None]:
    """`value`, a model folder or "embedded", as the folder of a `kind` (encoder | llm) that --model `name` loads
    (`option` gives another), and what is wrong with it: None where it has its config.json; a file (a GGUF one: the
    conversion that makes its folder, `_a_file`) is refused here."""
    try:
        folder = Path(resolve_model(value, kind))
    except LLMSRTError as e:  # the embedded model, not converted
        raise LLMSRTError(f"--model {name}: {e}, or give {option}") from None
    if (folder / "config.json").is_file():
        return folder, None
    if why := _a_file(folder, kind, option):
        raise LLMSRTError(f"{option} {value}: {why} (--model {name} loads its {_what(kind)} from it)")
    return folder, ("no such folder" if not folder.exists() else "no config.json") + cwd_note(folder)


def pooled(runs: list[list[UtteranceResult]]) -> list[UtteranceResult]:
    """Several runs' results as one system's rows (ids prefixed 'RUN/'), what its report scores: corpus BLEU and
    WER of all runs' hypotheses together, the statistic `paired_bootstrap_runs` tests. One run: itself."""
    if len(runs) == 1:
        return runs[0]
    return [replace(r, id=f"{k}/{r.id}") for k, run in enumerate(runs, start=1) for r in run]


def mt_system(system, prompt: str = "auto"):
    """What --with-mt translates the gold transcripts with: a speech model's LLM from its own MT prompt ("tags": the
    transcript and its language tags, SMT without the speech) or from MT_TEMPLATE, an instruction, as a plain LLM
    ("instruction": `TextMTSystem.of_speech_llm`). "auto": the instruction for a model without LoRA, whose LLM is
    the base LLM, frozen in training, which never saw the tags without speech (paper Figure 3's x axis is the
    LLM's MT); the tags with LoRA, trained on them. Baselines translate as they do."""
    if prompt not in MT_PROMPTS:
        raise LLMSRTError(f"--mt-prompt {prompt}: use one of {', '.join(MT_PROMPTS)}")
    if isinstance(system, SpeechLLMSystem) and (prompt == "instruction" or prompt == "auto"
                                                and system.model.config.lora is None):
        return TextMTSystem.of_speech_llm(system.model, system.name)
    return system


def mt_prompt_used(spec: str, prompt: str) -> str | None:
    """What `mt_system` will ask model `spec`'s LLM with under --mt-prompt `prompt`, read before it loads:
    "instruction", or None for its own tags (and for a baseline, which translates as it does). The text-MT journal's
    settings hold it, so a journal of the tags (one written before --mt-prompt was, too) goes on under any option
    that runs them."""
    if spec in SYSTEMS or prompt == "tags":
        return None
    if prompt == "instruction":
        return prompt
    from ..model.speech_llm import read_config

    try:  # a SpeechLLM folder's config.json (one without LoRA may leave the key out)
        return "instruction" if read_config(Path(spec)).get("lora") is None else None
    except LLMSRTError:  # its load says what is wrong
        return None
