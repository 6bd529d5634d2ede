"""Reports over per-utterance results, for one or several systems (e.g. "curriculum", "baseline", "cascade"): the
scores, and results.json (`to_json`); evaluate/render.py turns them into the terminal table, report.md and the plots.

From each system's utterances: BLEU per direction, averages per source (src -> X) and per target (X -> tgt) as in
the paper's Tables 3/4, the full src x tgt matrix (Table 18), the average over directions, and WER/CER of the
transcript per source language; with COMET scores on the rows (`evaluate --comet`, evaluate/comet.py), mean COMET
per direction too.

A failed utterance (an error, CUDA out-of-memory included, or no output) is scored as an empty hypothesis: it
enters BLEU of its direction with "" and, when the system writes transcripts, WER/CER with "". It is never dropped:
every report counts it (`SystemScores.failed`) and lists it with its error.
"""

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import languages
from ..errors import LLMSRTError
from ..prompts import Task
from .metrics import Score, asr_error_rate, bleu, normalize

Direction = tuple[str, str]  # (source language, target language)

FIELD_ALIASES = {"transcript": "hyp_transcript", "translation": "hyp_translation"}  # infer.py's result keys
FIELD_TYPES = {"forced_tags": bool, "capped": bool, "comet": (int, float)}  # UtteranceResult's non-string fields
TRANSCRIBING_TASKS = tuple(t.value for t in Task if t.writes_transcript)  # a failed row of these scores WER ""


@dataclass(frozen=True)
class UtteranceResult:
    id: str  # utterance id (from the manifest)
    src: str  # source language, ISO 639-3
    tgt: str  # target language, ISO 639-3
    hyp_transcript: str | None = None  # the system's transcript (None: it writes none, e.g. direct S2TT)
    hyp_translation: str | None = None  # the system's translation
    ref_transcript: str | None = None  # reference transcript (None: no WER/CER for this utterance)
    ref_translation: str | None = None  # reference translation (None: no BLEU for this utterance)
    error: str | None = None  # why the utterance failed; a failed utterance is scored as an empty hypothesis
    task: str | None = None  # the task it ran as (srt, s2tt, smt, asr, mt); None: not recorded
    forced_tags: bool = False  # SRT: its language tags were written for it (the model would have ended there)
    comet: float | None = None  # COMET's score of the translation (evaluate --comet; None: not scored)
    sentence: str | None = None  # the manifest's sentence id (the paired tests' unit; None: not recorded)
    capped: bool = False  # its output reached its token cap and was cut there (files without the key: False)

    def __post_init__(self):
        # a blank reference translation (a hand-made file's "ref_translation": "") is none, as evaluate writes null
        # for a row without one: scored, it entered BLEU and COMET against an empty reference (BLEU 0.0, unsaid)
        if isinstance(self.ref_translation, str) and not self.ref_translation.strip():
            object.__setattr__(self, "ref_translation", None)

    @classmethod
    def from_dict(cls, row: Mapping) -> "UtteranceResult":
        """From a dict with these field names (other keys are ignored; infer's 'transcript' and 'translation'
        are read as hyp_transcript and hyp_translation)."""
        if not isinstance(row, Mapping):
            raise LLMSRTError(f"a result row must be an object with id, src, tgt, ..., not {row!r:.60}")
        missing = {"id", "src", "tgt"} - set(row)
        if missing:
            raise LLMSRTError(f"result row {dict(row)!r:.80}: missing {', '.join(sorted(missing))}")
        names = {f.name for f in fields(cls)}
        row = {**{FIELD_ALIASES[k]: v for k, v in row.items() if k in FIELD_ALIASES}, **row}
        for key in names & set(row):  # a hand-made file: "comet": "0.5" would score as a repeated string
            value, wanted = row[key], FIELD_TYPES.get(key, str)
            if value is not None and (isinstance(value, bool) != (wanted is bool) or not isinstance(value, wanted)):
                kind = {bool: "true or false", str: "a string"}.get(wanted, "a number")
                raise LLMSRTError(f"result row {row.get('id')!r:.40}: {key} must be {kind} or null, not {value!r:.40}")
        return cls(**{k: v for k, v in row.items() if k in names})

    @property
    def failed(self) -> bool:
        return self.error is not None or self.hyp_translation is None


@dataclass(frozen=True)
class SystemScores:
    name: str  # system name as given ("curriculum", "baseline", ...)
    bleu: dict[Direction, Score]  # corpus BLEU per direction (failed utterances in it as empty hypotheses)
    asr: dict[str, Score]  # WER or CER of the transcript per source language (systems that write one)
    n_scored: int  # utterances that entered the BLEU scores (failed ones included)
    failed: tuple[UtteranceResult, ...]  # utterances that failed (scored as empty hypotheses)
    rows: dict[Direction, int] = field(default_factory=dict)  # utterances per direction, failed ones included
    mt: "SystemScores | None" = None  # the same system's LLM on text MT of the same rows (--with-mt), if run
    forced_tags: int = 0  # SRT utterances whose language tags were written for them (`--no-force-srt-tags`: none)
    comet: dict[Direction, float] = field(default_factory=dict)  # mean COMET x 100 per direction (scored rows)
    comet_unscored: int = 0  # with COMET: rows with a reference translation but no score (no source transcript)
    n_utterances: int = 0  # utterances that entered any score, BLEU or WER/CER (report.md's "utterances": a --task
    #                        asr report scores every row and has no BLEU row)
    capped: int = 0  # utterances whose output reached its token cap and was cut there (UtteranceResult.capped)
    ids: dict[Direction | str, frozenset[str]] = field(default_factory=dict)  # the ids of each direction's BLEU
    #   rows and, under its source language, of each source's WER/CER rows (`row_ids`; a system of several runs: its
    #   runs' ids, without run.py's `pooled` prefix): `Report.other_rows`, `Report.other_transcript_rows`
    not_scored: tuple[str, ...] = ()  # ids of the manifest's rows a decoded system left out that no score took
    #   (evaluate/selection.py `unscored_rows`: a clip's transcript-only row, where its language's SRT rows give the
    #   WER/CER and the clip has none): counted and named, not in `rows`

    @property
    def n_rows(self) -> int:
        return sum(self.rows.values())

    def failed_by_direction(self) -> dict[Direction, int]:
        """Failed utterances per direction (every direction of `rows`, zeros included)."""
        counts = dict.fromkeys(self.rows, 0)
        for r in self.failed:
            counts[(r.src, r.tgt)] = counts.get((r.src, r.tgt), 0) + 1
        return counts

    def failed_summary(self) -> str:
        """'failed: N of M' over every utterance of the system."""
        return f"failed: {len(self.failed)} of {self.n_rows}"

    def by_source(self) -> dict[str, float]:
        """Mean BLEU over the directions src -> X, per source language."""
        return _mean_by(self.bleu, 0)

    def by_target(self) -> dict[str, float]:
        """Mean BLEU over the directions X -> tgt, per target language."""
        return _mean_by(self.bleu, 1)

    def average(self) -> float:
        """Mean BLEU over this system's directions, each weighing the same (the paper's Avg; NaN when nothing was
        scored). The tables mark it "(k of N)" where the other systems cover more directions (`render._avg`)."""
        return float(np.mean([s.score for s in self.bleu.values()])) if self.bleu else math.nan

    def average_comet(self) -> float:
        """Mean COMET (x 100) over directions (NaN when none was scored)."""
        return float(np.mean(list(self.comet.values()))) if self.comet else math.nan

    def matrix(self, sources: list[str], targets: list[str]) -> np.ndarray:
        """BLEU matrix, shape (len(sources), len(targets)); NaN where a direction was not scored."""
        return np.array([[self.bleu[(s, t)].score if (s, t) in self.bleu else math.nan for t in targets]
                         for s in sources])


@dataclass(frozen=True)
class Report:
    systems: tuple[SystemScores, ...]  # in the order given
    # paired bootstrap of each system against the first (evaluate/significance.py): (system, compared with, result)
    comparisons: tuple[tuple[str, str, "Comparison"], ...] = ()
    # the same for the transcripts' WER/CER, per source language: (system, compared with, language, result)
    transcript_comparisons: tuple[tuple[str, str, str, "Comparison"], ...] = ()
    # the same for the mean COMET of the rows both systems have a score for: (system, compared with, result)
    comet_comparisons: tuple[tuple[str, str, "Comparison"], ...] = ()
    comet_model: str | None = None  # the COMET model that scored the rows (evaluate --comet)
    # how the systems decoded here ran (task, search, device, weight dtype ...): results.json's "decoding", one line
    # of report.md; systems read from results files ran as their own report says
    decoding: Mapping[str, object] | None = None
    # the paired tests left out, and why (evaluate/compare.py): (test: "BLEU", "eng transcript" or "COMET", system,
    # compared with, why); printed under the tables and kept in results.json, not only in the log
    untested: tuple[tuple[str, str, str, str], ...] = ()
    # the manifest's rows --skip-bad dropped (no score, no count took them): how many, and (file:line, why) of each
    # (of the first `data.manifest.MAX_LISTED`, where more were dropped); report.md's line, results.json's skipped_bad
    n_skipped_bad: int = 0
    skipped_bad: tuple[tuple[str, str], ...] = ()

    @property
    def untested_lines(self) -> list[str]:
        """'no paired BLEU test of B against A: why' per test left out."""
        return [f"no paired {what} test of {a} against {b}: {why}" for what, a, b, why in self.untested]

    @cached_property  # the tables look it up for every cell
    def other_rows(self) -> dict[str, dict[Direction, int]]:
        """System -> {direction: rows in only one of the two} for each direction that it and the first system both
        have but scored on other rows (results files of another test set, or of a run with rows missing): its BLEU
        there, and the averages over it, are not comparable with the first system's. Systems without any: left out.
        """
        first = self.systems[0].ids
        out = {s.name: {d: len(ids ^ first[d]) for d, ids in s.ids.items()
                        if isinstance(d, tuple) and d in first and ids != first[d]}
               for s in self.systems[1:]}
        return {name: dirs for name, dirs in out.items() if dirs}

    @cached_property
    def other_transcript_rows(self) -> dict[str, dict[str, int]]:
        """System -> {source language: rows in only one of the two} for each language whose transcripts it was
        scored on other rows than the first system with a WER/CER there (`transcribed_first`, the one
        evaluate/compare.py tests it against): its WER/CER there is not comparable with that system's, as
        `other_rows` for BLEU. Systems without any: left out."""
        out: dict[str, dict[str, int]] = {}
        for lang in _unique(lang for s in self.systems for lang in s.asr):
            first, *rest = [s for s in self.systems if lang in s.asr]
            for s in rest:
                ids, theirs = s.ids.get(lang), first.ids.get(lang)
                if ids is not None and theirs is not None and ids != theirs:
                    out.setdefault(s.name, {})[lang] = len(ids ^ theirs)
        return out

    def transcribed_first(self, lang: str) -> str:
        """The first system with a WER/CER for `lang`: the one the others' transcripts there are compared with."""
        return next(s.name for s in self.systems if lang in s.asr)

    @property
    def mt_bleu(self) -> dict[str, dict[Direction, float]]:
        """Text-MT BLEU per direction, per system that has it (--with-mt)."""
        return {s.name: {d: v.score for d, v in s.mt.bleu.items()} for s in self.systems if s.mt is not None}

    @property
    def directions(self) -> list[Direction]:
        return _unique(d for s in self.systems for d in s.bleu)

    @property
    def languages(self) -> list[str]:
        """Every language, in order of first appearance; sources and targets both follow this order."""
        return _unique(lang for d in self.directions for lang in d)

    @property
    def sources(self) -> list[str]:
        srcs = {d[0] for d in self.directions}
        return [lang for lang in self.languages if lang in srcs]

    @property
    def targets(self) -> list[str]:
        tgts = {d[1] for d in self.directions}
        return [lang for lang in self.languages if lang in tgts]

    @property
    def any_failed(self) -> bool:
        return any(s.failed or (s.mt is not None and s.mt.failed) for s in self.systems)


def score_system(name: str, results: Iterable[UtteranceResult | Mapping]) -> SystemScores:
    """Score one system's utterances: BLEU per direction, WER/CER per source language. A failed utterance is an
    empty hypothesis (in WER/CER when its task writes a transcript; without a recorded task, when the system wrote
    transcripts for other utterances of that source language)."""
    rows = [r if isinstance(r, UtteranceResult) else UtteranceResult.from_dict(r) for r in results]
    by_direction: dict[Direction, list[tuple[str, str]]] = {}
    for r in rows:
        if r.ref_translation is not None:
            by_direction.setdefault((r.src, r.tgt), []).append(("" if r.failed else r.hyp_translation,
                                                                 r.ref_translation))
    try:
        check_languages(rows)
    except LLMSRTError as e:
        raise LLMSRTError(f"system {name}: {e}") from None
    scores = {d: bleu(*zip(*pairs), d[1]) for d, pairs in by_direction.items()}
    asr = {}
    transcripts = transcript_rows(rows)
    for src, scored in transcripts.items():
        if any(normalize(r.ref_transcript, src) for r in scored):  # else every reference transcript is empty after
            #   normalization: nothing to score
            asr[src] = asr_error_rate([transcript(r) for r in scored], [r.ref_transcript for r in scored], src)
    in_asr = {id(r) for src in asr for r in transcripts[src]}
    totals: dict[Direction, int] = {}
    for r in rows:
        totals[(r.src, r.tgt)] = totals.get((r.src, r.tgt), 0) + 1
    comet: dict[Direction, list[float]] = {}
    for r in rows:
        if r.comet is not None and r.ref_translation is not None:
            comet.setdefault((r.src, r.tgt), []).append(r.comet)
    unscored = sum(r.comet is None for r in rows if r.ref_translation is not None) if comet else 0
    return SystemScores(name, scores, asr, sum(len(p) for p in by_direction.values()),
                        tuple(r for r in rows if r.failed), totals, forced_tags=sum(r.forced_tags for r in rows),
                        capped=sum(r.capped for r in rows), ids=row_ids(rows),
                        comet={d: 100 * float(np.mean(v)) for d, v in comet.items()}, comet_unscored=unscored,
                        n_utterances=sum(r.ref_translation is not None or id(r) in in_asr for r in rows))


def row_ids(rows: Iterable[UtteranceResult]) -> dict[Direction | str, frozenset[str]]:
    """The ids of the rows that enter each direction's BLEU (those with a reference translation) and, under its
    source language, of those that enter each source's WER/CER (`transcript_rows`, less those whose reference
    transcript is empty after normalization: `Score.skipped`)."""
    rows = list(rows)
    ids: dict[Direction, set[str]] = {}
    for r in rows:
        if r.ref_translation is not None:
            ids.setdefault((r.src, r.tgt), set()).add(r.id)
    return {**{d: frozenset(v) for d, v in ids.items()},
            **{src: frozenset(r.id for r in scored if normalize(r.ref_transcript, src))
               for src, scored in transcript_rows(rows).items()}}


def check_languages(rows: Iterable[UtteranceResult]) -> None:
    """An unknown language code where the scores look one up (a BLEU row's target, a WER/CER row's source: its
    tokenizer, normalizer and metric) is an error naming the row and the code, not a language left out of the
    report (a hand-made results file's "en" for "eng")."""
    rows = list(rows)
    used: dict[str, UtteranceResult] = {}  # code -> the first row that looks it up
    for r in rows:
        if r.ref_translation is not None:
            used.setdefault(r.tgt, r)
    for src, scored in transcript_rows(rows).items():
        used.setdefault(src, scored[0])
    for code, r in used.items():
        try:
            languages.get(code)
        except LLMSRTError as e:
            raise LLMSRTError(f"row {r.id!r}: {e}") from None


def transcript_rows(rows: Iterable[UtteranceResult]) -> dict[str, list[UtteranceResult]]:
    """The rows whose transcripts enter WER/CER, per source language (in order of first appearance): those with a
    reference transcript that wrote one, or failed where one was due (`score_system`). Where a source has rows of a
    task that writes its transcript beside a translation (SRT), its transcript-only rows (ASR, which an N-way test
    manifest holds one of per clip) are left out: the WER is the SRT transcripts', as the paper scores it, not a mix
    of two tasks."""
    rows = list(rows)
    transcribed = {r.src for r in rows if not r.failed and r.hyp_transcript is not None}
    out: dict[str, list[UtteranceResult]] = {}
    for r in rows:
        if r.ref_transcript is not None and _writes_transcript(r, transcribed):
            out.setdefault(r.src, []).append(r)
    for src, scored in out.items():
        if any(r.task not in (None, Task.ASR.value) for r in scored):
            out[src] = [r for r in scored if r.task != Task.ASR.value]
    return out


def transcript(r: UtteranceResult) -> str:
    """The transcript a row is scored with: "" for a failed row, unless only its translation failed (it has its
    transcript)."""
    return r.hyp_transcript if r.hyp_transcript is not None else ""


def _writes_transcript(r: UtteranceResult, transcribed: set[str]) -> bool:
    if not r.failed:
        return r.hyp_transcript is not None
    return r.task in TRANSCRIBING_TASKS if r.task is not None else r.src in transcribed


def build_report(systems: Mapping[str, Iterable[UtteranceResult | Mapping]],
                 mt: Mapping[str, Iterable[UtteranceResult | Mapping]] | None = None) -> Report:
    """Score every system (name -> its utterance results); `mt` (name -> results of that system's LLM on text
    MT of the same rows, the x axis of paper Figure 3) for the systems that have one."""
    if not systems:
        raise LLMSRTError("no systems to report on: pass at least one name -> results")
    mt = dict(mt or {})
    unknown = set(mt) - set(systems)
    if unknown:
        raise LLMSRTError(f"text-MT results for {', '.join(sorted(unknown))}, which is not among the systems "
                          f"({', '.join(systems)})")
    return Report(tuple(replace(score_system(name, rows), mt=score_system(f"{name} (MT)", mt[name]) if name in mt
                                else None) for name, rows in systems.items()))


def load_results(path: str | Path) -> list[UtteranceResult]:
    """Utterance results from a JSONL file (one object per line with UtteranceResult's fields), UTF-8; a byte-order
    mark at the start is a BOM, not text (an editor's "UTF-8 with BOM", as `llm-srt score` and manifests read it)."""
    path = Path(path)
    if not path.is_file():
        raise LLMSRTError(f"{path}: no such results file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LLMSRTError(f"{path}: cannot read the results file ({e.strerror or e}); check it") from None
    out, lines = [], {}
    # line ends are \n, \r\n or a lone \r (as text mode reads them); split as bytes, so that a line that is not UTF-8
    # is named with its line, and only there: not str.splitlines(), as JSON leaves U+2028 raw inside a string
    for i, raw in enumerate(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if i == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise LLMSRTError(f"{path}:{i}: not valid UTF-8 (byte {e.start + 1} of the line); re-save the file as "
                              "UTF-8") from None
        if not line.strip():
            continue
        try:
            out.append(UtteranceResult.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise LLMSRTError(f"{path}:{i}: not a result row ({e})") from None
        except LLMSRTError as e:
            raise LLMSRTError(f"{path}:{i}: {e}") from None
        if problem := _not_text(out[-1]):  # JSON's "\ud800": written again (hyps file, report), a traceback
            raise LLMSRTError(f"{path}:{i}: {problem}")
        first = lines.setdefault(out[-1].id, i)  # the paired tests match systems' rows by id: one result per id
        if first != i:
            raise LLMSRTError(f"{path}:{i}: id {out[-1].id!r} again (first on line {first}); keep one result per "
                              "row (a re-run's rows appended to the file replace the old ones by hand)")
    return out


def _not_text(row: UtteranceResult) -> str | None:
    """What is wrong with the first of `row`'s strings that is not text (a lone surrogate, from a broken \\u escape:
    a string Python holds but no UTF-8 file takes), else None."""
    for key, value in vars(row).items():
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return (f"{key} holds a lone surrogate {value[e.start]!r} at character {e.start + 1}, which is not text "
                    "(a broken \\u escape); fix or drop it")
    return None


# ---------------------------------------------------------------------------------------------------------------
# Output


def to_json(report: Report) -> dict:
    significance = {a: {"compared_with": b, "delta_bleu": _num(c.delta), "ci95": [_num(c.low), _num(c.high)],
                        "p": round(c.p, 5), "verdict": c.verdict(), "resamples": c.samples, "seed": c.seed}
                    for a, b, c in report.comparisons}
    comet = {a: {"compared_with": b, "delta_comet": _num(c.delta), "ci95": [_num(c.low), _num(c.high)],
                 "p": round(c.p, 5), "verdict": c.verdict(), "sentences": c.sentences, "resamples": c.samples,
                 "seed": c.seed}
             for a, b, c in report.comet_comparisons}
    by_language: dict[str, dict] = {}
    for a, b, lang, c in report.transcript_comparisons:
        by_language.setdefault(a, {})[lang] = {
            "compared_with": b, "metric": _asr_metric(report, lang).lower(), "delta": _num(c.delta),
            "ci95": [_num(c.low), _num(c.high)], "p": round(c.p, 5), "verdict": c.verdict(higher_is_better=False),
            "sentences": c.sentences, "resamples": c.samples, "seed": c.seed}
    left_out: dict[str, list[dict]] = {}
    for what, a, b, why in report.untested:
        left_out.setdefault(a, []).append({"test": what, "compared_with": b, "reason": why})
    other_rows = {name: {"compared_with": report.systems[0].name,
                         "rows_in_only_one": {_key(d): n for d, n in dirs.items()}}
                  for name, dirs in report.other_rows.items()}
    other_transcripts = report.other_transcript_rows  # language -> rows in only one (compared with: as
    #                                                   "transcript_significance" or "significance_left_out" say)
    return {"systems": {s.name: {**_system_json(s), **({"mt": _system_json(s.mt)} if s.mt is not None else {}),
                                 **({"other_rows": other_rows[s.name]} if s.name in other_rows else {}),
                                 **({"other_transcript_rows": other_transcripts[s.name]} if s.name in
                                    other_transcripts else {}),
                                 **({"significance_left_out": left_out[s.name]} if s.name in left_out else {}),
                                 **({"significance": significance[s.name]} if s.name in significance else {}),
                                 **({"transcript_significance": by_language[s.name]} if s.name in by_language
                                    else {}),
                                 **({"comet_significance": comet[s.name]} if s.name in comet else {})}
                        for s in report.systems},
            **({"decoding": dict(report.decoding)} if report.decoding is not None else {}),
            **({"comet_model": report.comet_model} if report.comet_model else {}),
            **({"n_skipped_bad": report.n_skipped_bad, "skipped_bad": [{"row": at, "reason": why} for at, why in
                                                                       report.skipped_bad]}
               if report.n_skipped_bad else {})}


def _system_json(s: SystemScores) -> dict:
    return {
        "average_bleu": _num(s.average()),
        "n_directions": len(s.bleu),
        "n_rows": s.n_rows,
        "n_scored": s.n_scored,
        "n_failed": len(s.failed),
        "n_forced_tags": s.forced_tags,
        "n_capped": s.capped,
        **({"n_not_scored": len(s.not_scored), "not_scored": list(s.not_scored)} if s.not_scored else {}),
        "failed_by_direction": {_key(d): {"failed": n, "of": s.rows[d]} for d, n in s.failed_by_direction().items()},
        "bleu": {_key(d): asdict(v) for d, v in s.bleu.items()},
        "by_source": s.by_source(),
        "by_target": s.by_target(),
        "asr": {src: asdict(v) for src, v in s.asr.items()},
        "failed": [{"id": r.id, "src": r.src, "tgt": r.tgt, "error": r.error or "no translation"}
                   for r in s.failed],
        **({"average_comet": _num(s.average_comet()), "comet": {_key(d): _num(v) for d, v in s.comet.items()},
            "n_comet_unscored": s.comet_unscored} if s.comet else {}),
    }


# ---------------------------------------------------------------------------------------------------------------


def _mean_by(scores: dict[Direction, Score], index: int) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for d, s in scores.items():
        groups.setdefault(d[index], []).append(s.score)
    return {k: float(np.mean(v)) for k, v in groups.items()}


def _asr_metric(report: Report, lang: str) -> str:
    return next(s.asr[lang].metric.upper() for s in report.systems if lang in s.asr)


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _key(d: Direction) -> str:
    return f"{d[0]}-{d[1]}"


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))
