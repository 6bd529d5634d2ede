"""The embedded mini corpus: FLEURS-shaped, N-way parallel, built from what is installed on the machine.

Text: the gettext catalogues of installed programs (LOCALE_DIR/<locale>/LC_MESSAGES/<domain>.mo). A catalogue
maps an English message to its translation, so every English message translated in all chosen languages is an
N-way parallel sentence; its id is a hash of the English text and its provenance (`source`) the domain it came
from. Only sentence-like messages are kept (see `catalogues.sentence_like`), from one domain per sentence.

Speech: espeak-ng reads every sentence in every language with a voice variant, speed and pitch drawn from a
generator seeded by (seed, sentence id, language), resampled to 16 kHz and stored as 16-bit FLAC (or wav), so the
same options on the same machine give the same bytes. Japanese is read from kana (mecab -Oyomi). Utterances
espeak cannot read properly are rejected without listening: espeak switching to another language's voice (how it
reads foreign words and letter names) or a duration per character outside SECONDS_PER_CHAR. A sentence rejected
in one language is dropped in all of them.

Splits are by sentence id (test first, then dev, then train, in `mini_order.sentence_order`: the shipped split's
order for the sentences it lists, whichever catalogues are installed), so no test or dev sentence appears in train in
any language, and growing --train leaves test and dev unchanged. `unseen_test` adds test sentences
taken after train is full, skipping the ids listed in the `unseen_by` files (e.g. a checkpoint's
train_sentences.txt, built from a larger --train) and the sentences that read like a listed one in some language
(`read_alike`): a test set none of those models was trained on, grown without changing test, dev or train.

More voices (options; the defaults draw exactly as above): `synthesizers` adds flite and festival voices (see
data/voices.py) for the languages they speak, drawn per utterance after espeak's numbers; `augmentation` perturbs
train utterances once they are accepted (speed, noise, reverberation; seeded per utterance); `prose` adds English
sentences from installed documentation (data/prose.py) as ASR rows in OUT/prose.jsonl (eng must be among the
languages; its hours are counted apart from the corpus's); `heldout_voice` keeps one voice out of every split and
reads the test sentences with it into OUT/heldout.jsonl (audio in OUT/heldout/). A voice of another synthesizer that
records the same speaker (voices.SAME_SPEAKER: flite slt and festival cmu_us_slt_arctic_hts, flite kal16 and festival
kal_diphone) is kept out of every split too, and heldout.jsonl is read by the named voice alone: its score is that of
a speaker no split was read by.

Output (like `prepare fleurs`): OUT/{train,dev,test}.jsonl, each with an ASR row per (sentence, language) and a
translation row per (sentence, direction); audio in OUT/audio/<lang>/<sentence id>.flac; OUT/summary.json;
OUT/voices.jsonl, one line per audio file of the manifests: its path under OUT, voice ("synth:voice"), speed,
pitch (espeak-ng) and augmentation (manifest rows have no field for it). Every option is checked before anything is
read or written. A build then removes the manifests, voices.jsonl and summary.json of an earlier build in OUT (it
overwrites their audio; another corpus's manifests and summary.json are moved aside to NAME.stale, or NAME.stale.1,
.2, ... where that is taken), reads all its speech, and writes the manifests, then voices.jsonl, then summary.json: a
build that stops part way leaves no manifest beside audio it does not describe, and no summary of another build.
"""

import json
import random
import re
import shutil
import time
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor  # espeak-ng runs as child processes, so threads suffice
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from .. import languages
from ..audio import SAMPLE_RATE
from ..errors import LLMSRTError
from ..paths import atomic_file
from . import prose, voices
from .catalogues import LOCALE_DIR, Sentence, harvest, read_alike, sentence_id, twins_of_train
from .clips import aside_name, check_output_folder
from .manifest import Row, parse_directions, targets_by_source, write_manifest
from .mini_order import sentence_order
from .mini_tools import kana, require_espeak_voices, require_tools

CORPUS = "mini"
DEFAULT_LANGS = ("eng", "deu", "fra", "spa", "rus", "zho")
DEFAULT_SIZES = {"train": 240, "dev": 30, "test": 40}  # sentences per split (each read in every language)
SPLITS = ("test", "dev", "train")  # filled in this order from the seeded sentence order
MANIFESTS = ("train.jsonl", "dev.jsonl", "test.jsonl", "prose.jsonl", "heldout.jsonl")  # every manifest a build writes
UNSEEN = "unseen"  # filled after them: the unseen_test sentences, written into test.jsonl after the test split's
MAX_EXAMPLES = 12  # rejected sentences quoted in summary.json
VOLATILE = ("out", "seconds")  # summary fields left out of summary.json, so that builds compare byte for byte
AUDIO_FORMATS = {"flac": "FLAC", "wav": "WAV"}  # --audio-format -> soundfile format (16-bit PCM either way)
MOVED_ASIDE = ("moved another corpus's files aside: {} (rename them back, or keep corpora in separate --out "
               "folders)")  # said when moving them, and again in the summary
FEWER = ("build a smaller corpus: `llm-srt prepare mini --out DIR` with a smaller --train, --dev, --test, "
         "--unseen-test or --prose, or fewer --langs (`--survey` counts the sentences per language); `llm-srt demo "
         "--data DIR` uses it as it is (make demo reads data/mini)")  # `llm-srt demo` itself has no size flags

# Speech.
VARIANTS = voices.ESPEAK_VARIANTS  # espeak-ng voice variants (+m1 ...)
SPEED_RANGE = (140, 185)  # words per minute (espeak default 175)
PITCH_RANGE = (30, 70)  # 0-99 (espeak default 50)
# Seconds per written letter outside which an utterance is rejected, by script. Medians measured on espeak-ng 1.51
# at SPEED_RANGE: Latin/Cyrillic 0.07-0.09, Hangul 0.23, Hanzi 0.28-0.32, Japanese 0.17, Thai 0.16.
SECONDS_PER_CHAR = {"Latn": (0.035, 0.16), "Cyrl": (0.035, 0.16), "Kore": (0.08, 0.45),
                    "Hans": (0.12, 0.6), "Hant": (0.12, 0.6), "Jpan": (0.06, 0.45), "Thai": (0.06, 0.35)}


@dataclass(frozen=True)
class MiniOptions:
    out: Path  # output folder
    langs: tuple[str, ...] = DEFAULT_LANGS  # ISO 639-3 (English gives the sentence ids even when left out)
    train: int = DEFAULT_SIZES["train"]  # sentences in train (each one in every language)
    dev: int = DEFAULT_SIZES["dev"]  # sentences in dev
    test: int = DEFAULT_SIZES["test"]  # sentences in test
    directions: str = "all"  # all | none | SRC,..:TGT,.. (see manifest.parse_directions)
    seed: int = 0  # sentence order (hence splits) and voices
    workers: int = 2  # espeak-ng processes at a time
    audio_format: str = "flac"  # flac | wav
    locale_dir: Path = LOCALE_DIR  # gettext catalogues
    synthesizers: tuple[str, ...] = ("espeak-ng",)  # voices.SYNTHESIZERS drawn from per utterance, where they
    #   speak the language (flite and festival: English only); one draws as before this option existed
    augmentation: voices.Augmentation | None = None  # applied to train (and prose) utterances only
    prose: int = 0  # English prose sentences from installed documentation, as ASR rows in prose.jsonl (needs eng)
    heldout_voice: str = ""  # SYNTH or SYNTH:VOICE never used in train/dev/test; reads the test sentences
    #   (the languages it speaks) into heldout.jsonl
    unseen_test: int = 0  # more test sentences, taken after train is full from the sentences no unseen_by file lists
    unseen_by: tuple[Path, ...] = ()  # files of sentence ids, one a line (a checkpoint's train_sentences.txt)


@dataclass
class MiniSummary:
    out: str  # the output folder
    langs: list[str]  # ISO 639-3
    directions: list[str]  # "src-tgt"
    sentences: dict[str, int]  # per split
    rows: dict[str, int]  # manifest rows per split (ASR + translation)
    hours: dict[str, float]  # speech per language, all splits
    rejected: dict[str, int] = field(default_factory=dict)  # "lang: reason" -> utterances
    rejected_sentences: int = 0  # sentences dropped because some language failed a check
    rejected_examples: list[str] = field(default_factory=list)  # the first few, "lang: reason: text"
    extra: dict[str, int] = field(default_factory=dict)  # rows of prose.jsonl / heldout.jsonl, when asked for
    extra_hours: dict[str, float] = field(default_factory=dict)  # their speech (not in `hours`: that is the
    #   speech of train/dev/test, the corpus proper)
    unseen_test: int = 0  # of the test sentences, those taken after train (MiniOptions.unseen_test)
    voices: dict[str, int] = field(default_factory=dict)  # "synth:voice" -> utterances, all manifests
    heldout_twins: list[str] = field(default_factory=list)  # voices left out of every split for being the
    #   held-out voice's speaker under another synthesizer (voices.SAME_SPEAKER); heldout.jsonl is not read by them
    twins_of_train: dict[str, list[str]] = field(default_factory=dict)  # dev / test sentence ids a train sentence
    #   reads like in some language (`twins_of_train`): the same speech and text in train, counted, not removed
    unseen_by_unknown: int = 0  # ids the unseen_by files list whose texts neither these catalogues nor the installed
    #   prose have: sentences reading like them could not be looked for (`read_alike`), only their ids are left out
    moved_aside: dict[str, str] = field(default_factory=dict)  # another corpus's files in OUT -> their names now
    seconds: float = 0.0  # build time

    def lines(self) -> list[str]:
        return [f"mini corpus in {self.out}: {len(self.langs)} languages ({', '.join(self.langs)}), "
               f"{len(self.directions)} directions",
               "sentences per split: " + ", ".join(f"{k} {v}" for k, v in self.sentences.items())
               + (f" ({self.unseen_test} of the test sentences taken after train, unseen by the listed models)"
                  if self.unseen_test else ""),
               "rows per split: " + ", ".join(f"{k} {v}" for k, v in self.rows.items()),
               "hours of speech: " + ", ".join(f"{k} {v:.3f}" for k, v in self.hours.items())
               + f" (total {sum(self.hours.values()):.2f})",
               f"rejected {self.rejected_sentences} sentences: "
               + (", ".join(f"{k} x{v}" for k, v in sorted(self.rejected.items())) or "none")
               + (" (a sentence rejected in several languages counts in each)"
                  if sum(v for k, v in self.rejected.items() if not k.startswith(("prose ", "heldout ")))
                  > self.rejected_sentences else ""),  # (prose and the held-out voice's are not of the sentences)
               *(f"{name}.jsonl: {n} rows" + (f", {self.extra_hours[name]:.3f} hours of speech"
                                              if name in self.extra_hours else "") for name, n in self.extra.items()),
               *([f"also left out of every split, the held-out voice's speaker: {', '.join(self.heldout_twins)} "
                  "(heldout.jsonl is read by the named voice alone)"] if self.heldout_twins else []),
               *([f"warning: {self.unseen_by_unknown} ids listed by --unseen-by are no sentence of these catalogues "
                  "or of the installed prose: those ids are left out of the unseen test sentences, but sentences that "
                  "read like them could not be looked for"] if self.unseen_by_unknown else []),
               *(f"warning: {len(ids)} {split} sentences read like train sentences in some language (the same "
                 f"letters once quotes, case and punctuation are set aside; e.g. {', '.join(ids[:3])}): their rows "
                 "are not held out" for split, ids in self.twins_of_train.items() if ids),
               "utterances per synthesizer: " + ", ".join(
                   f"{synth} {sum(n for v, n in self.voices.items() if v.split(':')[0] == synth)} ("
                   f"{sum(v.split(':')[0] == synth for v in self.voices)} voices)"
                   for synth in sorted({v.split(":")[0] for v in self.voices})),
               *([MOVED_ASIDE.format(_moves(self.moved_aside))] if self.moved_aside else []),
               f"built in {self.seconds:.1f} s"]


def build_mini(opts: MiniOptions) -> MiniSummary:
    """Build the corpus described by `opts` (see the module docstring). Deterministic."""
    start = time.monotonic()
    check_output_folder(Path(opts.out))  # before minutes of synthesis, not at the first file written
    langs = _check_languages(opts.langs)
    if opts.prose and "eng" not in langs:  # said before any synthesis, not after it
        raise LLMSRTError(f"--prose {opts.prose} adds English speech (ASR rows in prose.jsonl) to the English of the "
                          f"corpus, and --langs {','.join(langs)} has no English; add eng to --langs, or leave "
                          "--prose out")
    pairs = parse_directions(opts.directions, langs)
    sizes = {"train": opts.train, "dev": opts.dev, "test": opts.test, UNSEEN: opts.unseen_test}
    if min(sizes.values()) < 0:
        raise LLMSRTError(f"sentence counts must not be negative: {sizes}")
    unseen_by = _listed_ids(opts.unseen_by)
    if opts.unseen_by and not opts.unseen_test:
        raise LLMSRTError("--unseen-by only chooses the --unseen-test sentences (the other splits keep theirs); "
                          "give --unseen-test N, or leave --unseen-by out")
    if opts.audio_format not in AUDIO_FORMATS:
        raise LLMSRTError(f"audio format {opts.audio_format!r}: use one of {', '.join(AUDIO_FORMATS)}")
    require_tools(langs)  # before the last build's manifests are removed below (a missing mecab lost them)
    voices.require(opts.synthesizers)
    if "espeak-ng" in (*opts.synthesizers, voices.parse_voice(opts.heldout_voice)[0] if opts.heldout_voice else ""):
        require_espeak_voices(langs)
    heldout = {}  # lang -> the held-out voice's names: a mistyped one is said here, before any speech
    if opts.heldout_voice:
        voices.require((voices.parse_voice(opts.heldout_voice)[0],))
        heldout = voices.named(opts.heldout_voice, langs)
    if opts.augmentation:
        voices.check(opts.augmentation)
    for lang in langs:
        if not voices.pool(lang, opts.synthesizers, opts.heldout_voice):
            raise LLMSRTError(f"no voice of --synthesizers {','.join(opts.synthesizers)} speaks {lang} (without "
                              f"--heldout-voice {opts.heldout_voice or '-'}); add espeak-ng, which speaks them all")
    sentences = harvest(langs, opts.locale_dir)
    needed = sum(sizes.values())
    if len(sentences) < needed:
        raise LLMSRTError(f"only {len(sentences)} sentences are translated into all of {', '.join(langs)} in "
                          f"{opts.locale_dir}, and {needed} are asked for; {FEWER}")
    unknown = 0
    if opts.unseen_test and unseen_by:
        unseen_by, unknown = read_alike(unseen_by, sentences, langs)
    order = sentence_order(sentences, opts.seed)  # the shipped split's order, whichever catalogues are installed
    out = Path(opts.out)
    moved_aside = _clear_last_build(out)  # a build stopped part way must leave no manifest of its audio
    spoken: dict[str, dict] = {}  # (sentence id, lang) -> what spoke it (voices.jsonl)
    chosen, durations, rejected, examples = _synthesize_until_full(
        [sentences[i] for i in order], langs, sizes, out, opts, spoken, unseen_by)
    chosen["test"] += chosen.pop(UNSEEN)
    rows = {split: list(_rows(chosen[split], langs, pairs, durations, out, opts.audio_format, split))
            for split in ("train", "dev", "test")}
    extra_seconds, prose_durations = {}, {}
    if opts.prose:
        texts = prose.harvest(exclude={s.texts["eng"] for s in sentences.values()})
        candidates = [Sentence(prose.sentence_id(t), d, {"eng": t}, "prose") for t, d in texts]
        random.Random(f"{opts.seed}:prose").shuffle(candidates)
        found, prose_durations, why, _ = _synthesize_until_full(candidates, ["eng"], {"train": opts.prose}, out,
                                                                opts, spoken)
        rejected.update({f"prose {k}": v for k, v in why.items()})
        rows["prose"] = list(_rows(found["train"], ["eng"], [], prose_durations, out, opts.audio_format, "train"))
        extra_seconds["prose"] = sum(prose_durations.values())
    if opts.heldout_voice:
        rows["heldout"], extra_seconds["heldout"] = _heldout(chosen["test"], heldout, pairs, out, opts, spoken,
                                                             rejected)
    else:
        shutil.rmtree(out / "heldout", ignore_errors=True)
    written = {split: write_manifest(out / f"{split}.jsonl", split_rows) for split, split_rows in rows.items()}
    extra = {name: written.pop(name) for name in ("prose", "heldout") if name in written}
    _remove_stale_audio(out, langs, durations | prose_durations, opts.audio_format)  # prose audio is in audio/eng
    _write_voices(out, spoken)
    hours = {lang: sum(d for (_, l), d in durations.items() if l == lang) / 3600 for lang in langs}
    summary = MiniSummary(out=str(out), langs=langs, directions=[f"{s}-{t}" for s, t in pairs],
                          sentences={s: len(chosen[s]) for s in ("train", "dev", "test")}, rows=written,
                          hours=hours, rejected=dict(rejected), rejected_sentences=len(examples),
                          rejected_examples=examples[:MAX_EXAMPLES], extra=extra,
                          extra_hours={k: v / 3600 for k, v in extra_seconds.items()}, unseen_test=opts.unseen_test,
                          voices=dict(Counter(r["voice"] for r in spoken.values())),
                          heldout_twins=voices.twins_left_out(opts.heldout_voice, langs, opts.synthesizers)
                          if opts.heldout_voice else [],
                          twins_of_train=twins_of_train(chosen, langs), unseen_by_unknown=unknown,
                          moved_aside=moved_aside, seconds=time.monotonic() - start)
    kept = {k: v for k, v in asdict(summary).items()  # the default build's summary.json as before these fields
            if k not in VOLATILE
            and (k not in ("extra", "extra_hours", "unseen_test", "unseen_by_unknown", "heldout_twins", "moved_aside")
                 or v)
            and (k != "voices" or opts.synthesizers != ("espeak-ng",))}
    with atomic_file(out / "summary.json") as f:
        f.write(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    return summary


def add_voice_arguments(p) -> None:
    """The `prepare mini` flags of the voice options (synthesizers, augmentation, prose, held-out voice)."""
    aug = voices.Augmentation()
    p.add_argument("--synthesizers", default="espeak-ng", help="comma-separated, drawn from per utterance where "
                   f"they speak the language: {', '.join(voices.SYNTHESIZERS)} (flite and festival: English only; "
                   "default espeak-ng, as before)")
    p.add_argument("--augment", action="store_true", help="augment train and prose utterances (speed, noise, "
                   "reverberation; seeded per utterance)")
    for name, flag, unit in (("speed", "--augment-speed", "factor"), ("snr_db", "--augment-snr", "dB"),
                             ("rt60", "--augment-rt60", "s")):
        lo, hi = getattr(aug, name)
        p.add_argument(flag, default=f"{lo},{hi}", help=f"LOW,HIGH {unit} (default {lo},{hi})")
    p.add_argument("--augment-p", type=float, default=aug.p, help=f"probability of each (default {aug.p})")
    p.add_argument("--prose", type=int, default=0, help="English prose sentences from installed documentation, "
                   "ASR rows in OUT/prose.jsonl; needs eng in --langs (default 0)")
    p.add_argument("--heldout-voice", default="", help="SYNTH or SYNTH:VOICE (e.g. flite:rms) left out of "
                   "train/dev/test; reads the test sentences into OUT/heldout.jsonl")


def voice_options(args) -> dict:
    """The MiniOptions fields of the flags `add_voice_arguments` added."""
    def pair(flag, value):
        try:
            lo, hi = (float(v) for v in value.split(","))
        except ValueError:
            raise LLMSRTError(f"{flag} {value!r}: expected LOW,HIGH (two numbers)") from None
        return lo, hi
    augmentation = voices.Augmentation(pair("--augment-speed", args.augment_speed),
                                       pair("--augment-snr", args.augment_snr),
                                       pair("--augment-rt60", args.augment_rt60), args.augment_p)
    return dict(synthesizers=tuple(s.strip() for s in args.synthesizers.split(",") if s.strip()),
                augmentation=augmentation if args.augment else None, prose=args.prose, heldout_voice=args.heldout_voice)


def _listed_ids(paths: tuple[Path, ...]) -> frozenset[str]:
    """The sentence ids in `paths` (one a line, e.g. a checkpoint's train_sentences.txt)."""
    ids: set[str] = set()
    for path in paths:
        try:
            ids.update(Path(path).read_text(encoding="utf-8-sig").split())  # (a byte order mark, as Windows editors
            #   save, made the first id another: that sentence, trained on, was taken as unseen)
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise LLMSRTError(f"--unseen-by {path}: cannot read it ({why}); give a file of sentence ids, one a line "
                              "(e.g. a checkpoint's train_sentences.txt)") from None
    return frozenset(ids)


def _check_languages(langs: tuple[str, ...]) -> list[str]:
    langs = list(dict.fromkeys(langs))
    for code in langs:
        languages.get(code)
    if len(langs) < 2:
        raise LLMSRTError(f"the mini corpus needs at least two languages, got {', '.join(langs) or 'none'}")
    return langs


# ---------------------------------------------------------------------------------------------------------------
# Speech: espeak-ng, checked without listening


@dataclass(frozen=True)
class _Job:
    sentence_id: str
    lang: str
    text: str  # what is read (kana for Japanese)
    letters: int  # letters in the written sentence (for the seconds-per-character check)
    voice: voices.Voice  # e.g. espeak-ng:de+f2, flite:slt
    speed: int  # words per minute (espeak's scale; flite and festival stretch durations by 160 / speed)
    pitch: int  # 0-99 (espeak only)
    path: str  # output audio file
    audio_format: str  # soundfile format name

    def record(self, out: Path) -> dict:
        """Its line in voices.jsonl."""
        line = {"audio": str(Path(self.path).relative_to(out)), "voice": str(self.voice), "speed": self.speed}
        if self.voice.synthesizer == "espeak-ng":
            line["pitch"] = self.pitch
        return line


def _synthesize_until_full(candidates: list[Sentence], langs: list[str], sizes: dict[str, int], out: Path,
                           opts: MiniOptions, spoken: dict[str, dict], unseen_by: frozenset[str] = frozenset()):
    """Read sentences in order until every split is full (SPLITS, then UNSEEN: sizes without a split ask for none);
    a sentence rejected in any language is skipped, and so is, for UNSEEN, one whose id is in `unseen_by`.
    Returns (split -> sentences, (id, lang) -> seconds, Counter of 'lang: reason', one 'lang: reason: text' per
    rejected sentence); fills `spoken` with the voices.jsonl record of every kept utterance."""
    require_tools(langs)
    fill = (*SPLITS, UNSEEN)
    chosen: dict[str, list[Sentence]] = {split: [] for split in fill}
    durations: dict[tuple[str, str], float] = {}
    rejected: Counter = Counter()
    examples: list[str] = []
    pos = 0

    def next_split() -> str | None:
        return next((s for s in fill if len(chosen[s]) < sizes.get(s, 0)), None)

    with ThreadPoolExecutor(max(1, opts.workers)) as pool:
        while (missing := sum(sizes.get(s, 0) - len(chosen[s]) for s in fill)) > 0:
            skip = unseen_by if next_split() == UNSEEN else frozenset()  # listed sentences are not even read
            chunk = []
            while pos < len(candidates) and len(chunk) < missing + missing // 4 + 4:
                if candidates[pos].id not in skip:
                    chunk.append(candidates[pos])
                pos += 1
            if not chunk:
                listed = (f"; {len(unseen_by)} sentences listed by --unseen-by, or reading like one, not taken as "
                          "unseen") if unseen_by else ""
                raise LLMSRTError(f"only {sum(len(v) for v in chosen.values())} sentences could be read in all of "
                                  f"{', '.join(langs)} ({len(examples)} rejected{listed}); {FEWER}")
            jobs = _jobs(chunk, langs, out, opts)
            results = list(tqdm(pool.map(_speak, jobs), total=len(jobs), desc="speech", dynamic_ncols=True,
                                leave=False))
            to_augment: list[_Job] = []
            for i, sentence in enumerate(chunk):
                span = slice(i * len(langs), (i + 1) * len(langs))
                mine = list(zip(jobs[span], results[span]))
                reasons = [f"{job.lang}: {reason}" for job, (reason, _) in mine if reason]
                split = next_split()
                if split == UNSEEN and sentence.id in unseen_by:
                    split = None  # a listed sentence read in the chunk that filled train
                if reasons or split is None:
                    for job, _ in mine:
                        Path(job.path).unlink(missing_ok=True)
                    rejected.update(reasons)
                    if reasons:
                        first = next(job for job, (reason, _) in mine if reason)
                        examples.append(f"{reasons[0]}: {sentence.texts[first.lang]}")
                    continue
                chosen[split].append(sentence)
                durations.update({(job.sentence_id, job.lang): seconds for job, (_, seconds) in mine})
                spoken.update({str(Path(job.path).relative_to(out)): job.record(out) for job, _ in mine})
                if split == "train" and opts.augmentation:
                    to_augment += [job for job, _ in mine]
            for job, (record, seconds) in zip(to_augment, pool.map(partial(_augment_file, opts=opts), to_augment)):
                durations[(job.sentence_id, job.lang)] = seconds
                spoken[str(Path(job.path).relative_to(out))].update(record)
    return chosen, durations, rejected, examples


def _jobs(chunk: list[Sentence], langs: list[str], out: Path, opts: MiniOptions) -> list[_Job]:
    """One job per (sentence, language), sentence-major; voice, speed and pitch seeded per utterance. The espeak
    variant, speed and pitch are drawn first, as before there were other synthesizers; where the language has
    other voices (or the drawn variant is held out) the synthesizer and its voice are drawn next."""
    read = {lang: _read_texts(chunk, lang) for lang in langs}
    folders = {lang: out / "audio" / lang for lang in langs}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    pools = {lang: voices.pool(lang, opts.synthesizers, opts.heldout_voice) for lang in langs}
    jobs = []
    for i, s in enumerate(chunk):
        for lang in langs:
            rng = random.Random(f"{opts.seed}:{s.id}:{lang}")
            voice, speed, pitch = _espeak_draw(rng, lang)
            choices = pools[lang]
            if list(choices) != ["espeak-ng"] or voice.name not in choices["espeak-ng"]:
                synth = rng.choice(list(choices))
                voice = voices.Voice(synth, rng.choice(choices[synth]))
            jobs.append(_Job(s.id, lang, read[lang][i], _letters(s.texts[lang]), voice, speed, pitch,
                             str(folders[lang] / f"{s.id}.{opts.audio_format}"), AUDIO_FORMATS[opts.audio_format]))
    return jobs


def _espeak_draw(rng: random.Random, lang: str) -> tuple[voices.Voice, int, int]:
    return voices.Voice("espeak-ng", f"{languages.get(lang).espeak}+{rng.choice(VARIANTS)}"), \
        rng.randint(*SPEED_RANGE), rng.randint(*PITCH_RANGE)


def espeak_draw(seed: int, sentence_id: str, lang: str) -> tuple[voices.Voice, int, int]:
    """The espeak-ng voice, speed and pitch an utterance is read with when espeak-ng is the only synthesizer (the
    default), as voices.jsonl records them: what tells which seed a corpus was built with."""
    return _espeak_draw(random.Random(f"{seed}:{sentence_id}:{lang}"), lang)


def _speak(job: _Job) -> tuple[str, float]:
    """Synthesize one utterance; returns (reason it was rejected or "", seconds)."""
    samples, reason = voices.speak(job.voice, job.text, job.lang, job.speed, job.pitch)
    if samples is None:
        return reason, 0.0
    seconds = samples.size / SAMPLE_RATE
    low, high = SECONDS_PER_CHAR[languages.get(job.lang).script]
    if seconds < low * job.letters:
        return "too short for its text", seconds
    if seconds > high * job.letters:
        return "too long for its text", seconds
    _write(job.path, samples, job.audio_format)
    return "", seconds


def _write(path: str, samples: np.ndarray, audio_format: str) -> None:
    tmp_path = f"{path}.tmp"
    sf.write(tmp_path, np.round(samples * 32767).astype(np.int16), SAMPLE_RATE, format=audio_format, subtype="PCM_16")
    Path(tmp_path).replace(path)


def _augment_file(job: _Job, opts: MiniOptions) -> tuple[dict, float]:
    """Augment a written training utterance in place (drawn from (seed, sentence, language)); returns its
    voices.jsonl fields and its new duration."""
    drawn = voices.draw_augment(random.Random(f"{opts.seed}:{job.sentence_id}:{job.lang}:augment"), opts.augmentation)
    samples, _ = sf.read(job.path, dtype="float32")
    samples = voices.augment(samples, drawn)
    _write(job.path, samples, job.audio_format)
    return ({"augment": drawn.record()} if drawn.record() else {}), samples.size / SAMPLE_RATE


def _heldout(test: list[Sentence], names: dict[str, tuple[str, ...]], pairs: list[tuple[str, str]], out: Path,
             opts: MiniOptions, spoken: dict[str, dict], rejected: Counter) -> tuple[list[Row], float]:
    """The test sentences read by the held-out voice (`names`: language -> its voice names, voices.named) into
    OUT/heldout/; (the rows of heldout.jsonl, seconds of speech)."""
    synth, _ = voices.parse_voice(opts.heldout_voice)
    root = out / "heldout"
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for lang, choices in names.items():
        (root / "audio" / lang).mkdir(parents=True, exist_ok=True)
        for s, text in zip(test, _read_texts(test, lang)):
            rng = random.Random(f"{opts.seed}:{s.id}:{lang}:heldout")
            jobs.append(_Job(s.id, lang, text, _letters(s.texts[lang]), voices.Voice(synth, rng.choice(choices)),
                             rng.randint(*SPEED_RANGE), rng.randint(*PITCH_RANGE),
                             str(root / "audio" / lang / f"{s.id}.{opts.audio_format}"),
                             AUDIO_FORMATS[opts.audio_format]))
    with ThreadPoolExecutor(max(1, opts.workers)) as pool:
        results = list(pool.map(_speak, jobs))
    durations = {}
    for job, (reason, seconds) in zip(jobs, results):
        if reason:
            rejected[f"heldout {job.lang}: {reason}"] += 1
        else:
            durations[(job.sentence_id, job.lang)] = seconds
            spoken[str(Path(job.path).relative_to(out))] = job.record(out)
    rows = list(_rows(test, list(names), [p for p in pairs if p[0] in names], durations, out, opts.audio_format,
                      "test", root / "audio"))
    return rows, sum(durations.values())


def _write_voices(out: Path, spoken: dict[str, dict]) -> None:
    """OUT/voices.jsonl: what spoke every audio file of the manifests (voice, speed, pitch, augmentation)."""
    with atomic_file(out / "voices.jsonl") as f:
        for audio in sorted(spoken):
            f.write(json.dumps(spoken[audio], ensure_ascii=False) + "\n")


def _read_texts(sentences: list[Sentence], lang: str) -> list[str]:
    """What a voice reads for each sentence in `lang`: its text, but for Japanese its kana (`mini_tools.kana`), since
    espeak-ng's Japanese voice reads kanji as "Japanese letter" in English (rejected as a voice switch). Every
    reading of a sentence goes through here: train/dev/test and the held-out voice."""
    texts = [s.texts[lang] for s in sentences]
    return kana(texts) if lang == "jpn" else texts


def _letters(text: str) -> int:
    """Letters in a written sentence (the seconds-per-character check counts the kanji, not their kana)."""
    return sum(unicodedata.category(c).startswith("L") for c in text)


def _rows(sentences: list[Sentence], langs: list[str], pairs: list[tuple[str, str]],
          durations: dict[tuple[str, str], float], out: Path, audio_format: str, split: str,
          audio_dir: Path | None = None):
    """Manifest rows of the utterances in `durations` (an ASR row and a row per target language each)."""
    targets = targets_by_source(pairs)
    for s in sentences:
        for lang in langs:
            if (s.id, lang) not in durations:
                continue  # a held-out utterance its voice could not read (counted in the summary)
            common = dict(audio=str(((audio_dir or out / "audio") / lang / f"{s.id}.{audio_format}").absolute()),
                          duration=round(durations[(s.id, lang)], 4), src_lang=lang, transcript=s.texts[lang],
                          split=split, corpus=CORPUS, sentence_id=s.id, source=f"{s.origin}:{s.domain}")
            yield Row(id=f"{CORPUS}:{lang}:{s.id}", tgt_lang="", translation="", **common)
            for tgt in targets[lang]:
                yield Row(id=f"{CORPUS}:{lang}:{s.id}:{tgt}", tgt_lang=tgt, translation=s.texts[tgt], **common)


def _clear_last_build(out: Path) -> dict[str, str]:
    """Delete an earlier mini build's manifests, voices.jsonl and summary.json (its audio is overwritten from here on);
    a manifest or summary.json of another corpus (`prepare fleurs --out` the same folder: hours of conversion) is
    moved aside to NAME.stale, or the first free of NAME.stale.1, .2, ... (`clips.aside_name`: onto NAME.stale, a third
    corpus into one OUT lost the first one's files), as the converters move theirs, and said at once (a build stopped
    later, by a voice failing or Ctrl-C, printed no summary to say it). Returns the names moved -> their new ones."""
    moved = {}
    for name in (*MANIFESTS, "voices.jsonl", "summary.json"):
        if name != "voices.jsonl" and (out / name).is_file() and not _of_mini(out / name):
            (out / name).replace(aside := aside_name(out / name))
            moved[name] = aside.name
        (out / name).unlink(missing_ok=True)
    if moved:
        print(MOVED_ASIDE.format(_moves(moved)), flush=True)
    return moved


def _moves(moved: dict[str, str]) -> str:
    return ", ".join(f"{name} to {aside}" for name, aside in moved.items())


def _of_mini(path: Path) -> bool:
    """Whether `path` (a manifest or summary.json in OUT) is empty or was written by a mini build."""
    try:
        with path.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "") if path.suffix == ".jsonl" else f.read()
        record = json.loads(first) if first.strip() else {"corpus": CORPUS}
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(record, dict) and (record.get("corpus") == CORPUS or {"langs", "directions"} <= record.keys())


def _remove_stale_audio(out: Path, langs: list[str], durations: dict[tuple[str, str], float],
                        audio_format: str) -> None:
    """Delete audio a previous build with other options left behind (only this corpus's own file names)."""
    for lang in langs:
        for path in (out / "audio" / lang).glob(f"*.{audio_format}"):
            if re.fullmatch(r"[0-9a-f]{10}", path.stem) and (path.stem, lang) not in durations:
                path.unlink()
