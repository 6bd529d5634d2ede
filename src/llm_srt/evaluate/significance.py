"""Is one system's average BLEU really higher than another's (or its transcripts' WER lower)? Paired bootstrap
resampling over test sentences.

The statistic is the one the paper's tables (and the demo's claims) compare: the average over directions of corpus
BLEU per direction. Both systems are scored on the same resampled sentences (paired). The unit resampled is the test
sentence with all its rows (`sentence_key`): in a many-to-many test set one sentence is a row in every direction
(one clip translated into every target; in an N-way corpus such as FLEURS the same sentence read in every source
language, translated into references shared across sources), and those rows are not independent: resampling them
apart would count one sentence's luck once per direction and make p too small. BLEU of a resample comes from
SacreBLEU's own per-sentence sufficient statistics, summed per direction with each sentence's multiplicity, as
SacreBLEU's paired test (`sacrebleu.significance`) computes it. The transcripts' test (`paired_error_rates`) is the
same with the corpus WER/CER per source language, from each sentence's edit errors and reference length.

p is two-sided: the share of resampled differences, centred on their mean (the null hypothesis of no difference),
at least as far from 0 as the observed difference, counting ties, with the +1 correction SacreBLEU takes from
multeval (Clark et al. 2011; Koehn 2004's p is the one-sided share of resamples one system wins, without it). A claim
"a beats b" then reads: holds (delta > 0, p < alpha), reversed (delta < 0, p < alpha), else not significant.
This p is not the one `sacrebleu --paired-bs` prints: SacreBLEU centres the *absolute* resampled differences
(|d_i| - mean |d_i|, then counts those above |delta|), a smaller p for the same data (200 sentences, delta +1.77
BLEU, three seeds: 0.13-0.15 there, 0.41-0.42 here). Centring the signed differences is the bootstrap test of the
null hypothesis itself, and the one whose p agrees with the interval below.

The 95% interval comes from the same centred differences: the observed difference +- the half-width that p < 0.05
needs, so the interval leaves out 0 exactly when p < 0.05. (Percentiles of the raw differences would disagree with p
where BLEU's resampling distribution is skewed, as it is near 0 BLEU: an interval of [+0.2, +3.5] beside p = 0.093.)
"""

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sacrebleu.metrics import BLEU

from .. import languages
from ..errors import LLMSRTError
from .metrics import error_counts, nfc, normalize
from .report import Direction, UtteranceResult, transcript, transcript_rows

SAMPLES = 1000  # resamples (SacreBLEU's default for the paired bootstrap)
ALPHA = 0.05
# the fewest resamples with which p = (extreme + 1) / (samples + 1) can fall below ALPHA: 1 / (n + 1) < ALPHA
MIN_SAMPLES = math.floor(1 / ALPHA)
# the fewest test sentences a paired test can find a difference with at p < ALPHA: even n sentences all favouring
# one system are p = 2 / 2**n by the exact sign test (0.0625 at 5), while the bootstrap, whose spread shrinks with
# the sentences, prints its floor 1 / (samples + 1) for 2 or 3 such sentences (one gives every resample the same)
MIN_SENTENCES = math.ceil(math.log2(2 / ALPHA))  # 6
_TOO_FEW = ("a paired test needs at least {min} test sentences to draw from, not {what}: with fewer no test can find "
            "a difference at p < {alpha} (the bootstrap would print p = 0.001 for 2 sentences); score a larger test "
            "set")
_OTHER_REFERENCES = ("the two systems were not scored against the same references (row {id!r}{where}: {what} "
                     "differs); evaluate both systems on the same manifest again (or compare hyps files of one "
                     "evaluation), as a test of their scores against different references means nothing")
BLEU_REFERENCES = {"src": "the source language", "tgt": "the target language",
                   "ref_translation": "the reference translation"}  # what a BLEU row is scored against
TRANSCRIPT_REFERENCES = {"ref_transcript": "the reference transcript"}


@dataclass(frozen=True)
class Comparison:
    a: float  # system a's average BLEU over directions, on the full test set
    b: float  # system b's
    p: float  # two-sided p-value of a - b under paired bootstrap resampling
    low: float  # 95% interval of a - b: leaves out 0 exactly when p < ALPHA (module docstring; not another alpha)
    high: float
    sentences: int  # test sentences both systems were scored on
    samples: int
    seed: int = 0  # the resampling's random seed (with `samples`, what reproduces p and the interval)

    @property
    def delta(self) -> float:
        return self.a - self.b

    @property
    def shown_p(self) -> str:
        """p as reports print it: 3 decimals, or 5 where 3 would round a p below ALPHA up to it (the smallest
        significant p of 1,000 resamples, 50 / 1001, prints 0.04995, not 0.050 beside "holds")."""
        text = f"{self.p:.3f}"
        return f"{self.p:.5f}" if self.p < ALPHA <= float(text) else text

    def verdict(self, alpha: float = ALPHA, higher_is_better: bool = True) -> str:
        """'holds', 'reversed' or 'not significant' for the claim "a beats b" (for a loss: lower is better)."""
        if self.p >= alpha or self.delta == 0:
            return "not significant"
        return "holds" if (self.delta > 0) == higher_is_better else "reversed"

    def claim_line(self, better: str, alpha: float = ALPHA) -> str:
        """The line a report prints under a table of such comparisons (`better`: what better means there, e.g.
        "higher average BLEU"): a bare "reversed" beside two names said neither which claim was tested nor how."""
        return (f"verdict: on each row's claim that its system is better than the one it is compared with ({better}), "
                f"paired bootstrap over test sentences, {self.samples} resamples, seed {self.seed}; holds / reversed: "
                f"p < {alpha} for / against the claim")  # no <system>: report.md's Markdown would read it as HTML


def paired_bootstrap(a: Iterable[UtteranceResult | Mapping], b: Iterable[UtteranceResult | Mapping],
                     samples: int = SAMPLES, seed: int = 0) -> Comparison:
    """Compare two systems' results on the same test rows (paired by utterance id; a failed row is an empty
    hypothesis, as in the report). Raises LLMSRTError when the two do not cover the same scored rows, or score them
    against other references (`check_references`)."""
    return paired_bootstrap_runs([a], [b], samples=samples, seed=seed)


def paired_bootstrap_runs(a: Sequence[Iterable[UtteranceResult | Mapping]],
                          b: Sequence[Iterable[UtteranceResult | Mapping]], samples: int = SAMPLES,
                          seed: int = 0) -> Comparison:
    """The same test over several training runs of each system (e.g. one per training seed): run i of `a` is paired
    with run i of `b`, and every run covers the same test rows. A system's BLEU per direction is that of all its
    runs' hypotheses together (their sufficient statistics summed), averaged over directions. A resample draws test
    sentences (`sentence_keys`, `resample_counts`), each with its rows in every direction and every run: the
    sentence is the unit, since one sentence's rows in different runs are not independent (resampling them apart
    would overstate the evidence: the same run twice would look like twice the sentences). One run is
    `paired_bootstrap`."""
    if len(a) != len(b) or not a:
        raise LLMSRTError(f"paired runs need as many runs of each system (one per seed), not {len(a)} and {len(b)}")
    runs_a, runs_b = [_scored(r) for r in a], [_scored(r) for r in b]
    keys = runs_a[0].keys()
    for i, (ra, rb) in enumerate(zip(runs_a, runs_b)):
        for rows in (ra, rb):
            if rows.keys() != keys:
                only = sorted(rows.keys() ^ keys)
                where = f" (run {i + 1})" if len(a) > 1 else ""
                raise LLMSRTError(f"the two systems were not run on the same test rows{where} ({len(only)} differ, "
                                  f"e.g. {only[0]!r}); compare results of one evaluation")
    if not keys:
        raise LLMSRTError("no rows with a reference translation to compare")
    check_references(runs_a + runs_b, BLEU_REFERENCES, runs=len(a))
    check_samples(samples)
    unit = sentence_keys(runs_a + runs_b)
    sentences = {}  # sentence -> its index, in the order the rows first name them
    sentence = {key: sentences.setdefault(unit[key], len(sentences)) for key in keys}
    by_direction: dict[Direction, list[str]] = {}
    for key, r in runs_a[0].items():
        by_direction.setdefault((r.src, r.tgt), []).append(key)
    strata = sentence_strata([(sentence[key], (r.src, r.tgt)) for key, r in runs_a[0].items()], len(sentences))
    times = resample_counts(strata, samples, seed, shared_ids((unit[key], (r.src, r.tgt))
                                                              for key, r in runs_a[0].items()))
    full_a, full_b, boot_a, boot_b = [], [], [], []
    for (_, tgt), ids in sorted(by_direction.items()):
        metric = BLEU(tokenize=languages.get(tgt).bleu_tokenize)
        # (rows, statistics): each row's statistics summed over the runs
        stats_a, stats_b = (sum(_stats(metric, [rows[k] for k in ids]) for rows in runs) for runs in (runs_a, runs_b))
        weights = times[:, [sentence[k] for k in ids]]  # (samples, rows): each row as often as its sentence
        drawn = weights.sum(axis=1) > 0  # a resample that drew none of the direction's rows leaves it out of its
        #   average (as `paired_mean`): scored 0 on both sides, it pulled the difference towards 0
        full_a.append(_score(metric, stats_a.sum(0)))
        full_b.append(_score(metric, stats_b.sum(0)))
        boot_a.append([_score(metric, s) if d else np.nan for s, d in zip(weights @ stats_a, drawn)])
        boot_b.append([_score(metric, s) if d else np.nan for s, d in zip(weights @ stats_b, drawn)])
    diffs = np.nanmean(np.subtract(boot_a, boot_b), axis=0)  # (samples,): average over the drawn directions
    return _compare(float(np.mean(full_a)), float(np.mean(full_b)), diffs, len(sentences), seed)


def check_references(maps: Sequence[Mapping[Hashable, UtteranceResult]], compared: Mapping[str, str],
                     runs: int = 1) -> None:
    """A one-line LLMSRTError naming the first row whose `compared` fields (name -> what it is, e.g.
    BLEU_REFERENCES) differ between the row maps (id -> row; system a's runs, then b's, `runs` each): each system
    is scored against its own rows' references, so a paired test of hyps files written before and after the
    references were fixed (or of files that only share ids) would compare scores against different texts."""
    first = maps[0]
    for i, rows in enumerate(maps[1:], start=1):
        for key, r in rows.items():
            base = first.get(key)
            what = next((w for name, w in compared.items() if base is not None and getattr(r, name) != getattr(
                base, name)), None)
            if what is not None:
                where = f", run {i % runs + 1}" if runs > 1 else ""
                raise LLMSRTError(_OTHER_REFERENCES.format(id=r.id, where=where, what=what))


def shared_ids(rows: Iterable[tuple[Hashable, Hashable]]) -> str:
    """' (N rows share M sentence ids ...)' for the too-few-sentences message, where rows of one direction share a
    manifest sentence id (`rows`: each row's unit, `sentence_key`, and direction; a sentence has one row a
    direction, so such rows are a manifest that gives many sentences one id, all of them one unit); else ''."""
    per: dict[tuple[Hashable, Hashable], int] = {}
    for unit, direction in rows:
        if isinstance(unit, tuple) and unit[:1] == ("sentence",):
            per[(unit, direction)] = per.get((unit, direction), 0) + 1
    shared = {key: n for key, n in per.items() if n > 1}
    ids = len({unit for unit, _ in shared})
    if not shared:
        return ""
    return (f" ({sum(shared.values())} rows share {ids} sentence id{'s' * (ids != 1)} within a direction, and a "
            "sentence's rows are drawn together: give each sentence its own sentence_id in the manifest)")


def sentence_strata(rows: Sequence[tuple[int, Direction]], sentences: int) -> list[Direction]:
    """Each of `sentences` sentences' stratum (`direction_groups`) from the rows: (sentence index, direction)."""
    covers: list[set[Direction]] = [set() for _ in range(sentences)]  # sentence -> the directions it has rows in
    for sentence, direction in rows:
        covers[sentence].add(direction)
    return direction_groups(covers)


def direction_groups(covers: Sequence[set[Direction]]) -> list[Direction]:
    """Each sentence's stratum for the BLEU test (`covers[i]`: the directions sentence i has rows in): the group of
    directions that sentences join, two directions being joined when one sentence has rows in both. An N-way set
    (FLEURS: one sentence in many directions) is one group, whichever sentences some languages lack, so its
    sentences are drawn from one pool; directions that no sentence spans (CoVoST X->eng) are a group each, so each
    keeps its size. (Before 2026-12-04 the stratum was the exact set of directions: in FLEURS, where languages lack
    different sentences, most strata held a sentence or two, drawn in every resample, and p came out too small: two
    systems of one process read "reversed" at p = 0.001 on 31 such sentences.)"""
    parent: dict[Direction, Direction] = {}

    def root(d: Direction) -> Direction:
        while parent.setdefault(d, d) != d:
            parent[d] = parent[parent[d]]
            d = parent[d]
        return d

    for dirs in covers:
        first, *rest = sorted(dirs)
        for d in rest:
            parent[root(d)] = root(first)
    return [root(min(dirs)) for dirs in covers]


def resample_counts(strata: Sequence[Hashable], samples: int, seed: int, note: str = "") -> np.ndarray:
    """(samples, units): how often each resample draws each unit, drawing within each stratum (`strata[i]`: unit
    i's) as many units as it holds (the BLEU test's strata: `direction_groups`). `note`: said after the number of
    units when there are too few (`shared_ids`)."""
    rng = np.random.default_rng(seed)
    members: dict[Hashable, list[int]] = {}
    for i, stratum in enumerate(strata):
        members.setdefault(stratum, []).append(i)
    drawn = sum(len(units) for units in members.values() if len(units) > 1)  # a stratum of one: the same each time
    if drawn < MIN_SENTENCES:
        what = f"{len(strata)}" if len(strata) < MIN_SENTENCES else (
            f"{len(strata)} of which {drawn} share their directions with another sentence (one alone in its "
            "directions is drawn in every resample)")
        raise LLMSRTError(_TOO_FEW.format(min=MIN_SENTENCES, what=what + note, alpha=ALPHA))
    times = np.zeros((samples, len(strata)), dtype=np.int32)  # 1,000 resamples of 120,500 units: 482 MB, not 964
    for units in members.values():
        draws = np.asarray(units)[rng.integers(0, len(units), size=(samples, len(units)))]
        for row, drawn in zip(times, draws):
            row += np.bincount(drawn, minlength=len(strata))
    return times


def sentence_keys(runs: Iterable[Mapping[str, UtteranceResult]]) -> dict[str, tuple[str, ...]]:
    """Row id -> its test sentence (`sentence_key`) over all the runs of the systems compared: the sentence id
    wherever any run recorded one (a system read from an older hyps file then takes the other's), else the
    first run's fallback, so the two systems and every test of a report resample the same units."""
    out: dict[str, tuple[str, ...]] = {}
    for rows in runs:
        for key, r in rows.items():
            if key not in out or (has_sentence(r) and out[key][0] != "sentence"):
                out[key] = sentence_key(r)
    return out


def sentence_key(r: UtteranceResult) -> tuple[str, ...]:
    """The test sentence a row belongs to, the unit the paired tests resample: the manifest's sentence id where the
    evaluation recorded it (`UtteranceResult.sentence`: every row of the sentence, in every direction); else the
    source clip, known by its language and normalized reference transcript (its rows in every target); else the
    row alone. A blank sentence id ("", as a hand-made manifest may hold) is none: one id shared by every row made
    the whole test set one sentence."""
    if has_sentence(r):
        return ("sentence", r.sentence)
    if r.ref_transcript is not None:
        return ("clip", r.src, normalize(r.ref_transcript, r.src))
    return ("row", r.id)


def has_sentence(r: UtteranceResult) -> bool:
    """Whether the row records a sentence id (not None, not blank)."""
    return r.sentence is not None and bool(r.sentence.strip())


def paired_error_rates(a: Iterable[UtteranceResult | Mapping], b: Iterable[UtteranceResult | Mapping],
                       samples: int = SAMPLES, seed: int = 0) -> dict[str, Comparison]:
    """The same test for the transcripts: WER (or CER, as the language registry says) of a against b, per source
    language (lower is better: a "holds" verdict needs `verdict(higher_is_better=False)`). Raises LLMSRTError when
    the two do not transcribe the same rows."""
    return paired_error_rates_runs([a], [b], samples=samples, seed=seed)


def paired_error_rates_runs(a: Sequence[Iterable[UtteranceResult | Mapping]],
                            b: Sequence[Iterable[UtteranceResult | Mapping]], samples: int = SAMPLES,
                            seed: int = 0) -> dict[str, Comparison]:
    """`paired_error_rates` over several training runs of each system, as `paired_bootstrap_runs` for BLEU. The rows
    scored are the report's (`report.transcript_rows`: a failed row is an empty transcript). The unit resampled is the
    sentence (`sentence_key`: the manifest's sentence id where recorded, else a source language's rows with one
    reference transcript), of every run together: the rows of one clip translated into several targets (SRT writes a
    transcript for each) are one sentence, not several independent ones. The statistic is the corpus rate, 100 x the
    resampled sentences' errors / their reference length, per source language, so the observed values are the report's
    WER/CER. Languages whose references all normalize to the empty string are left out, as in the report, and so
    are those with fewer than MIN_SENTENCES sentences (no test there; an LLMSRTError when that leaves none)."""
    if len(a) != len(b) or not a:
        raise LLMSRTError(f"paired runs need as many runs of each system (one per seed), not {len(a)} and {len(b)}")
    runs = [[transcript_rows(_results(r)) for r in system] for system in (a, b)]
    first = runs[0][0]
    keys = {(src, r.id) for src, rows in first.items() for r in rows}
    for i, (ra, rb) in enumerate(zip(*runs)):
        for by_src in (ra, rb):
            only = sorted(keys ^ {(src, r.id) for src, rows in by_src.items() for r in rows})
            if only:
                where = f" (run {i + 1})" if len(a) > 1 else ""
                raise LLMSRTError(f"the two systems did not transcribe the same test rows{where} ({len(only)} "
                                  f"differ, e.g. {only[0][1]!r}); compare results of one evaluation")
    if not first:
        raise LLMSRTError("no rows with a reference transcript and a system transcript to compare")
    check_references([{f"{src}\t{r.id}": r for src, rows in by_src.items() for r in rows}
                      for system in runs for by_src in system], TRANSCRIPT_REFERENCES, runs=len(a))
    check_samples(samples)
    # id -> its test sentence, as the BLEU test's (the manifest's sentence id; else the clip by its normalized
    # reference): two sentences that read alike ("yes") stay two units, one clip's rows in several targets one
    unit = sentence_keys([{r.id: r for rows in by_src.values() for r in rows} for system in runs for by_src in system])
    out, few = {}, []  # few: source languages with fewer than MIN_SENTENCES sentences to resample
    for src, rows in first.items():
        sentence = {r.id: unit[r.id] for r in rows}  # id -> the sentence it belongs to
        groups = {k: i for i, k in enumerate(dict.fromkeys(sentence.values()))}
        counts = []  # per system: (sentences, 2) errors and reference length, summed over rows and runs
        for system in runs:
            c = np.zeros((len(groups), 2), dtype=np.int64)
            for by_src in system:
                scored = by_src[src]
                for r, n in zip(scored, error_counts([transcript(r) for r in scored],
                                                     [r.ref_transcript for r in scored], src)):
                    if n is not None:
                        c[groups[sentence[r.id]]] += n
            counts.append(c)
        ca, cb = counts
        kept = ca[:, 1] > 0  # sentences whose reference normalizes to "" (for CER too) score nothing
        if not kept.any():
            continue
        ca, cb = ca[kept], cb[kept]
        if len(ca) < MIN_SENTENCES:
            few.append(f"{len(ca)} in {src}{shared_ids((sentence[r.id], r.tgt) for r in rows)}")
            continue
        # a generator per language, so that `seed` reproduces each language's p whichever languages are tested with
        #   it (one shared generator gave a later language other resamples here than in the report's own test of it)
        idx = np.random.default_rng(seed).integers(0, len(ca), size=(samples, len(ca)))
        boot_a, boot_b = ca[idx].sum(1), cb[idx].sum(1)  # (samples, 2)
        diffs = 100.0 * (boot_a[:, 0] / boot_a[:, 1] - boot_b[:, 0] / boot_b[:, 1])
        out[src] = _compare(100.0 * ca[:, 0].sum() / ca[:, 1].sum(), 100.0 * cb[:, 0].sum() / cb[:, 1].sum(),
                            diffs, len(ca), seed)
    if not out and few:
        raise LLMSRTError(_TOO_FEW.format(min=MIN_SENTENCES, what=", ".join(few), alpha=ALPHA))
    if not out:
        raise LLMSRTError("every reference transcript is empty after normalization: no error rate to compare")
    return out


def paired_mean(a: Sequence[float], b: Sequence[float], samples: int = SAMPLES, seed: int = 0,
                sentences: Sequence[Hashable] | None = None,
                directions: Sequence[Direction] | None = None) -> Comparison:
    """The same test for a per-row measure (e.g. the teacher-forced loss of the reference, evaluate/loss.py): mean
    of a against mean of b over the same rows, in the same order. `sentences`: each row's test sentence
    (`sentence_key`, or a manifest's sentence id), so that a sentence's rows are resampled together; None: every
    row its own. `directions`: each row's (src, tgt): the measure is then the mean over directions of each
    direction's mean, as the report averages COMET, and sentences are drawn within `direction_groups` as the BLEU
    test draws them (a mean over rows weighs a direction by its rows, and could disagree with the report's Avg in
    sign)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or not x.size:
        raise LLMSRTError(f"paired values need two equal, non-empty lists, not {x.shape} and {y.shape}")
    if sentences is not None and len(sentences) != x.size:
        raise LLMSRTError(f"paired values of {x.size} rows need a sentence for each row, not {len(sentences)}")
    check_samples(samples)
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise LLMSRTError("paired values must be finite numbers (a NaN or inf loss would read as a significant "
                          "difference); check the losses")
    if directions is not None and len(directions) != x.size:
        raise LLMSRTError(f"paired values of {x.size} rows need a direction for each row, not {len(directions)}")
    d = x - y
    index = {}
    groups = np.array([index.setdefault(k, len(index)) for k in (range(d.size) if sentences is None else sentences)])
    note = "" if sentences is None else shared_ids(zip(sentences, map(tuple, directions or [()] * x.size)))
    if directions is None:
        times = resample_counts([0] * len(index), samples, seed, note)[:, groups]  # (samples, rows)
        return _compare(float(x.mean()), float(y.mean()), (times @ d) / times.sum(axis=1), len(index), seed)
    keys = [tuple(k) for k in directions]
    times = resample_counts(sentence_strata(list(zip(map(int, groups), keys)), len(index)), samples, seed,
                            note)[:, groups]
    which = np.unique([f"{src}\t{tgt}" for src, tgt in keys], return_inverse=True)[1].ravel()  # row -> direction
    per_direction = []  # (samples,) each: the direction's mean difference in each resample; NaN where none of its
    #   rows was drawn (left out of that resample's average, as in the BLEU test)
    observed = []
    for direction in range(int(which.max()) + 1):
        rows = which == direction
        drawn = times[:, rows].sum(axis=1)
        per_direction.append(np.divide(times[:, rows] @ d[rows], drawn, out=np.full(samples, np.nan),
                                       where=drawn > 0))
        observed.append((x[rows].mean(), y[rows].mean()))
    a_avg, b_avg = (float(v) for v in np.mean(observed, axis=0))
    return _compare(a_avg, b_avg, np.nanmean(per_direction, axis=0), len(index), seed)


def check_samples(samples: int) -> None:
    """A resample count a test at p < ALPHA can use, or a one-line LLMSRTError."""
    if samples < MIN_SAMPLES:
        raise LLMSRTError(f"paired bootstrap with {samples} resamples: at least {MIN_SAMPLES} are needed for a test "
                          f"at p < {ALPHA} (p can never be smaller than 1 / (resamples + 1))")


def _compare(a: float, b: float, diffs: np.ndarray, sentences: int, seed: int = 0) -> Comparison:
    """The Comparison of observed scores a and b from the resampled differences `diffs`: two-sided p of a - b with
    the +1 correction, and the interval (a - b) +- h around it. p < ALPHA when fewer than m + 1 centred differences
    are at least |a - b| from 0, m the largest count with (m + 1) / (n + 1) < ALPHA; h is the (m + 1)-th largest of
    them, so |a - b| > h (0 outside the interval) exactly when p < ALPHA."""
    deviations = np.sort(np.abs(diffs - diffs.mean()))[::-1]
    extreme = int(np.sum(deviations >= abs(a - b)))
    m = int(np.ceil(ALPHA * (diffs.size + 1) - 1)) - 1  # >= 0: check_samples
    h = float(deviations[min(m, deviations.size - 1)])
    return Comparison(a, b, (extreme + 1) / (diffs.size + 1), a - b - h, a - b + h, sentences, int(diffs.size),
                      seed)


def _results(rows: Iterable[UtteranceResult | Mapping]) -> list[UtteranceResult]:
    return [r if isinstance(r, UtteranceResult) else UtteranceResult.from_dict(r) for r in rows]


def _scored(rows: Iterable[UtteranceResult | Mapping]) -> dict[str, UtteranceResult]:
    return {r.id: r for r in _results(rows) if r.ref_translation is not None}


def _stats(metric: BLEU, rows: list[UtteranceResult]) -> np.ndarray:
    hyps = ["" if r.failed else r.hyp_translation for r in rows]
    return np.asarray(metric._extract_corpus_statistics(nfc(hyps), [nfc([r.ref_translation for r in rows])]),
                      dtype=np.int64)  # NFC, as `metrics.bleu` reads the texts


def _score(metric: BLEU, stats: np.ndarray) -> float:
    return float(metric._compute_score_from_stats(stats.tolist()).score)
