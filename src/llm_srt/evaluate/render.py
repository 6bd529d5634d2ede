"""A Report (evaluate/report.py) for people: the terminal table (`format_table`), report.md (`to_markdown`), the
plots, and `write_report`, which writes the files: results.json, report.md, bleu_matrix.png and, given a system's own
LLM on text MT of the same rows (`build_report(mt=)`), mt_vs_s2tt.png (Figure 3).

Every report says `failed: N of M` per system and per direction, and lists each failed utterance with its error;
report.md counts beside them, and names, a system's rows that no score took (`SystemScores.not_scored`).
An average over directions of a system that lacks some of the table's directions prints as "25.9 (1 of 2)", and a
BLEU or COMET score of a system scored on other rows than the first system's in one of its directions as "25.9 (other
rows)" (a WER/CER likewise, against the first system that transcribed its language), with a line saying where; the
tables of paired tests end in the claim their verdicts judge, and a paired test left out is named with why
(`Report.untested`); WER/CER's skipped references are counted under them.
"""

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import first_few
from ..paths import atomic_file, replace_all
from .metrics import PAPER_NORMALIZER, UNICODE_FORM, normalizer_name
from .report import Direction, Report, SystemScores, _asr_metric, _unique, to_json
from .selection import named_bad

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
OTHER_ROWS = " (other rows)"  # after a BLEU or COMET score over other rows than the first system's
#                                 (`Report.other_rows`), or a WER/CER (`Report.other_transcript_rows`)
# what "better" means in each table of paired tests (`Comparison.claim_line`, the line under it)
BLEU_BETTER, COMET_BETTER, TRANSCRIPT_BETTER = "higher average BLEU", "higher mean COMET", "lower WER / CER"
# after the rows cut at their token cap (`_capped`): why, and what that does to the scores
CAPPED_WHY = (" (--max-new-tokens, the row's duration budget, or text MT's twice its source's tokens + 16): their text "
              "is cut there, and scored as cut")
SHOWN_SKIPPED_BAD = 5  # report.md: the manifest rows --skip-bad dropped named up to this many (results.json: all)
SHOWN_NOT_SCORED = 10  # report.md: the ids of a system's rows not scored named up to this many (results.json: all)


def write_report(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """Write results.json, report.md, bleu_matrix.png (given BLEU scores) and mt_vs_s2tt.png (given MT scores), and
    remove a plot an earlier report left in `out_dir` that this one does not draw; name -> path. Each file is written
    to a temporary file beside it and all are renamed together once every one is written (`paths.replace_all`):
    written in place, a full disk or a kill mid-write left an earlier report's results.json cut short."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / RESULTS_JSON, "markdown": out / REPORT_MD}
    staged: list[tuple[Path, Path]] = []  # (temporary file, the name it takes)
    try:
        with atomic_file(paths["json"], staged=staged) as f:
            f.write(json.dumps(to_json(report), indent=2, ensure_ascii=False) + "\n")
        with atomic_file(paths["markdown"], staged=staged) as f:
            f.write(to_markdown(report))
        if report.directions:
            paths["matrix"] = plot_matrix(report, out / MATRIX_PNG, staged)
        if any(d in s.mt.bleu for s in report.systems if s.mt is not None for d in s.bleu):
            paths["scatter"] = plot_mt_vs_s2tt(report, out / SCATTER_PNG, staged)
        replace_all(staged)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)  # renamed already, or of a write that failed
    for name, png in (("matrix", MATRIX_PNG), ("scatter", SCATTER_PNG)):
        if name not in paths:  # an earlier report's plot would sit beside this one as if it were of it
            (out / png).unlink(missing_ok=True)
    return paths


def to_markdown(report: Report) -> str:
    parts = ["# Results", ""]
    unscored = any(s.not_scored for s in report.systems)  # a column only where a system has such rows
    summary = [[s.name, _bleu_avg(report, s), len(s.bleu), s.n_utterances, _of(len(s.failed), s.n_rows),
                *([len(s.not_scored)] if unscored else [])] for s in report.systems]
    parts += _md_table(["system", "avg BLEU", "directions", "utterances", "failed",
                        *(["not scored"] if unscored else [])], summary)
    if _uneven((s.bleu for s in report.systems), report.directions):
        parts += ["", PARTIAL_NOTE + " (here and in the BLEU tables below)"]
    if unscored:
        parts += ["", _not_scored_line(report)]
    if report.n_skipped_bad:
        parts += ["", _skipped_bad_line(report)]
    parts += [line for note in _other_rows_notes(report) for line in ("", note)]
    if report.decoding is not None:
        tasks = report.decoding.get("tasks", {})
        how = {k: v for k, v in report.decoding.items() if k != "tasks"}
        parts += ["", "Decoded here: " + ", ".join(f"{name} as {task}" for name, task in tasks.items()) + "; "
                  + ", ".join(f"{k} {v}" for k, v in how.items())]
    forced = [s for s in report.systems if s.forced_tags]
    if forced:
        parts += ["", "SRT language tags written for the model (it ended after its transcript): "
                  + ", ".join(f"{s.name} {_of(s.forced_tags, s.n_rows)}" for s in forced)]
    if capped := _capped(report):
        parts += ["", "; ".join(capped) + CAPPED_WHY]
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
                               [[s.name, *[_comet(report, s, d) for d in comet_dirs],
                                 _comet_avg(report, s, comet_dirs), s.comet_unscored]
                                for s in report.systems])
        else:  # one column a direction is unreadable at 15 x 14 (211 columns): the BLEU matrices' shape
            parts += _md_table(["system", "Avg", "rows not scored"],
                               [[s.name, _comet_avg(report, s, comet_dirs), s.comet_unscored]
                                for s in report.systems])
        if _uneven((s.comet for s in report.systems), comet_dirs):
            parts += ["", PARTIAL_NOTE]
        parts += [line for note in _other_rows_notes(report, comet=True) for line in ("", note)]
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
                           [[s.name, *[_wer(report, s, l) for l in asr_srcs]] for s in report.systems])
        parts += [line for note in _other_transcript_notes(report) for line in ("", note)]
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
    if report.untested:
        parts += ["", "## Paired tests left out", ""] + [f"- {line}" for line in report.untested_lines]
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
                                  [[n, r.id, _arrow((r.src, r.tgt)), r.error or "no translation"]
                                   for n, r in failed])
    else:
        parts += ["none"]
    return "\n".join(parts) + "\n"


def format_table(report: Report) -> str:
    """The main results as a plain-text table for a terminal: systems x (directions or src → X averages)."""
    dirs = report.directions
    if len(dirs) <= MAX_DIRECTION_COLUMNS:
        header = [f"{d[0]}->{d[1]}" for d in dirs]
        cells = [[_mark(report, s, [d], _fmt(s.bleu[d].score)) if d in s.bleu else "–" for d in dirs]
                 for s in report.systems]
    else:
        srcs = report.sources
        header = [f"{l}->X" for l in srcs]
        cells = [_bleu_by(report, s, 0) for s in report.systems]
    header = ["system", *header, "Avg", "failed"]
    rows = [[s.name, *c, _bleu_avg(report, s), _of(len(s.failed), s.n_rows)] for s, c in zip(report.systems, cells)]
    text = "BLEU\n" + _text_table(header, rows)
    if _uneven((s.bleu for s in report.systems), dirs):
        text += "\n" + PARTIAL_NOTE
    text += "".join("\n" + note for note in _other_rows_notes(report))
    comet_dirs = _unique(d for s in report.systems for d in s.comet)
    if comet_dirs:
        shown = comet_dirs if len(comet_dirs) <= MAX_DIRECTION_COLUMNS else []
        header = ["system", *[f"{d[0]}->{d[1]}" for d in shown], "Avg", "not scored"]
        rows = [[s.name, *[_comet(report, s, d) for d in shown], _comet_avg(report, s, comet_dirs), s.comet_unscored]
                for s in report.systems]
        text += "\n\nCOMET (x 100)\n" + _text_table(header, rows)
        if _uneven((s.comet for s in report.systems), comet_dirs):
            text += "\n" + PARTIAL_NOTE
        text += "".join("\n" + note for note in _other_rows_notes(report, comet=True))
    langs = _unique(lang for s in report.systems for lang in s.asr)
    if langs:
        header = ["system", *[f"{l} {_asr_metric(report, l).upper()}" for l in langs]]
        rows = [[s.name, *[_wer(report, s, l) for l in langs]] for s in report.systems]
        text += "\n\nTranscript WER / CER (lower is better)\n" + _text_table(header, rows)
        text += "".join("\n" + note for note in _other_transcript_notes(report))
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
    if report.untested:
        text += "\n\nPaired tests left out:\n" + "\n".join(report.untested_lines)
    failures = [f"{name}: {scores.failed_summary()} (scored as empty hypotheses); by direction: "
                + ", ".join(f"{d[0]}->{d[1]} {_of(n, scores.rows[d])}" for d, n in scores.failed_by_direction().items()
                            if n)
                for s in report.systems for name, scores in ((s.name, s), (f"{s.name} (MT)", s.mt))
                if scores is not None and scores.failed]
    capped = [line + CAPPED_WHY for line in _capped(report)]
    return (text + ("\n\n" + "\n".join(failures) if failures else "") + _forced_lines(report)
            + ("\n\n" + "\n".join(capped) if capped else ""))


def _forced_lines(report: Report) -> str:
    """A line per system whose SRT rows got their language tags written for them (none: nothing)."""
    lines = [f"{s.name}: language tags written for {_of(s.forced_tags, s.n_rows)} utterances (the model ended after "
             "its transcript; --no-force-srt-tags leaves such rows without a translation)"
             for s in report.systems if s.forced_tags]
    return "\n\n" + "\n".join(lines) if lines else ""


def _capped(report: Report) -> list[str]:
    """'NAME: k of N rows reached their token cap' per system (and its text MT) that has any (none: [])."""
    return [f"{name}: {_of(scores.capped, scores.n_rows)} rows reached their token cap"
            for s in report.systems for name, scores in ((s.name, s), (f"{s.name} (MT)", s.mt))
            if scores is not None and scores.capped]


def _not_scored_line(report: Report) -> str:
    """report.md's line under its summary naming each system's rows that no score took (`SystemScores.not_scored`:
    its 'not scored' column), as the forced tags' line counts them: 'NAME k (id, ...)'."""
    return ("Transcript-only (ASR) rows not scored (their clip has no row of the system's task, whose rows give the "
            "WER/CER; --task asr scores them; results.json lists them all: not_scored): "
            + ", ".join(f"{s.name} {len(s.not_scored)} ({first_few(s.not_scored, SHOWN_NOT_SCORED, counted=False)})"
                        for s in report.systems if s.not_scored))


def _skipped_bad_line(report: Report) -> str:
    """report.md's line on the manifest rows --skip-bad dropped (`Report.skipped_bad`), the first few named."""
    listed = "them" if len(report.skipped_bad) >= report.n_skipped_bad else f"the first {len(report.skipped_bad)}"
    return (f"Manifest rows skipped as bad (--skip-bad), in no score or count: {report.n_skipped_bad} ("
            f"{named_bad(report.n_skipped_bad, report.skipped_bad, SHOWN_SKIPPED_BAD)}); results.json lists {listed}: "
            "skipped_bad")


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


def plot_matrix(report: Report, path: Path, staged: list[tuple[Path, Path]] | None = None) -> Path:
    """Heatmap of the src x tgt BLEU matrix, one panel per system, values written in the cells (`staged`: as
    `paths.atomic_file`'s)."""
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
    _save(plt, fig, path, staged)
    return path


def plot_mt_vs_s2tt(report: Report, path: Path, staged: list[tuple[Path, Path]] | None = None) -> Path:
    """Scatter of each system's own text-MT BLEU (x) against its speech-translation BLEU (y) per direction
    (`staged`: as `paths.atomic_file`'s)."""
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
    _save(plt, fig, path, staged)
    return path


def _save(plt, fig, path: Path, staged: list[tuple[Path, Path]] | None) -> None:
    """`fig` as a PNG in `path`, whole or not at all (`paths.atomic_file`), and closed."""
    try:
        with atomic_file(path, "wb", staged=staged) as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def _md_table(header: list, rows: list[list]) -> list[str]:
    return ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(map(_cell, r)) + " |" for r in rows]


def _cell(value: object) -> str:
    """`value` as one Markdown table cell: its line breaks a space, its '|' escaped. A row id, a system name or an
    error (a results file's, a traceback's) holding either cut the table there, and every row after it read as text."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def _fmt(value: float | None) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{DECIMALS}f}"


def _avg(value: float | None, n: int, of: int) -> str:
    """A mean over directions as the tables print it: "25.9 (1 of 2)" where it is over n of the `of` directions its
    column covers for the table's systems together. Avg is a macro average over directions (the paper's), so a
    system that lacks some has a mean over other directions than the rest, which read as comparable unmarked."""
    text = _fmt(value)
    return f"{text} ({n} of {of})" if n < of and text != "–" else text


def _bleu_avg(report: Report, s: SystemScores) -> str:
    return _mark(report, s, s.bleu, _avg(s.average(), len(s.bleu), len(report.directions)))


def _mark(report: Report, s: SystemScores, dirs: Iterable[Direction], text: str) -> str:
    """`text`, a BLEU or COMET score of `s` over `dirs`, marked OTHER_ROWS where `s` was scored on other rows than
    the first system in one of them: side by side unmarked, a score over 18 rows read as comparable with one over 24.
    COMET's rows are BLEU's that have a score (those without are counted beside it), so its cells follow BLEU's."""
    other = report.other_rows.get(s.name, {})
    return text + OTHER_ROWS if text != "–" and any(d in other for d in dirs) else text


def _comet(report: Report, s: SystemScores, d: Direction) -> str:
    return _mark(report, s, [d], _fmt(s.comet.get(d)))


def _comet_avg(report: Report, s: SystemScores, every: list[Direction]) -> str:
    return _mark(report, s, s.comet, _avg(s.average_comet(), len(s.comet), len(every)))


def _wer(report: Report, s: SystemScores, lang: str) -> str:
    """`s`'s WER/CER of `lang` ("–": none), marked OTHER_ROWS where its transcripts there were scored on other rows
    than those of the first system that transcribed it (`Report.other_transcript_rows`)."""
    if lang not in s.asr:
        return "–"
    text = _fmt(s.asr[lang].score)
    return text + OTHER_ROWS if lang in report.other_transcript_rows.get(s.name, {}) and text != "–" else text


def _other_rows_notes(report: Report, comet: bool = False) -> list[str]:
    """The line under a BLEU table (`comet`: a COMET table, over the directions each system has a COMET score for)
    per system marked OTHER_ROWS (none: [])."""
    first = report.systems[0].name
    scores = {s.name: s.comet if comet else s.bleu for s in report.systems}
    shown = {name: {d: n for d, n in dirs.items() if d in scores[name]} for name, dirs in report.other_rows.items()}
    return [f"{OTHER_ROWS.strip()}: {name} was scored on other rows than {first} in "
            + ", ".join(f"{_arrow(d)} ({n} rows in only one of them)" for d, n in dirs.items())
            + f"; not comparable with {first} there (score results of the same test manifest)"
            for name, dirs in shown.items() if dirs]


def _other_transcript_notes(report: Report) -> list[str]:
    """The line under a WER/CER table per system marked OTHER_ROWS there (none: [])."""
    return [f"{OTHER_ROWS.strip()}: {name}'s transcripts were scored on other rows than "
            + ", ".join(f"{report.transcribed_first(lang)}'s in {lang} ({n} rows in only one of them)"
                        for lang, n in langs.items())
            + "; not comparable there (score results of the same test manifest)"
            for name, langs in report.other_transcript_rows.items()]


def _bleu_by(report: Report, s: SystemScores, index: int) -> list[str]:
    """The mean BLEU per source (index 0: src -> X, report.sources) or target (1: X -> tgt, report.targets), each
    marked as `_avg`."""
    own, every = _count_by(s.bleu, index), _count_by(report.directions, index)
    means = s.by_source() if index == 0 else s.by_target()
    return [_mark(report, s, [d for d in s.bleu if d[index] == lang], _avg(means.get(lang), own.get(lang, 0),
                                                                         every[lang]))
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


def _of(n: int, total: int) -> str:
    return f"{n} of {total}"


def _arrow(d: Direction) -> str:
    return f"{d[0]}→{d[1]}"
