"""Reports over per-utterance results, for one or several systems (e.g. "curriculum", "baseline", "cascade").

From each system's utterances: BLEU per direction, averages per source (src -> X) and per target (X -> tgt) as in
the paper's Tables 3/4, the full src x tgt matrix (Table 18), the average over directions, and WER/CER of the
transcript per source language. Files: results.json, report.md, bleu_matrix.png and, given text-MT BLEU of the
same directions, mt_vs_s2tt.png (Figure 3). Failed utterances are listed and left out of every score.
"""

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from ..errors import LLMSRTError
from .metrics import Score, asr_error_rate, bleu

Direction = tuple[str, str]  # (source language, target language)

RESULTS_JSON = "results.json"
REPORT_MD = "report.md"
MATRIX_PNG = "bleu_matrix.png"
SCATTER_PNG = "mt_vs_s2tt.png"
DECIMALS = 1  # the paper's tables show one decimal
MAX_DIRECTION_COLUMNS = 6  # terminal table: per-direction columns up to this many, else per-source averages
MAX_SCATTER_LABELS = 40  # label each point of the scatter plot up to this many directions
FIELD_ALIASES = {"transcript": "hyp_transcript", "translation": "hyp_translation"}  # infer.py's result keys


@dataclass(frozen=True)
class UtteranceResult:
    id: str  # utterance id (from the manifest)
    src: str  # source language, ISO 639-3
    tgt: str  # target language, ISO 639-3
    hyp_transcript: str | None = None  # the system's transcript (None: it writes none, e.g. direct S2TT)
    hyp_translation: str | None = None  # the system's translation
    ref_transcript: str | None = None  # reference transcript (None: no WER/CER for this utterance)
    ref_translation: str | None = None  # reference translation (None: no BLEU for this utterance)
    error: str | None = None  # why the utterance failed; failed utterances are excluded from every score

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
        return cls(**{k: v for k, v in row.items() if k in names})

    @property
    def failed(self) -> bool:
        return self.error is not None or self.hyp_translation is None


@dataclass(frozen=True)
class SystemScores:
    name: str  # system name as given ("curriculum", "baseline", ...)
    bleu: dict[Direction, Score]  # corpus BLEU per direction
    asr: dict[str, Score]  # WER or CER of the transcript per source language (systems that write one)
    n_scored: int  # utterances that entered the BLEU scores
    failed: tuple[UtteranceResult, ...]  # utterances left out of every score

    def by_source(self) -> dict[str, float]:
        """Mean BLEU over the directions src -> X, per source language."""
        return _mean_by(self.bleu, 0)

    def by_target(self) -> dict[str, float]:
        """Mean BLEU over the directions X -> tgt, per target language."""
        return _mean_by(self.bleu, 1)

    def average(self) -> float:
        """Mean BLEU over directions (NaN when nothing was scored)."""
        return float(np.mean([s.score for s in self.bleu.values()])) if self.bleu else math.nan

    def matrix(self, sources: list[str], targets: list[str]) -> np.ndarray:
        """BLEU matrix, shape (len(sources), len(targets)); NaN where a direction was not scored."""
        return np.array([[self.bleu[(s, t)].score if (s, t) in self.bleu else math.nan for t in targets]
                         for s in sources])


@dataclass(frozen=True)
class Report:
    systems: tuple[SystemScores, ...]  # in the order given
    mt_bleu: dict[Direction, float]  # text-MT BLEU per direction (empty when not given)

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


def score_system(name: str, results: Iterable[UtteranceResult | Mapping]) -> SystemScores:
    """Score one system's utterances: BLEU per direction, WER/CER per source language."""
    rows = [r if isinstance(r, UtteranceResult) else UtteranceResult.from_dict(r) for r in results]
    ok = [r for r in rows if not r.failed]
    by_direction: dict[Direction, list[UtteranceResult]] = {}
    by_source: dict[str, list[UtteranceResult]] = {}
    for r in ok:
        if r.ref_translation is not None:
            by_direction.setdefault((r.src, r.tgt), []).append(r)
        if r.ref_transcript is not None and r.hyp_transcript is not None:
            by_source.setdefault(r.src, []).append(r)
    scores = {d: bleu([r.hyp_translation for r in rs], [r.ref_translation for r in rs], d[1])
              for d, rs in by_direction.items()}
    asr = {}
    for src, rs in by_source.items():
        try:
            asr[src] = asr_error_rate([r.hyp_transcript for r in rs], [r.ref_transcript for r in rs], src)
        except LLMSRTError:  # every reference transcript empty after normalization: nothing to score
            continue
    return SystemScores(name, scores, asr, sum(len(rs) for rs in by_direction.values()),
                        tuple(r for r in rows if r.failed))


def build_report(systems: Mapping[str, Iterable[UtteranceResult | Mapping]],
                 mt_bleu: Mapping[Direction, float] | None = None) -> Report:
    """Score every system (name -> its utterance results); `mt_bleu` is text-MT BLEU of the same directions."""
    if not systems:
        raise LLMSRTError("no systems to report on: pass at least one name -> results")
    return Report(tuple(score_system(name, rows) for name, rows in systems.items()), dict(mt_bleu or {}))


def load_results(path: str | Path) -> list[UtteranceResult]:
    """Utterance results from a JSONL file (one object per line with UtteranceResult's fields)."""
    path = Path(path)
    if not path.is_file():
        raise LLMSRTError(f"{path}: no such results file")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(UtteranceResult.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as e:
            raise LLMSRTError(f"{path}:{i}: not a result row ({e})") from None
        except LLMSRTError as e:
            raise LLMSRTError(f"{path}:{i}: {e}") from None
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
    if report.mt_bleu and any(d in report.mt_bleu for d in report.directions):
        paths["scatter"] = plot_mt_vs_s2tt(report, out / SCATTER_PNG)
    return paths


def to_json(report: Report) -> dict:
    return {
        "systems": {
            s.name: {
                "average_bleu": _num(s.average()),
                "n_directions": len(s.bleu),
                "n_scored": s.n_scored,
                "n_failed": len(s.failed),
                "bleu": {_key(d): asdict(v) for d, v in s.bleu.items()},
                "by_source": s.by_source(),
                "by_target": s.by_target(),
                "asr": {src: asdict(v) for src, v in s.asr.items()},
                "failed": [{"id": r.id, "src": r.src, "tgt": r.tgt, "error": r.error or "no translation"}
                           for r in s.failed],
            }
            for s in report.systems
        },
        "mt_bleu": {_key(d): v for d, v in report.mt_bleu.items()},
    }


def to_markdown(report: Report) -> str:
    names = [s.name for s in report.systems]
    parts = ["# Results", ""]
    summary = [[s.name, _fmt(s.average()), len(s.bleu), s.n_scored, len(s.failed)] for s in report.systems]
    parts += _md_table(["system", "avg BLEU", "directions", "utterances", "failed"], summary)
    srcs = report.sources
    parts += ["", "## BLEU by source language (mean over src → X)", ""]
    parts += _md_table(["system", *[f"{l}→X" for l in srcs], "Avg"],
                       [[s.name, *[_fmt(s.by_source().get(l)) for l in srcs], _fmt(s.average())]
                        for s in report.systems])
    parts += ["", "## BLEU by target language (mean over X → tgt)", ""]
    parts += _md_table(["system", *[f"X→{l}" for l in report.targets], "Avg"],
                       [[s.name, *[_fmt(s.by_target().get(l)) for l in report.targets], _fmt(s.average())]
                        for s in report.systems])
    for s in report.systems:
        m = s.matrix(srcs, report.targets)
        parts += ["", f"## BLEU matrix: {s.name} (rows: source, columns: target)", ""]
        parts += _md_table(["src \\ tgt", *report.targets, "Avg"],
                           [[src, *[_fmt(v) for v in row], _fmt(s.by_source().get(src))]
                            for src, row in zip(srcs, m)])
    asr_srcs = _unique(l for s in report.systems for l in s.asr)
    if asr_srcs:
        parts += ["", "## Transcripts: WER / CER by source language (lower is better)", ""]
        parts += _md_table(["system", *[f"{l} ({_asr_metric(report, l)})" for l in asr_srcs]],
                           [[s.name, *[_fmt(s.asr[l].score) if l in s.asr else "–" for l in asr_srcs]]
                            for s in report.systems])
    if report.mt_bleu:
        dirs = [d for d in report.directions if d in report.mt_bleu]
        parts += ["", "## Text MT vs speech translation (BLEU)", ""]
        parts += _md_table(["direction", "MT", *names],
                           [[_arrow(d), _fmt(report.mt_bleu[d]),
                             *[_fmt(s.bleu[d].score) if d in s.bleu else "–" for s in report.systems]]
                            for d in dirs])
    signatures = _unique(v.signature for s in report.systems for v in (*s.bleu.values(), *s.asr.values()))
    parts += ["", "## Signatures", ""] + [f"- `{sig}`" for sig in signatures]
    failed = [(s.name, r) for s in report.systems for r in s.failed]
    parts += ["", f"## Failed utterances ({len(failed)}, excluded from the scores)", ""]
    parts += _md_table(["system", "id", "direction", "error"],
                       [[n, r.id, _arrow((r.src, r.tgt)), (r.error or "no translation").replace("|", "\\|")]
                        for n, r in failed]) if failed else ["none"]
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
        cells = [[_fmt(s.by_source().get(l)) for l in srcs] for s in report.systems]
    header = ["system", *header, "Avg", "failed"]
    rows = [[s.name, *c, _fmt(s.average()), str(len(s.failed))] for s, c in zip(report.systems, cells)]
    text = "BLEU\n" + _text_table(header, rows)
    langs = _unique(lang for s in report.systems for lang in s.asr)
    if langs:
        header = ["system", *[f"{l} {_asr_metric(report, l).upper()}" for l in langs]]
        rows = [[s.name, *[_fmt(s.asr[l].score) if l in s.asr else "–" for l in langs]] for s in report.systems]
        text += "\n\nTranscript WER / CER (lower is better)\n" + _text_table(header, rows)
    return text


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
    """Scatter of text-MT BLEU (x) against speech-translation BLEU (y) per direction, with the diagonal."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5.0))
    top = 0.0
    for s, marker in zip(report.systems, "os^Dvp*hx+" * 10):
        dirs = [d for d in s.bleu if d in report.mt_bleu]
        x = [report.mt_bleu[d] for d in dirs]
        y = [s.bleu[d].score for d in dirs]
        ax.scatter(x, y, marker=marker, label=s.name, alpha=0.8)
        top = max([top, *x, *y])
        if len(dirs) <= MAX_SCATTER_LABELS:
            for d, xi, yi in zip(dirs, x, y):
                ax.annotate(_arrow(d), (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
    top = top * 1.05 or 1.0
    ax.plot([0, top], [0, top], "k--", linewidth=0.8, label="S2TT = MT")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="text MT BLEU", ylabel="speech translation BLEU",
           title="MT vs S2TT per direction")
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


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _key(d: Direction) -> str:
    return f"{d[0]}-{d[1]}"


def _arrow(d: Direction) -> str:
    return f"{d[0]}→{d[1]}"


def _unique(items: Iterable) -> list:
    return list(dict.fromkeys(items))
