"""Common Voice on disk -> ASR manifests (the curriculum's first stage).

Input: a Common Voice locale folder (e.g. cv-corpus-17.0/de/) with train.tsv, dev.tsv, test.tsv, validated.tsv
(header with at least `path` and `sentence`; `sentence_id` is used when present) and clips/*.mp3. The language
comes from the folder name (Common Voice locale, see languages.by_commonvoice_locale()) unless given.

Output: OUT/<split>.jsonl with ASR rows only (tgt_lang and translation empty), id "commonvoice:<lang>:<clip>".
With `validated_as_train`, validated clips whose sentence is in neither dev nor test are added to train (Common
Voice's official train split is much smaller than its validated set); splits stay disjoint by sentence.
"""

import hashlib
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path

from .. import languages
from ..errors import LLMSRTError
from .covost2 import clip_duration, read_table
from .manifest import Row, write_manifest

CORPUS = "commonvoice"
SPLITS = ("train", "dev", "test")
REQUIRED_COLUMNS = ("path", "sentence")


def prepare_commonvoice(locale_dir: str | Path, out: str | Path, lang: str | None = None,
                        splits: tuple[str, ...] = SPLITS, validated_as_train: bool = False) -> dict[str, int]:
    """Write OUT/<split>.jsonl; returns rows written per split."""
    locale_dir, out = Path(locale_dir), Path(out)
    lang = lang or _language_of(locale_dir)
    rows_by_split: dict[str, list[Row]] = defaultdict(list)
    seen_clips: set[str] = set()
    held_out: set[str] = set()
    for split in splits:
        for row in read_split(locale_dir, lang, split):
            seen_clips.add(Path(row.audio).name)
            rows_by_split[split].append(row)
            if split != "train":
                held_out.add(row.sentence_id)
    if validated_as_train:
        # validated.tsv repeats the split files' clips: skip them before reading their durations
        for row in read_split(locale_dir, lang, "validated", split_name="train", skip_clips=seen_clips):
            if Path(row.audio).name not in seen_clips and row.sentence_id not in held_out:
                seen_clips.add(Path(row.audio).name)
                rows_by_split["train"].append(row)
    return {split: write_manifest(out / f"{split}.jsonl", rows) for split, rows in rows_by_split.items()}


def read_split(locale_dir: Path, lang: str, split: str, split_name: str | None = None,
               skip_clips: Collection[str] = ()) -> list[Row]:
    """ASR rows of LOCALE_DIR/<split>.tsv, in file order, leaving out the clips (file names) in `skip_clips`."""
    tsv = locale_dir / f"{split}.tsv"
    if not tsv.is_file():
        raise LLMSRTError(f"{tsv}: missing; a Common Voice locale folder has train.tsv, dev.tsv, test.tsv, "
                          "validated.tsv and clips/")
    rows = []
    for lineno, rec in read_table(tsv, REQUIRED_COLUMNS):
        if Path(rec["path"]).name in skip_clips:
            continue
        audio = locale_dir / "clips" / rec["path"]
        if not audio.is_file():
            raise LLMSRTError(f"{tsv}:{lineno}: clip {audio} not found")
        sentence = rec["sentence"].strip()
        sentence_id = (rec.get("sentence_id") or "").strip() or _text_id(sentence)
        stem = Path(rec["path"]).stem
        rows.append(Row(id=f"{CORPUS}:{lang}:{stem}", audio=str(audio),
                        duration=clip_duration(audio, f"{tsv}:{lineno}"), src_lang=lang, transcript=sentence,
                        tgt_lang="", translation="", split=split_name or split, corpus=CORPUS,
                        sentence_id=sentence_id, source=tsv.name))
    return rows


def _language_of(locale_dir: Path) -> str:
    code = languages.by_commonvoice_locale().get(locale_dir.name)
    if code is None:
        raise LLMSRTError(f"{locale_dir}: folder name {locale_dir.name!r} is not a Common Voice locale of a known "
                          "language; pass the language (--lang deu) or add it to llm_srt/languages.py")
    return code


def _text_id(sentence: str) -> str:
    """A sentence id from the text itself (older releases have no sentence_id column)."""
    return hashlib.sha1(" ".join(sentence.split()).encode("utf-8")).hexdigest()[:16]
