"""`llm-srt score`: corpus BLEU / chrF / WER / CER of a hypothesis file against a reference file, line by line.

    llm-srt score --hyp hyp.deu.txt --ref ref.deu.txt --tgt-lang deu
    BLEU = 36.90  nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0  (texts NFC-normalized)
    llm-srt score --hyp hyp.deu.txt --ref ref.deu.txt --src src.eng.txt --tgt-lang deu --metric comet
    COMET = 80.12  model:Unbabel/wmt22-comet-da|x100|n:1012     (in its own Python: evaluate/comet.py)
"""

import argparse
import json
import os
import re
import sys
from pathlib import Path

from .. import languages
from ..errors import LLMSRTError, open_regular, shown
from . import metrics
from .comet import DEFAULT_MODEL, CometOptions, check_model, check_python, segment_scores

DECIMALS = 2  # SacreBLEU's own width for the printed score
UNSEGMENTED_SCRIPTS = ("Hans", "Hant", "Jpan", "Thai")  # written without spaces between words (Korean has them)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`llm-srt score`'s options. Each that takes one value, given twice with two values, is refused in one line
    (`store_once`, which cli's parser applies), where argparse kept the last one unsaid (two --hyp scored the second
    file alone)."""
    parser.add_argument("--hyp", required=True, type=Path, help="system output, one sentence per line (UTF-8)")
    parser.add_argument("--ref", required=True, type=Path, help="references, one sentence per line (UTF-8)")
    parser.add_argument("--tgt-lang", required=True,
                        help="ISO 639-3 code of the texts' language (picks the BLEU tokenizer and the "
                             "WER/CER normalizer)")
    parser.add_argument("--metric", choices=[*metrics.METRICS, "comet"], default="bleu",
                        help="metric to compute (default: bleu; comet needs --src and `llm-srt setup --comet`)")
    parser.add_argument("--src", type=Path, default=None, help="source sentences, one per line (COMET reads them)")
    parser.add_argument("--comet-model", default=DEFAULT_MODEL, help="COMET model name, folder or checkpoint file")
    parser.add_argument("--comet-python", default=None,
                        help="the Python with unbabel-comet (default: $LLM_SRT_COMET_PYTHON, else the setup's)")
    parser.add_argument("--json", action="store_true",
                        help='print {"metric", "score", "signature", "n", "skipped"} as JSON')


CUE_TIMING = re.compile(r"\s*(\d+:)?\d{1,2}:\d{2}[,.]\d{3}\s*-->\s*(\d+:)?\d{1,2}:\d{2}[,.]\d{3}.*")  # SRT/VTT's
COMET_ONLY = (("src", None), ("comet_model", DEFAULT_MODEL), ("comet_python", None))  # (option, its default): read by
#   --metric comet alone


def main(args: argparse.Namespace) -> int:
    if args.metric != "comet" and (given := [f"--{k.replace('_', '-')}" for k, default in COMET_ONLY
                                            if getattr(args, k) != default]):
        raise LLMSRTError(f"{' and '.join(given)}: read by --metric comet alone, and this is --metric {args.metric}; "
                          "add --metric comet, or leave them out")  # (they were ignored unsaid: no COMET ran)
    hyps, refs = read_lines(args.hyp), read_lines(args.ref)
    hyp, ref = shown(str(args.hyp)), shown(str(args.ref))
    for name, lines in ((hyp, hyps), (ref, refs)):
        check_sentences(name, lines)
    if not hyps:
        raise LLMSRTError(f"{hyp} is empty: there is nothing to score")
    if len(hyps) != len(refs):
        raise LLMSRTError(f"{hyp} has {len(hyps)} lines but {ref} has {len(refs)}; "
                          "hypotheses and references must pair up line by line")
    lang = languages.get(args.tgt_lang)  # before COMET too, which reads no language: a typo ('de') was not said
    if args.metric == "comet":
        return print_comet(args, hyps, refs)
    score = metrics.compute(args.metric, hyps, refs, args.tgt_lang)
    usual = lang.asr_metric
    if args.metric in ("wer", "cer") and args.metric != usual:
        where = "in the paper's tables and in `llm-srt evaluate`"
        if usual == "cer" and lang.script in UNSEGMENTED_SCRIPTS:
            where += " (WER counts a sentence of an unsegmented script as one word)"
        elif usual == "cer":  # Korean: written with spaces, CER as the paper's scoring script has it
            where = (f"in `llm-srt evaluate`, as the paper's own scoring script scores it (though {lang.name} is "
                     "written with spaces)")
        print(f"note: {args.tgt_lang} transcripts are scored by {usual.upper()} {where}; --metric {usual} gives that",
              file=sys.stderr)
    if args.json:
        print(json.dumps({"metric": score.metric, "score": round(score.score, DECIMALS),
                          "signature": score.signature, "n": score.n, "skipped": score.skipped}, ensure_ascii=False))
    else:
        print(score.format(DECIMALS) + (f"  (skipped {score.skipped} of {len(hyps)} lines: reference empty after "
                                        "normalization)" if score.skipped else ""))
    return 0


def print_comet(args: argparse.Namespace, hyps: list[str], refs: list[str]) -> int:
    """Mean COMET (x 100) of the lines, each scored from (source, hypothesis, reference)."""
    if args.src is None:
        raise LLMSRTError("--metric comet needs --src: COMET reads each source sentence beside its hypothesis")
    srcs = read_lines(args.src)
    if len(srcs) != len(hyps):
        raise LLMSRTError(f"{shown(str(args.src))} has {len(srcs)} lines but {shown(str(args.hyp))} has {len(hyps)}; "
                          "sources and hypotheses must pair up line by line")
    options = CometOptions(model=args.comet_model, python=args.comet_python)
    check_comet(options, "--comet-model")  # as `evaluate --comet` checks them: a Python without unbabel-comet, or a
    #   model folder without its checkpoint, was COMET's own ModuleNotFoundError or ValueError, under --comet, an
    #   option `score` does not have
    scores = segment_scores([{"src": s, "mt": h, "ref": r} for s, h, r in zip(srcs, hyps, refs)], options,
                            "--comet-model")  # its errors said "--comet", an option `score` does not have
    mean = 100 * sum(scores) / len(scores)
    signature = f"model:{options.model}|x100|n:{len(scores)}"
    if args.json:  # the keys and lowercase name of the other metrics; COMET scores every line, so none is skipped
        print(json.dumps({"metric": "comet", "score": round(mean, DECIMALS), "signature": signature,
                          "n": len(scores), "skipped": 0}, ensure_ascii=False))
    else:
        print(f"COMET = {mean:.{DECIMALS}f}  {signature}")
    return 0


def check_comet(options: CometOptions, option: str = "--comet") -> None:
    """A one-line error, before any long work, for the COMET Python `options` names where it has no unbabel-comet
    (`check_python`), then for its model where that is no COMET checkpoint (`check_model`; `option`: the option
    that named the model): `score --metric comet` and `evaluate --comet` check the same way."""
    check_python(options.python)
    check_model(options.model, option)


def check_sentences(name: str, lines: list[str]) -> None:
    """A one-line error for a file that is not one sentence a line: subtitles (SRT/VTT) or JSON lines (`evaluate`'s
    hyps.NAME.jsonl), whose cue numbers, timings or keys were scored as words (a subtitle file against another with
    the same timings and other texts gave BLEU 59.9; evaluate's own hyps file WER 636)."""
    text = [line for line in lines if line.strip()]
    if text and text[0].lstrip("\ufeff").startswith("WEBVTT") or any(CUE_TIMING.fullmatch(line) for line in text):
        raise LLMSRTError(f"{name}: a subtitle file (SRT/VTT), whose cue numbers and timings would be scored as words; "
                          "give one sentence a line (`llm-srt translate ... --format text` writes them)")
    try:
        first = json.loads(text[0]) if text and text[0].lstrip().startswith("{") else None
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict):
        hint = (f"; an `llm-srt evaluate` results file is scored by `llm-srt evaluate --model NAME={name} --out DIR`"
                if {"hyp_translation", "hyp_transcript"} & first.keys() else "")
        raise LLMSRTError(f"{name}: JSON lines, whose keys would be scored as words; give one sentence a line{hint}")


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file, without line endings (a final newline does not make an extra line).
    A byte-order mark at the start is a BOM, not text (an editor's "UTF-8 with BOM" scores like plain UTF-8)."""
    name = shown(str(path))
    fd = open_regular(path, name)
    try:
        with os.fdopen(fd, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise LLMSRTError(f"{name}: not valid UTF-8 (byte {e.start}); re-save the file as UTF-8") from None
    except OSError as e:
        raise LLMSRTError(f"{name}: cannot read the file ({e.strerror or e}); check it") from None
    # line ends are \n, \r\n or a lone \r (as text mode reads them); not str.splitlines(), which would also split
    # inside a sentence at U+2028, U+0085 and the like.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines
