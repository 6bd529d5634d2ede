"""The paired tests of `llm-srt evaluate`'s report (evaluate/run.py): each system against the first, by BLEU, by
its transcripts' WER/CER per source language, and by COMET where rows were scored (evaluate/significance.py's
tests)."""

from __future__ import annotations

from dataclasses import replace

from ..errors import LLMSRTError
from .report import Report, UtteranceResult
from .significance import (BLEU_REFERENCES, TRANSCRIPT_REFERENCES, check_references, paired_bootstrap_runs,
                           paired_error_rates_runs, paired_mean, sentence_keys)


def compare_systems(report: Report, runs: dict[str, list[list[UtteranceResult]]], samples: int,
                    log=print, scored: dict[str, list[UtteranceResult]] | None = None) -> Report:
    """The report with its paired tests (system name -> its runs' results, one run per decoded system): each
    system's average BLEU against the first system's, and per source language its transcripts' WER/CER against
    the first system that transcribed that language (a direct S2TT system writes none); given the rows with their
    COMET scores (`scored`, name -> rows), each system's mean COMET against the first's over the sentences both
    have a score for (`sentence_comet`). A pair that cannot be compared (other rows, or other references for the same
    rows: `check_references`; a different number of runs) is left out, and why is kept in the report
    (`Report.untested`: under its tables and in results.json, not only in a log): the results are never lost to it."""
    untested = []  # (test, system, compared with, why)

    def test(what: str, name: str, first: str, paired, select=lambda rows: rows):
        if len(runs[name]) != len(runs[first]):
            untested.append((what, name, first, f"{len(runs[name])} runs against {len(runs[first])} (runs are "
                                                "paired one to one)"))
            return None
        try:
            return paired([select(r) for r in runs[name]], [select(r) for r in runs[first]], samples=samples)
        except LLMSRTError as e:
            untested.append((what, name, first, str(e)))
            return None

    first = report.systems[0].name
    comparisons = []
    if not report.directions:  # e.g. --task asr: WER/CER only
        log("no rows with a reference translation: no paired BLEU test between the systems")
    for s in report.systems[1:] if report.directions else ():
        c = test("BLEU", s.name, first, paired_bootstrap_runs)
        if c is not None:
            comparisons.append((s.name, first, c))
    transcripts = []
    for lang in dict.fromkeys(lang for s in report.systems for lang in s.asr):
        names = [s.name for s in report.systems if lang in s.asr]
        for name in names[1:]:
            c = test(f"{lang} transcript", name, names[0], paired_error_rates_runs,
                     lambda rows: [r for r in rows if r.src == lang])
            if c is not None:
                transcripts.append((name, names[0], lang, c[lang]))
    comet = []
    first_comet = sentence_comet(scored.get(first, []), len(runs[first])) if scored else {}
    for s in report.systems[1:] if first_comet else ():
        if len(runs[s.name]) != len(runs[first]):
            untested.append(("COMET", s.name, first, f"{len(runs[s.name])} runs against {len(runs[first])} (runs "
                                                     "are paired one to one)"))
            continue
        own = sentence_comet(scored[s.name], len(runs[s.name]))
        both = [i for i in own if i in first_comet]
        if not both:
            untested.append(("COMET", s.name, first, "no row scored in both"))
            continue
        rows = [{_run_id(r.id, len(runs[n])): r for r in scored[n]} for n in (first, s.name)]
        sentence = sentence_keys(rows)
        try:  # COMET reads the reference transcript as the source: both must be the same
            check_references([{r.id: r for r in scored[n] if r.comet is not None} for n in (first, s.name)],
                             {**BLEU_REFERENCES, **TRANSCRIPT_REFERENCES})
            c = paired_mean([own[i] for i in both], [first_comet[i] for i in both], samples=samples,
                            sentences=[sentence[i] for i in both],
                            directions=[(rows[0][i].src, rows[0][i].tgt) for i in both])
        except LLMSRTError as e:
            untested.append(("COMET", s.name, first, str(e)))
            continue
        comet.append((s.name, first, c))
    return replace(report, comparisons=tuple(comparisons), transcript_comparisons=tuple(transcripts),
                   comet_comparisons=tuple(comet), untested=tuple(untested))


def sentence_comet(rows: list[UtteranceResult], runs: int) -> dict[str, float]:
    """Mean COMET x 100 per row id over a system's runs (run.py's `pooled` prefixed the ids of several runs with
    'RUN/'): the unit the paired test resamples, as one sentence's rows in several runs are not independent."""
    by_id: dict[str, list[float]] = {}
    for r in rows:
        if r.comet is not None:
            by_id.setdefault(_run_id(r.id, runs), []).append(100 * r.comet)
    return {i: sum(v) / len(v) for i, v in by_id.items()}


def _run_id(row_id: str, runs: int) -> str:
    """A row's id in its run (run.py's `pooled` prefixed the ids of several runs with 'RUN/')."""
    return row_id.split("/", 1)[1] if runs > 1 else row_id
