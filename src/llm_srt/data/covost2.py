"""CoVoST 2 on disk -> manifests.

Input: one or more `covost_v2.<src>_<tgt>.tsv` files (Common Voice locale codes, e.g. covost_v2.en_de.tsv,
covost_v2.zh-CN_en.tsv; tab-separated with a header holding at least path, sentence, translation, split) and the
Common Voice clips they name (`--clips`: either the clips folder itself or a Common Voice root holding
<locale>/clips/).

Output: OUT/<split>.jsonl for each split found (train / dev / test; other labels are kept as they are). Each clip
gives one ASR row (id "covost2:<clip>", once even when several tsv files share the source clips) and one
translation row per tsv that translates it (id "covost2:<clip>:<tgt>"). CoVoST has no cross-language sentence id;
the clip name serves as sentence_id. Durations are read from each clip's header (mp3 clips are scanned).
"""

import csv
import re
import sys
from collections import defaultdict
from pathlib import Path

from .. import languages
from ..audio import duration as header_duration
from ..errors import AudioError, LLMSRTError
from .manifest import Row, write_manifest

CORPUS = "covost2"
TSV_NAME = re.compile(r"^covost_v2\.(?P<src>[A-Za-z-]+)_(?P<tgt>[A-Za-z-]+)\.tsv$")
REQUIRED_COLUMNS = ("path", "sentence", "translation", "split")


def prepare_covost2(tsv_dir: str | Path, clips: str | Path, out: str | Path,
                    pairs: list[tuple[str, str]] | None = None) -> dict[str, int]:
    """Write OUT/<split>.jsonl; returns rows written per split. `pairs`: (src, tgt) ISO 639-3 pairs to keep
    (None: every covost_v2.*.tsv found in `tsv_dir`)."""
    tsv_dir, clips, out = Path(tsv_dir), Path(clips), Path(out)
    tables = find_tables(tsv_dir)
    if pairs is not None:
        tables = {p: t for p, t in tables.items() if p in set(pairs)}
    if not tables:
        raise LLMSRTError(f"{tsv_dir}: no covost_v2.<src>_<tgt>.tsv files found"
                          + (f" for {pairs}" if pairs else ""))
    rows_by_split: dict[str, list[Row]] = defaultdict(list)
    asr_done: set[str] = set()
    durations: dict[Path, float] = {}
    for (src, tgt), tsv in sorted(tables.items()):
        for lineno, rec in read_table(tsv):
            audio = resolve_clip(clips, languages.get(src).commonvoice, rec["path"], f"{tsv}:{lineno}")
            if audio not in durations:
                durations[audio] = clip_duration(audio, f"{tsv}:{lineno}")
            stem = Path(rec["path"]).stem
            common = dict(audio=str(audio), duration=durations[audio], src_lang=src,
                          transcript=rec["sentence"].strip(), split=rec["split"].strip(), corpus=CORPUS,
                          sentence_id=stem, source=tsv.name)
            if stem not in asr_done:
                asr_done.add(stem)
                rows_by_split[common["split"]].append(Row(id=f"{CORPUS}:{stem}", tgt_lang="", translation="",
                                                          **common))
            if rec["translation"].strip():
                rows_by_split[common["split"]].append(Row(id=f"{CORPUS}:{stem}:{tgt}", tgt_lang=tgt,
                                                          translation=rec["translation"].strip(), **common))
    return {split: write_manifest(out / f"{split}.jsonl", rows) for split, rows in sorted(rows_by_split.items())}


def find_tables(tsv_dir: Path) -> dict[tuple[str, str], Path]:
    """(src, tgt) ISO 639-3 -> covost_v2.<src>_<tgt>.tsv, for the locales the registry knows."""
    by_locale = languages.by_commonvoice_locale()
    tables = {}
    for tsv in sorted(tsv_dir.glob("covost_v2.*.tsv")):
        m = TSV_NAME.match(tsv.name)
        if not m:
            continue
        src, tgt = by_locale.get(m["src"]), by_locale.get(m["tgt"])
        if src is None or tgt is None:
            unknown = m["src"] if src is None else m["tgt"]
            print(f"skipping {tsv.name}: locale {unknown!r} is not in llm_srt/languages.py", file=sys.stderr)
            continue
        tables[(src, tgt)] = tsv
    return tables


def read_table(tsv: Path, required: tuple[str, ...] = REQUIRED_COLUMNS):
    """(line number, record) for each data line of a CoVoST / Common Voice tsv (with a header naming at least
    the `required` columns)."""
    csv.field_size_limit(sys.maxsize)
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise LLMSRTError(f"{tsv}:1: header lacks column(s) {', '.join(missing)} "
                              f"(found: {', '.join(reader.fieldnames or [])})")
        for rec in reader:
            if rec.get("path"):
                yield reader.line_num, rec


def resolve_clip(clips: Path, locale: str, name: str, where: str) -> Path:
    """A clip by name: CLIPS/<name>, else CLIPS/<locale>/clips/<name>."""
    for candidate in (clips / name, clips / locale / "clips" / name):
        if candidate.is_file():
            return candidate
    raise LLMSRTError(f"{where}: clip {name} not found under {clips} (nor {clips / locale / 'clips'}); "
                      "point --clips at the Common Voice clips folder")


def clip_duration(audio: Path, where: str) -> float:
    try:
        return header_duration(audio)
    except AudioError as e:
        raise LLMSRTError(f"{where}: {e}") from None
