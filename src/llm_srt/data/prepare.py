"""`llm-srt prepare CORPUS ...`: corpora on disk -> JSONL manifests (see llm_srt.data.manifest).

    llm-srt prepare mini --out data/mini                      # the embedded corpus (gettext text + espeak-ng)
    llm-srt prepare mini --survey                             # sentences per language on this machine
    llm-srt prepare fleurs --root fleurs/ --out data/fleurs --directions 6x12
    llm-srt prepare covost2 --tsv-dir covost/ --cv-dir cv4/en --out data/covost2 --pairs eng-deu,eng-jpn
    llm-srt prepare commonvoice --locale-dir cv/de --out data/cv-de --validated-as-train
    llm-srt prepare check data/mini/train.jsonl               # validate manifests (every bad row, file:line)
"""

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from .. import languages
from ..errors import LLMSRTError, shown
from ..paths import CACHE_ENV, cache_dir

EVALUATION_SPLIT = re.compile(r"test|^tst", re.IGNORECASE)  # a split training never reads: check notes its rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    for name, (add, _, help_text) in CORPORA.items():
        add(sub.add_parser(name, help=help_text, description=help_text))


def main(args: argparse.Namespace) -> int:
    try:
        return CORPORA[args.corpus][1](args)
    except OSError as e:  # a disk or permission error the converters do not name themselves: one line, no traceback
        if isinstance(e, BrokenPipeError):  # the CLI's own handling (stdout's reader gone)
            raise
        where = shown(str(e.filename)) if e.filename is not None else f"prepare {args.corpus}"
        todo = "check the path" if isinstance(e, FileNotFoundError) else "check the disk and its permissions there"
        raise LLMSRTError(f"{where}: cannot read or write ({e.strerror or e}); {todo}, then run it again") from e


MINI_FOLDER = Path("data", "mini")  # where configs/embedded, the demo and the bench read the mini corpus
#   (relative: the current folder, the repository root)


def default_mini_dir() -> Path:
    """Where `prepare mini` writes when --out is not given."""
    return cache_dir() / "data" / "mini"


# ---------------------------------------------------------------------------------------------------------------


def _add_mini(p: argparse.ArgumentParser) -> None:
    from .mini import DEFAULT_LANGS, DEFAULT_SIZES, LOCALE_DIR, add_voice_arguments

    p.add_argument("--out", type=Path, default=None, help="output folder (default: the cache's data/mini)")
    p.add_argument("--langs", default=",".join(DEFAULT_LANGS), help="ISO 639-3 codes, comma-separated "
                   f"(default {','.join(DEFAULT_LANGS)}; see --survey for what this machine offers)")
    for split in ("train", "dev", "test"):
        p.add_argument(f"--{split}", type=int, default=DEFAULT_SIZES[split], help=f"sentences in {split}")
    p.add_argument("--unseen-test", type=int, default=0, metavar="N",
                   help="N more test sentences, taken after train is full from sentences no --unseen-by file lists "
                        "(a test set models trained on a larger --train never saw; test, dev and train unchanged)")
    p.add_argument("--unseen-by", type=Path, action="append", default=[], metavar="FILE",
                   help="sentence ids, one a line, that --unseen-test leaves out (e.g. a checkpoint's "
                        "train_sentences.txt); repeat for several")
    p.add_argument("--directions", default="all", help="all | none | SRC,..:TGT,.. (default all)")
    p.add_argument("--seed", type=int, default=0, help="sentence order (splits) and voices")
    p.add_argument("--workers", type=int, default=2, help="parallel espeak-ng processes")
    p.add_argument("--audio-format", choices=("flac", "wav"), default="flac")
    p.add_argument("--locale-dir", type=Path, default=LOCALE_DIR, help="where the gettext catalogues are")
    p.add_argument("--survey", action="store_true", help="only count sentences per language, build nothing")
    add_voice_arguments(p)


def _run_mini(args: argparse.Namespace) -> int:
    from .catalogues import survey
    from .clips import check_output_folder
    from .mini import MiniOptions, build_mini, voice_options

    if args.survey:
        counts = survey(args.locale_dir)
        for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"{code}  {languages.get(code).name:<12} {n:6d} sentences paired with English")
        return 0
    if args.out is None:  # build_mini's own check would ask for another --out, which the user never gave
        check_output_folder(default_mini_dir(), default_of=CACHE_ENV)
    opts = MiniOptions(out=args.out or default_mini_dir(), langs=tuple(languages.parse_list(args.langs)),
                       train=args.train, dev=args.dev, test=args.test, directions=args.directions, seed=args.seed,
                       workers=args.workers, audio_format=args.audio_format, locale_dir=args.locale_dir,
                       unseen_test=args.unseen_test, unseen_by=tuple(args.unseen_by), **voice_options(args))
    for line in build_mini(opts).lines():
        print(line)
    return 0


def _add_clip_options(p: argparse.ArgumentParser) -> None:
    from .clips import DEFAULT_WORKERS

    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help=f"threads reading clip headers (default {DEFAULT_WORKERS})")
    p.add_argument("--strict", action="store_true", help="stop at the first missing, empty or undecodable clip "
                   "(default: skip it, count it, list it in OUT/summary.json)")


def _add_fleurs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, required=True, help="FLEURS folder holding en_us/, de_de/, ...")
    p.add_argument("--out", type=Path, required=True)
    _add_clip_options(p)
    p.add_argument("--langs", default=None,
                   help="ISO 639-3 codes, comma-separated, or all: the paper's 15 (default: every locale folder found)")
    p.add_argument("--directions", default="all", help="all | 6x12 | 15x14 | none | SRC,..:TGT,..")
    p.add_argument("--splits", default="train,dev,test")
    p.add_argument("--no-check-audio", action="store_true", help="do not open the wavs (trust the tables)")


def _run_fleurs(args: argparse.Namespace) -> int:
    from .fleurs import prepare_fleurs

    langs = languages.parse_list(args.langs) if args.langs else None
    summary = prepare_fleurs(args.root, langs, args.out, args.directions, _splits(args.splits),
                             check_audio=not args.no_check_audio, workers=args.workers, strict=args.strict)
    _print_lines(summary.lines())
    return 0


def _splits(text: str) -> tuple[str, ...]:
    """--splits "train, dev" -> ("train", "dev"): each of train, dev, test, at most once."""
    names = tuple(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = [s for s in names if s not in ("train", "dev", "test")]
    if unknown or not names:
        raise LLMSRTError(f"--splits {text!r}: name splits among train, dev, test (e.g. --splits train,dev)")
    return names


def _add_covost2(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tsv-dir", type=Path, required=True, help="folder with the released covost_v2.<src>_<tgt>.tsv "
                   "tables (or get_covost_splits.py's covost_v2.<src>_<tgt>.<split>.tsv files)")
    p.add_argument("--cv-dir", type=Path, required=True, help="the Common Voice 4 locale folder (validated.tsv, "
                   "clips/), or a folder holding one per source locale (en/, zh-CN/, ...)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pairs", default=None, help="SRC-TGT pairs to keep, e.g. eng-deu,eng-jpn (default: all)")
    _add_clip_options(p)


def _run_covost2(args: argparse.Namespace) -> int:
    from .covost2 import prepare_covost2

    pairs = None
    if args.pairs:
        pairs = []
        for item in args.pairs.split(","):
            src, sep, tgt = item.strip().partition("-")
            if not sep:
                raise LLMSRTError(f"--pairs item {item!r}: write SRC-TGT, e.g. eng-deu")
            pairs.append((languages.get(src).code, languages.get(tgt).code))
    _print_lines(prepare_covost2(args.tsv_dir, args.cv_dir, args.out, pairs, args.workers, args.strict).lines())
    return 0


def _add_commonvoice(p: argparse.ArgumentParser) -> None:
    p.add_argument("--locale-dir", type=Path, required=True, help="a Common Voice locale folder, e.g. cv/de")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--lang", default=None, help="ISO 639-3 (default: from the folder name)")
    p.add_argument("--splits", default="train,dev,test")
    p.add_argument("--validated-as-train", action="store_true",
                   help="add validated clips whose speaker and sentence are in neither dev nor test to train")
    p.add_argument("--exclude", action="append", default=[], metavar="MANIFEST",
                   help="an evaluation set's manifest (repeat for several), e.g. data/covost2/test.jsonl: its clips, "
                        "their speakers and its sentences are left out of train and dev")
    _add_clip_options(p)


def _run_commonvoice(args: argparse.Namespace) -> int:
    from .commonvoice import prepare_commonvoice

    lang = languages.get(args.lang).code if args.lang else None
    summary = prepare_commonvoice(args.locale_dir, args.out, lang, _splits(args.splits),
                                  args.validated_as_train, workers=args.workers, strict=args.strict,
                                  exclude=args.exclude)
    _print_lines(summary.lines())
    return 0


def _add_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifests", nargs="+", type=Path)
    p.add_argument("--no-check-audio", action="store_true")


def _run_check(args: argparse.Namespace) -> int:
    """Each manifest read as evaluation reads it, then its rows held to training's limits (`training_refuses`: a row
    over Whisper's 30 s window, a text longer than its duration can hold), which every row must meet that training
    may read (its data.train and data.dev rows, whatever their split); a row of an evaluation split (a name holding
    "test" or starting "tst": test, devtest, tst-COMMON) that fails them is noted only (prepare keeps such clips in
    test). Every manifest is checked, a bad one named on stderr; exit 1 if any was bad. A manifest with bad rows
    (bad JSON, an unknown language, ...) has its other rows held to training's limits too: all it needs fixing is
    said at once."""
    from ..audio import WINDOW_SECONDS
    from .clips import counted
    from .manifest import MAX_LISTED, lines_of, read_manifest, training_refuses

    bad = 0
    for path in args.manifests:
        malformed = False
        try:
            rows = read_manifest(path, check_audio=not args.no_check_audio,
                                 read_headers=not args.no_check_audio)  # a clip no decoder reads, or cut short
        except LLMSRTError as e:  # named, and the manifests after it still checked
            print(f"llm-srt prepare: error: {e}", file=sys.stderr)
            bad += 1
            malformed = True
            rows = _readable_rows(path, not args.no_check_audio)
        refused = [(row, problem) for row in rows if (problem := training_refuses(row, WINDOW_SECONDS))]
        trained = [(row, problem) for row, problem in refused if not EVALUATION_SPLIT.search(row.split)]
        name = shown(str(path))
        if trained:
            bad += not malformed
            lines = lines_of(path, {row.id for row, _ in trained[:MAX_LISTED]})
            listed = "\n  ".join(f"{name}:{lines.get(row.id, '?')}: {problem}" for row, problem in trained[:MAX_LISTED])
            more = f"\n  ... and {len(trained) - MAX_LISTED} more" if len(trained) > MAX_LISTED else ""
            print(f"llm-srt prepare: error: {name}: {len(trained)} of its "
                  f"{counted(len(rows), 'other row' if malformed else 'row')} `llm-srt train` refuses; fix or drop "
                  f"them, or skip them (train data.skip_bad=true):\n  {listed}{more}", file=sys.stderr)
            continue
        if malformed:
            continue
        hours = sum(r.duration for r in rows if r.is_asr) / 3600
        directions = Counter(f"{r.src_lang}-{r.tgt_lang}" for r in rows if not r.is_asr)
        print(f"{path}: {counted(len(rows), 'row')} ok: {sum(r.is_asr for r in rows)} ASR ({hours:.2f} h), "
              f"{counted(sum(directions.values()), 'translation row')} in {len(directions)} directions")
        if refused:
            row, problem = refused[0]
            splits = ", ".join(sorted({r.split for r, _ in refused}))
            print(f"{path}: {counted(len(refused), 'row')} of {splits} `llm-srt train` would refuse (evaluation reads "
                  f"them), the first: {name}:{lines_of(path, {row.id}).get(row.id, '?')}: {problem}")
    if bad and len(args.manifests) > 1:
        print(f"llm-srt prepare: {bad} of {len(args.manifests)} manifests are bad (named above)", file=sys.stderr)
    return 1 if bad else 0


def _readable_rows(path: Path, check_audio: bool) -> list:
    """The rows of a manifest with bad rows that read well (read again, skipping the bad ones read_manifest named);
    none where it has none, or cannot be read at all."""
    import warnings

    from .manifest import read_manifest

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (its "skipped N bad rows": they are listed already)
            return read_manifest(path, check_audio=check_audio, skip_bad=True, read_headers=check_audio)
    except LLMSRTError:
        return []


def _print_lines(lines: list[str]) -> None:
    for line in lines:
        print(line)


# corpus -> (add its arguments, run it, one-line help)
CORPORA = {
    "mini": (_add_mini, _run_mini, "the embedded corpus: gettext sentences read by espeak-ng"),
    "fleurs": (_add_fleurs, _run_fleurs, "FLEURS locale folders -> many-to-many manifests"),
    "covost2": (_add_covost2, _run_covost2, "CoVoST 2 tables joined with Common Voice 4 -> manifests"),
    "commonvoice": (_add_commonvoice, _run_commonvoice, "a Common Voice locale folder -> ASR manifests"),
    "check": (_add_check, _run_check, "validate manifests (every bad row reported with file:line)"),
}
