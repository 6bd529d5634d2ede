"""Reports over per-utterance results, for one or several systems (e.g. "curriculum", "baseline", "cascade").

From each system's utterances: BLEU per direction, averages per source (src -> X) and per target (X -> tgt) as in
the paper's Tables 3/4, the full src x tgt matrix (Table 18), the average over directions, and WER/CER of the
transcript per source language; with COMET scores on the rows (`evaluate --comet`, evaluate/comet.py), mean COMET
per direction too. Files: results.json, report.md, bleu_matrix.png and, given a system's own LLM on
text MT of the same rows (`build_report(mt=)`), mt_vs_s2tt.png (Figure 3).

A failed utterance (an error, CUDA out-of-memory included, or no output) is scored as an empty hypothesis: it
enters BLEU of its direction with "" and, when the system writes transcripts, WER/CER with "". It is never dropped:
every report says `failed: N of M` per system and per direction, and lists each failed utterance with its error.
An average over directions of a system that lacks some of the table's directions prints as "25.9 (1 of 2)"; the
tables of paired tests end in the claim their verdicts judge; WER/CER's skipped references are counted under them.
"""

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .. import languages
from ..errors import LLMSRTError
from ..prompts import Task
from .metrics import PAPER_NORMALIZER, UNICODE_FORM, Score, asr_error_rate, bleu, normalize, normalizer_name

Direction = tuple[str, str]  # (source language, target language)

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
MATRIX_PNG = "bleu_matrix.png"
SCATTER_PNG = "mt_vs_s2tt.png"
DECIMALS = 1  # the paper's tables show one decimal
MAX_DIRECTION_COLUMNS = 6  # terminal table: per-direction columns up to this many, else per-source averages
MAX_MARKDOWN_COLUMNS = 16  # report.md: a column per direction up to this many, else a matrix (COMET) or the
#                            directions that need one (failed rows)
MAX_SCATTER_LABELS = 40  # label each point of the scatter plot up to this many directions
# under a table whose systems cover different directions (`_avg`)
PARTIAL_NOTE = ("(k of N): that system's average is over k of the N directions its column covers; not comparable "
                "with an average over all N")
# what "better" means in each table of paired tests (`Comparison.claim_line`, the line under it)
BLEU_BETTER, COMET_BETTER, TRANSCRIPT_BETTER = "higher average BLEU", "higher mean COMET", "lower WER / CER"
FIELD_ALIASES = {"transcript": "hyp_transcript", "translation": "hyp_translation"}  # infer.py's result keys
FIELD_TYPES = {"forced_tags": bool, "comet": (int, float)}  # UtteranceResult's fields that are not strings
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
        scored). The tables mark it "(k of N)" where the other systems cover more directions (`_avg`)."""
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
                        comet={d: 100 * float(np.mean(v)) for d, v in comet.items()}, comet_unscored=unscored,
                        n_utterances=sum(r.ref_translation is not None or id(r) in in_asr for r in rows))


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
    """Utterance results from a JSONL file (one object per line with UtteranceResult's fields)."""
    path = Path(path)
    if not path.is_file():
        raise LLMSRTError(f"{path}: no such results file")
    out, lines = [], {}
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):  # JSON leaves U+2028 raw
        if not line.strip():
            continue
        try:
            out.append(UtteranceResult.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise LLMSRTError(f"{path}:{i}: not a result row ({e})") from None
        except LLMSRTError as e:
            raise LLMSRTError(f"{path}:{i}: {e}") from None
        first = lines.setdefault(out[-1].id, i)  # the paired tests match systems' rows by id: one result per id
        if first != i:
            raise LLMSRTError(f"{path}:{i}: id {out[-1].id!r} again (first on line {first}); keep one result per "
                              "row (a re-run's rows appended to the file replace the old ones by hand)")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Output


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, report.md, bleu_matrix.png (and mt_vs_s2tt.png given MT scores); name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / RESULTS_JSON, "markdown": out / REPORT_MD}
    paths["json"].write_text(json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(to_markdown(report), encoding="utf-8")
    if report.directions:
        paths["matrix"] = plot_matrix(report, out / MATRIX_PNG)
    if any(d in s.mt.bleu for s in report.systems if s.mt is not None for d in s.bleu):
        paths["scatter"] = plot_mt_vs_s2tt(report, out / SCATTER_PNG)
    return paths


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
    return {"systems": {s.name: {**_system_json(s), **({"mt": _system_json(s.mt)} if s.mt is not None else {}),
                                 **({"significance": significance[s.name]} if s.name in significance else {}),
                                 **({"transcript_significance": by_language[s.name]} if s.name in by_language
                                    else {}),
                                 **({"comet_significance": comet[s.name]} if s.name in comet else {})}
                        for s in report.systems},
            **({"decoding": dict(report.decoding)} if report.decoding is not None else {}),
            **({"comet_model": report.comet_model} if report.comet_model else {})}


def _system_json(s: SystemScores) -> dict:
    return {
        "average_bleu": _num(s.average()),
        "n_directions": len(s.bleu),
        "n_rows": s.n_rows,
        "n_scored": s.n_scored,
        "n_failed": len(s.failed),
        "n_forced_tags": s.forced_tags,
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


def to_markdown(report: Report) -> str:
    parts = ["# Results", ""]
    summary = [[s.name, _bleu_avg(report, s), len(s.bleu), s.n_utterances, _of(len(s.failed), s.n_rows)]
               for s in report.systems]
    parts += _md_table(["system", "avg BLEU", "directions", "utterances", "failed"], summary)
    if _uneven((s.bleu for s in report.systems), report.directions):
        parts += ["", PARTIAL_NOTE + " (here and in the BLEU tables below)"]
    if report.decoding is not None:
        tasks = report.decoding.get("tasks", {})
        how = {k: v for k, v in report.decoding.items() if k != "tasks"}
        parts += ["", "Decoded here: " + ", ".join(f"{name} as {task}" for name, task in tasks.items()) + "; "
                  + ", ".join(f"{k} {v}" for k, v in how.items())]
    forced = [s for s in report.systems if s.forced_tags]
    if forced:
        parts += ["", "SRT language tags written for the model (it ended after its transcript): "
                  + ", ".join(f"{s.name} {_of(s.forced_tags, s.n_rows)}" for s in forced)]
    srcs = report.sources
    parts += ["", "## BLEU by source language (mean over src → X)", ""]
    parts += _md_table(["system", *[f"{l}→X" for l in srcs], "Avg"],
                       [[s.name, *_bleu_by(report, s, 0), _bleu_avg(report, s)] for s in report.systems])
    parts += ["", "## BLEU by target language (mean over X → tgt)", ""]
    parts += _md_table(["system", *[f"X→{l}" for l in report.targets], "Avg"],
                       [[s.name, *_bleu_by(report, s, 1), _bleu_avg(report, s)] for s in report.systems])
    for s in report.systems:
        m = s.matrix(srcs, report.targets)
        parts += ["", f"## BLEU matrix: {s.name} (rows: source, columns: target)", ""]
        parts += _md_table(["src \\ tgt", *report.targets, "Avg"],
                           [[src, *[_fmt(v) for v in row], _fmt(s.by_source().get(src))]
                            for src, row in zip(srcs, m)])
    comet_dirs = _unique(d for s in report.systems for d in s.comet)
    if comet_dirs:
        parts += ["", "## COMET by direction (x 100; source: the reference transcript)", "",
                  f"Model: `{report.comet_model}`", ""]
        if len(comet_dirs) <= MAX_MARKDOWN_COLUMNS:
            parts += _md_table(["system", *[_arrow(d) for d in comet_dirs], "Avg", "rows not scored"],
                               [[s.name, *[_fmt(s.comet.get(d)) for d in comet_dirs],
                                 _avg(s.average_comet(), len(s.comet), len(comet_dirs)), s.comet_unscored]
                                for s in report.systems])
        else:  # one column a direction is unreadable at 15 x 14 (211 columns): the BLEU matrices' shape
            parts += _md_table(["system", "Avg", "rows not scored"],
                               [[s.name, _avg(s.average_comet(), len(s.comet), len(comet_dirs)), s.comet_unscored]
                                for s in report.systems])
        if _uneven((s.comet for s in report.systems), comet_dirs):
            parts += ["", PARTIAL_NOTE]
        if len(comet_dirs) > MAX_MARKDOWN_COLUMNS:
            comet_srcs, comet_tgts = _unique(d[0] for d in comet_dirs), _unique(d[1] for d in comet_dirs)
            for s in report.systems:
                parts += ["", f"### COMET matrix: {s.name} (rows: source, columns: target)", ""]
                parts += _md_table(["src \\ tgt", *comet_tgts],
                                   [[src, *[_fmt(s.comet.get((src, t))) for t in comet_tgts]] for src in comet_srcs])
    asr_srcs = _unique(l for s in report.systems for l in s.asr)
    if asr_srcs:
        parts += ["", "## Transcripts: WER / CER by source language (lower is better)", ""]
        parts += _md_table(["system", *[f"{l} ({_asr_metric(report, l)})" for l in asr_srcs]],
                           [[s.name, *[_fmt(s.asr[l].score) if l in s.asr else "–" for l in asr_srcs]]
                            for s in report.systems])
        if _skipped_line(report):
            parts += ["", _skipped_line(report)]
        other = [f"{l} {normalizer_name(l)}" for l in asr_srcs if normalizer_name(l) != PAPER_NORMALIZER]
        if other:
            parts += ["", f"Normalized with Whisper's normalizers; {', '.join(other)}, where the paper's scoring "
                          f"script uses {PAPER_NORMALIZER} for every language: not directly comparable with it"
                          + (" (English WER comes out lower)." if "eng" in asr_srcs else ".")]
    with_mt = [s for s in report.systems if s.mt is not None]
    if with_mt:
        dirs = _unique(d for s in with_mt for d in s.mt.bleu)
        parts += ["", "## Text MT vs speech translation (BLEU; MT: the system's own LLM on the gold transcript)", ""]
        parts += _md_table(["direction", *[f"{s.name} {col}" for s in with_mt for col in ("MT", "speech")]],
                           [[_arrow(d), *[_fmt(v.score) if v else "–" for s in with_mt
                                          for v in (s.mt.bleu.get(d), s.bleu.get(d))]] for d in dirs])
    if report.comparisons:
        parts += ["", f"## Is the difference real? Paired bootstrap over test sentences "
                      f"({report.comparisons[0][2].samples} resamples)", ""]
        parts += _md_table(["system", "compared with", "Δ avg BLEU", "95% interval", "p", "verdict"],
                           _comparison_rows(report))
        parts += ["", report.comparisons[0][2].claim_line(BLEU_BETTER)]
    if report.comet_comparisons:
        parts += ["", f"## COMET: is the difference real? Paired bootstrap over test sentences "
                      f"({report.comet_comparisons[0][2].samples} resamples)", ""]
        parts += _md_table(["system", "compared with", "Δ mean COMET", "95% interval", "p", "sentences", "verdict"],
                           _comet_comparison_rows(report))
        parts += ["", report.comet_comparisons[0][2].claim_line(COMET_BETTER)]
    if report.transcript_comparisons:
        parts += ["", f"## Transcripts: is the difference real? Paired bootstrap over test sentences "
                      f"({report.transcript_comparisons[0][3].samples} resamples; lower is better)", ""]
        parts += _md_table(["system", "compared with", "language", "Δ", "95% interval", "p", "sentences", "verdict"],
                           _transcript_comparison_rows(report))
        parts += ["", report.transcript_comparisons[0][3].claim_line(TRANSCRIPT_BETTER)]
    signatures = _unique(v.signature for s in report.systems for v in (*s.bleu.values(), *s.asr.values()))
    parts += ["", "## Signatures", ""] + [f"- `{sig}`" for sig in signatures]
    if report.directions:
        parts += ["", f"BLEU: hypotheses and references {UNICODE_FORM}-normalized (Unicode) before SacreBLEU."]
    scored = [t for s in report.systems for t in ((s.name, s), *(((f"{s.name} (MT)", s.mt),) if s.mt else ()))]
    failed = [(n, r) for n, s in scored for r in s.failed]
    parts += ["", f"## Failed utterances ({len(failed)}, scored as empty hypotheses)", ""]
    if failed:
        dirs = _unique(d for _, s in scored for d in s.rows)
        if len(dirs) > MAX_MARKDOWN_COLUMNS:  # 15 x 14: the directions where a row failed, not 210 columns of 0
            dirs = _unique(d for _, s in scored for d in s.failed_by_direction() if s.failed_by_direction()[d])
            parts += ["Directions where a row failed (the others: none):", ""]
        parts += _md_table(["system", *[_arrow(d) for d in dirs], "all"],
                           [[n, *[_of(s.failed_by_direction()[d], s.rows[d]) if d in s.rows else "–" for d in dirs],
                             _of(len(s.failed), s.n_rows)] for n, s in scored])
        parts += [""] + _md_table(["system", "id", "direction", "error"],
                                  [[n, r.id, _arrow((r.src, r.tgt)), (r.error or "no translation").replace("|", "\\|")]
                                   for n, r in failed])
    else:
        parts += ["none"]
    return "\n".join(parts) + "\n"


def format_table(report: Report) -> str:
    """The main results as a plain-text table for a terminal: systems x (directions or src → X averages)."""
    dirs = report.directions
    if len(dirs) <= MAX_DIRECTION_COLUMNS:
        header = [f"{d[0]}->{d[1]}" for d in dirs]
        cells = [[_fmt(s.bleu[d].score) if d in s.bleu else "–" for d in dirs] for s in report.systems]
    else:
        srcs = report.sources
        header = [f"{l}->X" for l in srcs]
        cells = [_bleu_by(report, s, 0) for s in report.systems]
    header = ["system", *header, "Avg", "failed"]
    rows = [[s.name, *c, _bleu_avg(report, s), _of(len(s.failed), s.n_rows)] for s, c in zip(report.systems, cells)]
    text = "BLEU\n" + _text_table(header, rows)
    if _uneven((s.bleu for s in report.systems), dirs):
        text += "\n" + PARTIAL_NOTE
    comet_dirs = _unique(d for s in report.systems for d in s.comet)
    if comet_dirs:
        shown = comet_dirs if len(comet_dirs) <= MAX_DIRECTION_COLUMNS else []
        header = ["system", *[f"{d[0]}->{d[1]}" for d in shown], "Avg", "not scored"]
        rows = [[s.name, *[_fmt(s.comet.get(d)) for d in shown], _avg(s.average_comet(), len(s.comet),
                                                                      len(comet_dirs)), s.comet_unscored]
                for s in report.systems]
        text += "\n\nCOMET (x 100)\n" + _text_table(header, rows)
        if _uneven((s.comet for s in report.systems), comet_dirs):
            text += "\n" + PARTIAL_NOTE
    langs = _unique(lang for s in report.systems for lang in s.asr)
    if langs:
        header = ["system", *[f"{l} {_asr_metric(report, l).upper()}" for l in langs]]
        rows = [[s.name, *[_fmt(s.asr[l].score) if l in s.asr else "–" for l in langs]] for s in report.systems]
        text += "\n\nTranscript WER / CER (lower is better)\n" + _text_table(header, rows)
        if _skipped_line(report):
            text += "\n" + _skipped_line(report)
    with_mt = [s for s in report.systems if s.mt is not None]
    if with_mt:
        header = ["system", "MT Avg", "speech Avg", "MT failed"]
        rows = [[s.name, _fmt(s.mt.average()), _fmt(s.average()), _of(len(s.mt.failed), s.mt.n_rows)]
                for s in with_mt]
        text += "\n\nText MT (the system's own LLM, gold transcript in) vs speech, BLEU\n" + _text_table(header, rows)
    if report.comparisons:
        text += ("\n\nPaired bootstrap over test sentences (avg BLEU)\n"
                 + _text_table(["system", "vs", "delta", "95% interval", "p", "verdict"], _comparison_rows(report))
                 + "\n" + report.comparisons[0][2].claim_line(BLEU_BETTER))
    if report.comet_comparisons:
        text += ("\n\nPaired bootstrap over test sentences (mean COMET x 100)\n"
                 + _text_table(["system", "vs", "delta", "95% interval", "p", "sentences", "verdict"],
                               _comet_comparison_rows(report))
                 + "\n" + report.comet_comparisons[0][2].claim_line(COMET_BETTER))
    if report.transcript_comparisons:
        text += ("\n\nPaired bootstrap over test sentences (transcript WER / CER, lower is better)\n"
                 + _text_table(["system", "vs", "language", "delta", "95% interval", "p", "sentences", "verdict"],
                               _transcript_comparison_rows(report))
                 + "\n" + report.transcript_comparisons[0][3].claim_line(TRANSCRIPT_BETTER))
    failures = [f"{name}: {scores.failed_summary()} (scored as empty hypotheses); by direction: "
                + ", ".join(f"{d[0]}->{d[1]} {_of(n, scores.rows[d])}" for d, n in scores.failed_by_direction().items()
                            if n)
                for s in report.systems for name, scores in ((s.name, s), (f"{s.name} (MT)", s.mt))
                if scores is not None and scores.failed]
    return text + ("\n\n" + "\n".join(failures) if failures else "") + _forced_lines(report)


def _forced_lines(report: Report) -> str:
    """A line per system whose SRT rows got their language tags written for them (none: nothing)."""
    lines = [f"{s.name}: language tags written for {_of(s.forced_tags, s.n_rows)} utterances (the model ended after "
             "its transcript; --no-force-srt-tags leaves such rows without a translation)"
             for s in report.systems if s.forced_tags]
    return "\n\n" + "\n".join(lines) if lines else ""


def _skipped_line(report: Report) -> str:
    """The line under the WER/CER tables naming the utterances they left out (`Score.skipped`: the reference
    transcript empty after normalization, as `llm-srt score` says of its lines), else '': only results.json said."""
    skipped = [f"{s.name} {lang} {_of(v.skipped, v.n + v.skipped)}" for s in report.systems
               for lang, v in s.asr.items() if v.skipped]
    return ("WER/CER skipped (reference transcript empty after normalization): " + ", ".join(skipped)
            if skipped else "")


def _comparison_rows(report: Report) -> list[list]:
    return [[a, b, f"{c.delta:+.1f}", f"[{c.low:+.1f}, {c.high:+.1f}]", c.shown_p, c.verdict()]
            for a, b, c in report.comparisons]


def _comet_comparison_rows(report: Report) -> list[list]:
    return [[a, b, f"{c.delta:+.1f}", f"[{c.low:+.1f}, {c.high:+.1f}]", c.shown_p, c.sentences, c.verdict()]
            for a, b, c in report.comet_comparisons]


def _transcript_comparison_rows(report: Report) -> list[list]:
    return [[a, b, f"{lang} {_asr_metric(report, lang)}", f"{c.delta:+.1f}", f"[{c.low:+.1f}, {c.high:+.1f}]",
             c.shown_p, c.sentences, c.verdict(higher_is_better=False)]
            for a, b, lang, c in report.transcript_comparisons]


def _text_table(header: list, rows: list[list]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def plot_matrix(report: Report, path: Path) -> Path:
    """Heatmap of the src x tgt BLEU matrix, one panel per system, values written in the cells."""
    plt = _pyplot()
    srcs, tgts = report.sources, report.targets
    mats = [s.matrix(srcs, tgts) for s in report.systems]
    vmax = max(float(np.nanmax(m)) if np.isfinite(m).any() else 0.0 for m in mats) or 1.0
    w, h = 1.0 + 0.6 * len(tgts), 1.2 + 0.5 * len(srcs)
    fig, axes = plt.subplots(1, len(mats), figsize=(w * len(mats) + 1.0, h), squeeze=False, layout="constrained")
    axes[0][0].set_ylabel("source")
    for ax, s, m in zip(axes[0], report.systems, mats):
        im = ax.imshow(np.ma.masked_invalid(m), cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(tgts)), tgts, rotation=45)
        ax.set_yticks(range(len(srcs)), srcs)
        ax.set_xlabel("target")
        ax.set_title(f"{s.name} (avg {_fmt(s.average())})")
        for i, j in zip(*np.nonzero(np.isfinite(m))):
            ax.text(j, i, _fmt(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] < vmax / 2 else "black")
    fig.colorbar(im, ax=axes[0].tolist(), label="BLEU")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_mt_vs_s2tt(report: Report, path: Path) -> Path:
    """Scatter of each system's own text-MT BLEU (x) against its speech-translation BLEU (y) per direction."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    top = 0.0
    for s, marker in zip(report.systems, "os^Dvp*hx+" * 10):
        dirs = [d for d in s.bleu if s.mt is not None and d in s.mt.bleu]
        if not dirs:
            continue
        x = [s.mt.bleu[d].score for d in dirs]
        y = [s.bleu[d].score for d in dirs]
        ax.scatter(x, y, marker=marker, label=s.name, alpha=0.8)
        top = max([top, *x, *y])
        if len(dirs) <= MAX_SCATTER_LABELS:
            for d, xi, yi in zip(dirs, x, y):
                ax.annotate(_arrow(d), (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    top = top * 1.05 or 1.0
    ax.plot([0, top], [0, top], "k--", linewidth=0.8, label="S2TT = MT")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="text MT BLEU (the system's own LLM)",
           ylabel="speech translation BLEU", title="MT vs S2TT per direction")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def _mean_by(scores: dict[Direction, Score], index: int) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for d, s in scores.items():
        groups.setdefault(d[index], []).append(s.score)
    return {k: float(np.mean(v)) for k, v in groups.items()}


def _asr_metric(report: Report, lang: str) -> str:
    return next(s.asr[lang].metric.upper() for s in report.systems if lang in s.asr)


def _md_table(header: list, rows: list[list]) -> list[str]:
    return ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(str, r)) + " |" for r in rows]


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{DECIMALS}f}"


def _avg(value: float | None, n: int, of: int) -> str:
    """A mean over directions as the tables print it: "25.9 (1 of 2)" where it is over n of the `of` directions its
    column covers for the table's systems together. Avg is a macro average over directions (the paper's), so a
    system that lacks some has a mean over other directions than the rest, which read as comparable unmarked."""
    text = _fmt(value)
    return f"{text} ({n} of {of})" if n < of and text != "–" else text


def _bleu_avg(report: Report, s: SystemScores) -> str:
    return _avg(s.average(), len(s.bleu), len(report.directions))


def _bleu_by(report: Report, s: SystemScores, index: int) -> list[str]:
    """The mean BLEU per source (index 0: src -> X, report.sources) or target (1: X -> tgt, report.targets), each
    marked as `_avg`."""
    own, every = _count_by(s.bleu, index), _count_by(report.directions, index)
    means = s.by_source() if index == 0 else s.by_target()
    return [_avg(means.get(lang), own.get(lang, 0), every[lang])
            for lang in (report.sources if index == 0 else report.targets)]


def _count_by(dirs: Iterable[Direction], index: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in dirs:
        counts[d[index]] = counts.get(d[index], 0) + 1
    return counts


def _uneven(directions: Iterable[Iterable[Direction]], every: Iterable[Direction]) -> bool:
    """Whether a system that has scores lacks some of the table's directions (its averages are marked)."""
    every = set(every)
    return any(own and set(own) < every for own in map(set, directions))


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _of(n: int, total: int) -> str:
    return f"{n} of {total}"


def _key(d: Direction) -> str:
    return f"{d[0]}-{d[1]}"


def _arrow(d: Direction) -> str:
    return f"{d[0]}→{d[1]}"


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))
