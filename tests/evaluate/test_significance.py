"""Paired bootstrap resampling over test sentences (evaluate/significance.py) and its place in the report."""

import json

import numpy as np
import pytest
import sacrebleu

from llm_srt.errors import LLMSRTError
from llm_srt.evaluate import render
from llm_srt.evaluate import report as rep
from llm_srt.evaluate.significance import paired_bootstrap

WORDS = "the quick brown fox jumps over a lazy dog while seven cats watch from the old red barn".split()


def refs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=12)) for _ in range(n)]


def system(references, hyp_of, directions=(("eng", "deu"), ("eng", "fra"))) -> list[dict]:
    return [{"id": f"{d[1]}-{i}", "src": d[0], "tgt": d[1], "ref_translation": r, "hyp_translation": hyp_of(i, r)}
            for d in directions for i, r in enumerate(references)]


def truncated(keep: int):
    return lambda i, r: " ".join(r.split()[:keep])


def test_a_clearly_better_system_holds_the_reverse_is_reversed():
    r = refs(30)
    good, bad = system(r, truncated(10)), system(r, truncated(4))
    c = paired_bootstrap(good, bad, samples=500)
    assert c.delta > 10 and c.p < 0.01 and c.verdict() == "holds" and c.low > 0 and c.sentences == 60
    assert paired_bootstrap(bad, good, samples=500).verdict() == "reversed"


def test_scores_are_the_reports_average_bleu():
    r = refs(20, seed=1)
    a, b = system(r, truncated(9)), system(r, lambda i, s: s if i % 3 else "")
    c = paired_bootstrap(a, b, samples=50)
    for rows, score in ((a, c.a), (b, c.b)):
        assert score == pytest.approx(rep.score_system("x", rows).average())
    deu = [x for x in a if x["tgt"] == "deu"]
    assert rep.score_system("x", a).bleu[("eng", "deu")].score == pytest.approx(sacrebleu.corpus_bleu(
        [x["hyp_translation"] for x in deu], [[x["ref_translation"] for x in deu]]).score)


def test_one_sentence_of_difference_is_not_significant():
    r = refs(40, seed=2)
    a = system(r, lambda i, s: s)
    b = system(r, lambda i, s: s if i else "")  # one sentence of 40 per direction missed
    c = paired_bootstrap(a, b, samples=1000)
    assert c.delta > 0 and c.p >= 0.05 and c.verdict() == "not significant"
    same = paired_bootstrap(a, a, samples=100)
    assert same.delta == 0 and same.p == 1.0 and same.verdict() == "not significant"


def test_failed_rows_count_as_empty_and_resampling_is_seeded():
    r = refs(25, seed=3)
    a = system(r, truncated(8))
    b = [{**x, "error": "OutOfMemoryError"} if i % 2 else x for i, x in enumerate(system(r, truncated(8)))]
    c = paired_bootstrap(a, b, samples=200, seed=7)
    assert c.b == pytest.approx(rep.score_system("b", b).average()) and c.delta > 0
    assert paired_bootstrap(a, b, samples=200, seed=7) == c


def test_every_paired_test_keeps_its_seed():
    """The seed is on the Comparison (results.json's "seed" beside "resamples", the line under each table of paired
    tests): with the resamples, what reproduces p and the interval."""
    from llm_srt.evaluate.significance import paired_error_rates, paired_mean

    r = refs(25, seed=3)
    assert paired_bootstrap(system(r, truncated(8)), system(r, truncated(5)), samples=50, seed=7).seed == 7
    a, b = system(r, lambda i, s: s if i % 4 else ""), system(r, truncated(10))  # close: p and the interval vary
    seven, eight = (paired_bootstrap(a, b, samples=200, seed=seed) for seed in (7, 8))
    assert (seven.p, seven.low, seven.high) != (eight.p, eight.low, eight.high)  # the seed draws the resamples
    assert paired_error_rates(srt_rows(r, truncated(9)), srt_rows(r, truncated(6)), samples=50, seed=8)["eng"].seed == 8
    assert paired_mean(np.arange(10.0), np.arange(10.0)[::-1], samples=50, seed=9).seed == 9
    assert paired_mean(np.arange(10.0), np.arange(10.0)[::-1], samples=50).seed == 0


def test_systems_on_different_rows_are_an_error():
    r = refs(5)
    with pytest.raises(LLMSRTError, match="not run on the same test rows"):
        paired_bootstrap(system(r, truncated(3)), system(r, truncated(3))[:-1])
    with pytest.raises(LLMSRTError, match="no rows with a reference"):
        paired_bootstrap([], [])


def test_report_shows_and_stores_the_comparison(tmp_path):
    r = refs(30, seed=4)
    good, bad = system(r, truncated(10)), system(r, truncated(3))
    report = rep.build_report({"bad": bad, "good": good})
    c = paired_bootstrap(good, bad, samples=300)
    from dataclasses import replace
    report = replace(report, comparisons=(("good", "bad", c),))
    render.write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Paired bootstrap over test sentences (300 resamples)" in md
    assert f"| good | bad | {c.delta:+.1f} |" in md and "| holds |" in md
    data = json.loads((tmp_path / "results.json").read_text())["systems"]
    assert data["good"]["significance"]["compared_with"] == "bad" and data["good"]["significance"]["p"] < 0.05
    assert "significance" not in data["bad"]
    assert "holds" in render.format_table(report)


def test_paired_mean_for_a_loss_lower_is_better():
    from llm_srt.evaluate.significance import paired_mean

    rng = np.random.default_rng(5)
    base = rng.uniform(2.0, 4.0, size=60)
    better = base - 0.3 + rng.normal(0, 0.05, size=60)  # every sentence a little more likely
    c = paired_mean(better, base, samples=500)
    assert c.a == pytest.approx(better.mean()) and c.delta < 0 and c.high < 0 and c.p < 0.01
    assert c.verdict(higher_is_better=False) == "holds" and c.verdict() == "reversed"
    noisy = base + rng.normal(0, 0.5, size=60)
    noisy += base.mean() - noisy.mean() + 0.01  # no real difference
    assert paired_mean(noisy, base, samples=500).verdict(higher_is_better=False) == "not significant"
    with pytest.raises(LLMSRTError, match="two equal"):
        paired_mean([1.0, 2.0], [1.0])
    with pytest.raises(LLMSRTError, match="finite"):  # NaN deviations would count as never extreme: p tiny
        paired_mean(list(base[:-1]) + [float("nan")], base, samples=100)


def test_the_interval_leaves_out_zero_exactly_when_p_is_below_alpha():
    """The interval and p come from one null distribution: on skewed differences (as BLEU's near 0) the raw
    percentiles of the resamples would exclude 0 where p does not reject, a contradiction the report printed."""
    from llm_srt.evaluate.significance import ALPHA, paired_mean

    rng = np.random.default_rng(11)
    seen = set()
    for trial in range(300):
        n = int(rng.integers(6, 80))
        skewed = rng.lognormal(0.0, float(rng.uniform(0.5, 2.5)), size=n) * float(rng.uniform(0.0, 0.6))
        base = rng.uniform(1.0, 3.0, size=n)
        samples = int(rng.choice([20, 21, 39, 40, 99, 100, 999, 1000]))
        c = paired_mean(base + skewed - float(rng.uniform(0.0, 0.3)), base, samples=samples, seed=trial)
        excludes_zero = c.low > 0 or c.high < 0
        assert excludes_zero == (c.p < ALPHA), (trial, c)
        assert c.low <= c.delta <= c.high
        seen.add(excludes_zero)
    assert seen == {True, False}  # both outcomes were exercised


def test_too_few_resamples_for_a_test_is_an_error():
    from llm_srt.evaluate.significance import paired_mean

    with pytest.raises(LLMSRTError, match="at least 20"):
        paired_mean([1.0, 2.0], [1.5, 1.0], samples=19)
    r = refs(5)
    with pytest.raises(LLMSRTError, match="at least 20"):
        paired_bootstrap(system(r, truncated(3)), system(r, truncated(2)), samples=0)


def test_runs_of_several_seeds_pool_their_hypotheses_and_resample_whole_sentences():
    """`paired_bootstrap_runs`: each system's BLEU is that of all its runs' hypotheses together; a resample draws
    sentences with all their runs' rows. The same run twice is exactly the run once (not twice the evidence); two
    runs whose small gains agree are stronger together than each alone; one run is `paired_bootstrap`."""
    from llm_srt.evaluate.significance import paired_bootstrap_runs

    r = refs(30, seed=5)
    a1, b1 = system(r, lambda i, s: s if i % 4 else ""), system(r, lambda i, s: s if i % 3 else "")
    a2, b2 = system(r, lambda i, s: s if i % 5 else ""), system(r, lambda i, s: s if (i + 1) % 3 else "")
    once = paired_bootstrap(a1, b1, samples=400)
    assert paired_bootstrap_runs([a1], [b1], samples=400) == once
    twice = paired_bootstrap_runs([a1, a1], [b1, b1], samples=400)
    assert (twice.a, twice.b, twice.p, twice.sentences) == pytest.approx((once.a, once.b, once.p, once.sentences))
    second = paired_bootstrap(a2, b2, samples=400)
    both = paired_bootstrap_runs([a1, a2], [b1, b2], samples=400)
    assert once.delta > 0 and second.delta > 0 and both.p < min(once.p, second.p)
    pooled = rep.score_system("x", [dict(x, id=f"{k}/{x['id']}") for k, run in enumerate((a1, a2)) for x in run])
    assert both.a == pytest.approx(pooled.average())  # BLEU of both runs' hypotheses together, per direction
    with pytest.raises(LLMSRTError, match="as many runs of each system"):
        paired_bootstrap_runs([a1, a2], [b1], samples=100)
    with pytest.raises(LLMSRTError, match=r"not run on the same test rows \(run 2\)"):
        paired_bootstrap_runs([a1, a2[1:]], [b1, b2], samples=100)


# --- transcripts: WER / CER per source language (paired_error_rates) ---------------------------------------------


def srt_rows(references, transcribe, src="eng", targets=("deu", "fra", "spa")) -> list[dict]:
    """SRT-like rows: each reference sentence's clip translated into every target, a transcript written per row."""
    return [{"id": f"{src}{i}:{t}", "src": src, "tgt": t, "ref_transcript": r, "hyp_transcript": transcribe(i, r),
             "ref_translation": "x", "hyp_translation": "x", "task": "srt"}
            for i, r in enumerate(references) for t in targets]


def test_transcript_error_rates_are_the_reports_and_lower_holds():
    from llm_srt.evaluate.significance import paired_error_rates

    r = refs(30, seed=6)
    zho = [t for t in ("猫坐在垫子上了", "今天天气很好", "我们去公园吧", "他喜欢读书", "这是一个测试", "明天会下雨")
           for _ in range(2)]  # twelve clips of six sentences
    good = srt_rows(r, truncated(11)) + srt_rows(zho, lambda i, s: s, "zho")
    bad = srt_rows(r, truncated(6)) + srt_rows(zho, lambda i, s: s[:-1], "zho")
    by_lang = paired_error_rates(good, bad, samples=500)
    assert list(by_lang) == ["eng", "zho"]
    for rows, side in ((good, "a"), (bad, "b")):
        scored = rep.score_system("x", rows).asr
        assert [getattr(by_lang[k], side) for k in by_lang] == pytest.approx([scored[k].score for k in by_lang])
    eng, zho = by_lang["eng"], by_lang["zho"]
    assert eng.delta < -30 and eng.p < 0.01 and eng.high < 0 and eng.verdict(higher_is_better=False) == "holds"
    assert eng.sentences == 30  # sentences, not the 90 rows: a clip's three transcripts are one unit
    assert zho.sentences == 6 and zho.delta < 0  # rows with one reference are one sentence (CER for Chinese)
    assert paired_error_rates(bad, good, samples=500)["eng"].verdict(higher_is_better=False) == "reversed"


def test_a_clips_rows_in_several_targets_are_one_sentence_not_more_evidence():
    """Three targets with the same transcripts are exactly one target: resampling the rows apart would triple the
    apparent number of sentences and shrink p (the mistake this test catches)."""
    from llm_srt.evaluate.significance import paired_error_rates

    r = refs(24, seed=7)
    a_of, b_of = (lambda i, s: s if i % 3 else ""), (lambda i, s: s if i % 4 else "")
    one = paired_error_rates(srt_rows(r, a_of, targets=("deu",)), srt_rows(r, b_of, targets=("deu",)), samples=400)
    three = paired_error_rates(srt_rows(r, a_of), srt_rows(r, b_of), samples=400)
    assert (three["eng"].a, three["eng"].b, three["eng"].p) == pytest.approx((one["eng"].a, one["eng"].b,
                                                                              one["eng"].p))
    assert 0.05 < one["eng"].p < 1  # a small, not significant difference: what overcounting would turn significant


def test_a_languages_transcript_test_is_the_same_whichever_languages_are_tested_with_it():
    """The report tests each source language alone (evaluate/compare.py); the seed must reproduce that p from all the
    rows too: a generator shared by the languages drew the second one's resamples after the first's."""
    from llm_srt.evaluate.significance import paired_error_rates

    r, s = refs(24, seed=10), refs(24, seed=11)
    a_of, b_of = (lambda i, x: x if i % 3 else ""), (lambda i, x: x if i % 4 else "")
    eng = (srt_rows(r, a_of), srt_rows(r, b_of))
    deu = (srt_rows(s, b_of, "deu", ("eng",)), srt_rows(s, a_of, "deu", ("eng",)))
    both = paired_error_rates(eng[0] + deu[0], eng[1] + deu[1], samples=300, seed=4)
    for lang, (a, b) in (("eng", eng), ("deu", deu)):
        alone = paired_error_rates(a, b, samples=300, seed=4)[lang]
        assert (both[lang].p, both[lang].low, both[lang].high) == (alone.p, alone.low, alone.high)
        assert 0.01 < alone.p < 1  # p and the interval depend on the resamples drawn


def test_transcript_runs_failed_rows_and_mismatches():
    from llm_srt.evaluate.significance import paired_error_rates, paired_error_rates_runs

    r = refs(20, seed=8)
    a, b = srt_rows(r, truncated(10)), srt_rows(r, truncated(9))
    once = paired_error_rates(a, b, samples=300)
    twice = paired_error_rates_runs([a, a], [b, b], samples=300)
    assert (twice["eng"].a, twice["eng"].p, twice["eng"].sentences) == pytest.approx(
        (once["eng"].a, once["eng"].p, once["eng"].sentences))
    failed = [{**x, "error": "OutOfMemoryError", "hyp_transcript": None} if i < 3 else x for i, x in enumerate(a)]
    c = paired_error_rates(failed, a, samples=300)["eng"]  # a failed SRT row is an empty transcript, not dropped
    assert c.a == pytest.approx(rep.score_system("f", failed).asr["eng"].score) and c.delta > 0
    with pytest.raises(LLMSRTError, match="did not transcribe the same test rows"):
        paired_error_rates(a, b[:-1])
    with pytest.raises(LLMSRTError, match=r"same test rows \(run 2\)"):
        paired_error_rates_runs([a, a[1:]], [b, b], samples=100)
    with pytest.raises(LLMSRTError, match="no rows with a reference transcript"):
        paired_error_rates([{**x, "hyp_transcript": None} for x in a], [{**x, "hyp_transcript": None} for x in b])
    with pytest.raises(LLMSRTError, match="at least 20"):
        paired_error_rates(a, b, samples=10)


def test_report_shows_and_stores_the_transcript_comparison(tmp_path):
    from dataclasses import replace

    from llm_srt.evaluate.significance import paired_error_rates

    r = refs(30, seed=9)
    good, bad = srt_rows(r, truncated(12)), srt_rows(r, truncated(5))
    c = paired_error_rates(good, bad, samples=300)["eng"]
    report = replace(rep.build_report({"bad": bad, "good": good}), transcript_comparisons=(("good", "bad", "eng", c),))
    render.write_report(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Transcripts: is the difference real? Paired bootstrap over test sentences (300 resamples" in md
    assert f"| good | bad | eng WER | {c.delta:+.1f} |" in md and "| 30 | holds |" in md
    data = json.loads((tmp_path / "results.json").read_text())["systems"]
    got = data["good"]["transcript_significance"]["eng"]
    assert (got["compared_with"], got["metric"], got["verdict"], got["sentences"]) == ("bad", "wer", "holds", 30)
    assert got["delta"] == pytest.approx(c.delta) and got["p"] < 0.05
    assert "transcript_significance" not in data["bad"]
    assert "transcript WER / CER, lower is better" in render.format_table(report)


def nway(references, hyp_of, directions, sentence: bool) -> list[dict]:
    """Rows of an N-way test set: sentence i in every direction, its references and hypotheses the same text in
    each (the same evidence repeated); `sentence`: with the manifest's sentence id, else only the source clip's
    transcript (a results file of an evaluation before the id was recorded)."""
    return [{"id": f"{s}-{t}-{i}", "src": s, "tgt": t, "ref_translation": r, "hyp_translation": hyp_of(i, r),
             "ref_transcript": f"clip {i} in {s}", **({"sentence": str(i)} if sentence else {})}
            for s, t in directions for i, r in enumerate(references)]


@pytest.mark.parametrize("sentence", [True, False])
def test_a_sentences_rows_in_every_direction_are_one_sentence_not_more_evidence(sentence):
    """One clip translated into three targets (the rows' only link its transcript, or the sentence id), and with the
    sentence id the same sentence read in a second source language too, are exactly one direction's evidence: the
    same scores, p and interval. Resampling each direction apart (the code before 2026-12-03) gave 2.5x the
    sentences and a smaller p for the same evidence: chance read as significance."""
    r = refs(40, seed=11)
    a_of, b_of = (lambda i, s: s if i % 3 else truncated(5)(i, s)), (lambda i, s: s if i % 4 else "")
    one = paired_bootstrap(nway(r, a_of, [("eng", "deu")], sentence), nway(r, b_of, [("eng", "deu")], sentence),
                           samples=400)
    assert 0.05 < one.p < 1 and one.sentences == 40
    directions = [("eng", "deu"), ("eng", "fra"), ("eng", "spa")] + ([("spa", "deu"), ("spa", "fra")] if sentence
                                                                     else [])
    many = paired_bootstrap(nway(r, a_of, directions, sentence), nway(r, b_of, directions, sentence), samples=400)
    assert (many.a, many.b, many.p, many.low, many.high, many.sentences) == pytest.approx(
        (one.a, one.b, one.p, one.low, one.high, 40))


def test_paired_mean_resamples_a_sentences_rows_together():
    from llm_srt.evaluate.significance import paired_mean

    rng = np.random.default_rng(9)
    base = rng.uniform(2.0, 4.0, size=30)
    other = base + rng.normal(0.05, 0.3, size=30)
    one = paired_mean(other, base, samples=400)
    twice = paired_mean(np.repeat(other, 3), np.repeat(base, 3), samples=400, sentences=np.repeat(np.arange(30), 3))
    assert (twice.a, twice.b, twice.p, twice.low, twice.high, twice.sentences) == pytest.approx(
        (one.a, one.b, one.p, one.low, one.high, 30))
    apart = paired_mean(np.repeat(other, 3), np.repeat(base, 3), samples=400)  # each row its own: too sure
    assert apart.sentences == 90 and apart.p < one.p
    with pytest.raises(LLMSRTError, match="a sentence for each row"):
        paired_mean([1.0, 2.0], [1.0, 2.5], sentences=["a"])


def test_paired_mean_over_directions_is_the_reports_average_over_directions():
    """COMET's Avg is a mean over directions; the test compared means over rows, which weigh a direction by its rows:
    10 eng->deu rows where a leads by 0.1 and 2 eng->zho rows where b leads by 0.4 gave a +1.7 over rows, while the
    report's Avg has b ahead by 15."""
    from llm_srt.evaluate.significance import paired_mean

    a = [0.80] * 10 + [0.20] * 2
    b = [0.70] * 10 + [0.60] * 2
    directions = [("eng", "deu")] * 10 + [("eng", "zho")] * 2
    rows = paired_mean(a, b, samples=200)
    assert rows.delta == pytest.approx(np.mean(a) - np.mean(b)) and rows.delta > 0
    macro = paired_mean(a, b, samples=200, directions=directions)
    assert (macro.a, macro.b) == pytest.approx((0.5, 0.65)) and macro.delta < 0
    assert macro.high < 0  # every resample draws rows of both directions' strata: b's lead holds
    with pytest.raises(LLMSRTError, match="a direction for each row"):
        paired_mean([1.0, 2.0], [1.0, 2.5], directions=[("eng", "deu")])


def test_evaluate_records_each_rows_sentence_id():
    from llm_srt.data.manifest import Row
    from llm_srt.evaluate.run import _result
    from llm_srt.prompts import Task

    row = Row(id="fleurs:deu:7:eng", audio="a.wav", duration=1.0, src_lang="deu", transcript="Hallo.", tgt_lang="eng",
              translation="Hello.", split="test", corpus="fleurs", sentence_id="7")
    result = _result(row, Task.SRT, "Hallo.", "Hello.")
    assert result.sentence == "7"
    assert rep.UtteranceResult.from_dict(json.loads(json.dumps(rep.asdict(result)))).sentence == "7"


def test_a_p_just_below_alpha_never_prints_as_alpha():
    from llm_srt.evaluate.significance import Comparison

    def shown(p):
        return Comparison(1.0, 0.0, p, 0.1, 1.9, 10, 1000).shown_p

    assert [shown(50 / 1001), shown(51 / 1001), shown(0.0494), shown(0.004)] == ["0.04995", "0.051", "0.049", "0.004"]


def test_the_unit_is_the_same_whichever_system_comes_first():
    """A system read from a hyps file written before results recorded sentence ids, against one that has them:
    both orders resample the recorded sentences, as when both have them."""
    r = refs(40, seed=11)
    a_of, b_of = (lambda i, s: s if i % 3 else truncated(5)(i, s)), (lambda i, s: s if i % 4 else "")
    directions = [("eng", "deu"), ("spa", "deu"), ("eng", "fra")]
    new_a, new_b = nway(r, a_of, directions, True), nway(r, b_of, directions, True)
    old_a = nway(r, a_of, directions, False)
    both = paired_bootstrap(new_a, new_b, samples=300)
    assert both.sentences == 40
    for c in (paired_bootstrap(old_a, new_b, samples=300), paired_bootstrap(new_b, old_a, samples=300)):
        assert (abs(c.delta), c.p, c.sentences) == pytest.approx((abs(both.delta), both.p, 40))


def test_each_direction_keeps_its_size_where_no_sentence_spans_two():
    """Sentences of their own per direction (CoVoST X->eng, older hyps files) are drawn per direction, as the set of
    directions they cover is their stratum: a one-sentence direction is in every resample. Here only that sentence
    differs, so every resample's difference is the observed one."""
    from llm_srt.evaluate.significance import resample_counts

    big = [{"id": f"d{i}", "src": "eng", "tgt": "deu", "ref_translation": t, "hyp_translation": t}
           for i, t in enumerate(refs(150, seed=3))]
    one = {"id": "f0", "src": "eng", "tgt": "fra", "ref_translation": "le chat dort sur le tapis rouge"}
    c = paired_bootstrap(big + [{**one, "hyp_translation": one["ref_translation"]}],
                         big + [{**one, "hyp_translation": ""}], samples=300)
    assert c.delta == pytest.approx(50) and c.low == pytest.approx(50) and c.high == pytest.approx(50)
    times = resample_counts(["deu"] * 5 + ["fra"] * 2 + ["deu"], 50, seed=1)
    assert (times[:, [0, 1, 2, 3, 4, 7]].sum(1) == 6).all() and (times[:, 5:7].sum(1) == 2).all()


def test_sentences_that_languages_lack_apart_are_still_drawn_from_one_pool():
    """In FLEURS each language lacks other sentences, so sentences cover different sets of directions. Drawn only
    among sentences of the same set, most were alone and drawn in every resample: no variance, p too small. Here
    31 sentences, each in its own set of directions, two systems of one noisy process: before, p = 0.001, an
    interval of width 0 and "reversed"; drawn from one pool, not significant."""
    from itertools import combinations

    from llm_srt.evaluate.significance import direction_groups

    targets = ["deu", "fra", "spa", "ita", "nld"]
    sets = [c for k in range(1, 6) for c in combinations(targets, k)]  # 31 different sets of directions
    rng = np.random.default_rng(5)

    def noisy(ref):
        words = ref.split()
        return " ".join(w for w in words if rng.random() > 0.3)

    r = refs(len(sets), seed=21)
    rows = [(i, t) for i, ts in enumerate(sets) for t in ts]
    a, b = ([{"id": f"{t}-{i}", "src": "eng", "tgt": t, "ref_translation": r[i], "hyp_translation": noisy(r[i]),
              "sentence": str(i)} for i, t in rows] for _ in range(2))
    c = paired_bootstrap(a, b, samples=500)
    assert c.sentences == 31 and c.low < c.delta < c.high and c.p > 0.05 and c.verdict() == "not significant"
    assert len(set(direction_groups([{("eng", t) for t in ts} for ts in sets]))) == 1
    assert direction_groups([{("eng", "deu")}, {("fra", "eng")}, {("eng", "deu")}]) == [("eng", "deu"), ("fra", "eng"),
                                                                                        ("eng", "deu")]


def test_p_is_the_centred_signed_test_not_sacrebleus_paired_bs():
    """README's figures: on one 200-sentence test (delta +1.77 BLEU) this p is 0.41-0.42 over three seeds, SacreBLEU's
    paired bootstrap (absolute differences centred) 0.13-0.15; both from the same sufficient statistics."""
    import random

    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import _paired_bs_test

    rng = random.Random(0)
    words = "the cat sat on a mat dog ran fast slow big small red blue green".split()
    refs = [" ".join(rng.choice(words) for _ in range(10)) for _ in range(200)]

    def noisy(share):
        return [" ".join(w if rng.random() > share else rng.choice(words) for w in r.split()) for r in refs]

    a, b = noisy(0.42), noisy(0.45)
    rows = [[rep.UtteranceResult(str(i), "eng", "deu", hyp_translation=h, ref_translation=r, sentence=str(i))
             for i, (h, r) in enumerate(zip(hyps, refs))] for hyps in (a, b)]
    ours, theirs = [], []
    for seed in (0, 1, 2):
        ours.append(paired_bootstrap(*rows, seed=seed).p)
        metric = BLEU()
        stats = metric._extract_corpus_statistics(b, [refs])
        _, out = _paired_bs_test({"BLEU": (stats, metric._aggregate_and_compute(stats))}, "a", a, [refs],
                                 {"BLEU": metric}, n_samples=1000, seed=seed + 12345)
        theirs.append(out["BLEU"].p_value)
    assert paired_bootstrap(*rows).delta == pytest.approx(1.77, abs=0.005)
    assert all(0.40 <= p <= 0.42 for p in ours) and all(0.13 <= p <= 0.155 for p in theirs), (ours, theirs)


def test_the_transcript_test_takes_the_manifests_sentences_as_the_bleu_test_does():
    """Two sentences that read alike ("yes", two sentence ids) are two units, as in the BLEU test; before, the
    transcript test merged every row with one normalized reference into one. One sentence's clips (two speakers,
    one sentence id) stay one unit."""
    from llm_srt.evaluate.significance import paired_error_rates

    def rows(hyp):
        texts = [("s1", "yes"), ("s2", "yes"), ("s3", "the cat sat"), ("s3", "the cat sat"), ("s4", "a dog ran"),
                 ("s5", "one more"), ("s6", "and a last one")]
        return [{"id": f"r{i}", "src": "eng", "tgt": "deu", "ref_transcript": ref, "hyp_transcript": hyp(i, ref),
                 "ref_translation": "x", "hyp_translation": "x", "task": "srt", "sentence": sid}
                for i, (sid, ref) in enumerate(texts)]

    comparison = paired_error_rates(rows(lambda i, s: s), rows(lambda i, s: s if i % 2 else "no"), samples=100)
    assert comparison["eng"].sentences == 6  # s1, s2, s3 (its two clips together), s4, s5, s6


def test_a_direction_none_of_whose_rows_a_resample_draws_is_left_out_of_its_average():
    """Direction B has a row for one sentence of ten (in A's stratum: that sentence spans both): a resample that
    does not draw it averages A alone (not A and a 0 for B)."""
    from llm_srt.evaluate import significance

    rng = np.random.default_rng(3)
    a, b = list(rng.uniform(0, 1, 11)), list(rng.uniform(0, 1, 11))
    sentences = list(range(10)) + [0]
    directions = [("eng", "deu")] * 10 + [("eng", "fra")]
    got = significance.paired_mean(a, b, samples=300, seed=5, sentences=sentences, directions=directions)
    times = significance.resample_counts(significance.direction_groups(
        [{("eng", "deu"), ("eng", "fra")}] + [{("eng", "deu")}] * 9), 300, 5)[:, sentences]
    d = np.subtract(a, b)
    deu = (times[:, :10] @ d[:10]) / times[:, :10].sum(axis=1)
    fra = np.where(times[:, 10] > 0, d[10], np.nan)
    assert np.isnan(fra).any() and not np.isnan(fra).all()
    by_hand = np.where(np.isnan(fra), deu, (deu + fra) / 2)
    want = significance._compare((np.mean(a[:10]) + a[10]) / 2, (np.mean(b[:10]) + b[10]) / 2, by_hand, 10)
    assert (got.a, got.b, got.p, got.low, got.high) == pytest.approx((want.a, want.b, want.p, want.low, want.high))


def test_a_direction_a_resample_did_not_draw_is_left_out_of_its_bleu_average(monkeypatch):
    """FLEURS-like: a direction whose rows only a few sentences have goes undrawn in some resamples. It is left out
    of that resample's average over directions (as `paired_mean` does), where it was scored 0 on both sides and
    halved the other directions' difference: the resampled differences there are eng->deu's alone."""
    from llm_srt.evaluate import significance
    from llm_srt.evaluate.significance import resample_counts

    seen = []
    real = significance._compare
    monkeypatch.setattr(significance, "_compare", lambda a, b, diffs, n, seed: seen.append(diffs) or real(a, b, diffs,
                                                                                                       n, seed))
    r = refs(40, seed=5)
    a_of, b_of = (lambda i, s: s), (lambda i, s: s if i % 3 else truncated(4)(i, s))
    deu = (nway(r, a_of, [("eng", "deu")], True), nway(r, b_of, [("eng", "deu")], True))
    jpn = (nway(r[:2], a_of, [("eng", "jpn")], True), nway(r[:2], lambda i, s: "", [("eng", "jpn")], True))
    paired_bootstrap(deu[0] + jpn[0], deu[1] + jpn[1], samples=200)
    paired_bootstrap(*deu, samples=200)
    both, alone = seen
    undrawn = resample_counts([0] * 40, 200, 0)[:, :2].sum(axis=1) == 0  # one pool of 40 sentences either way
    assert 0 < undrawn.sum() < 200 and alone[undrawn].min() > 0
    np.testing.assert_allclose(both[undrawn], alone[undrawn])
    assert np.all(both[~undrawn] > alone[~undrawn])  # eng->jpn's 100 BLEU lead where drawn


def test_fewer_sentences_than_any_test_needs_are_refused_by_every_test():
    """Below 6 sentences no test can reach p < 0.05 (5 sentences all favouring one system: p = 2 / 2**5 by the
    exact sign test), yet the bootstrap printed its floor, p = 1 / (resamples + 1), "holds", for 2 or 3 such
    sentences (for 1, every resample is that sentence). Each test refuses instead, with the count."""
    from llm_srt.evaluate.significance import MIN_SENTENCES, paired_error_rates, paired_mean

    assert MIN_SENTENCES == 6
    pairs = (("eng", "deu"), ("eng", "fra"))
    for n in (1, 2, 5):  # n sentences, each in 2 directions, all favouring a
        good, bad = nway(refs(n, seed=9), truncated(10), pairs, True), nway(refs(n, seed=9), truncated(4), pairs, True)
        with pytest.raises(LLMSRTError, match=f"at least 6 test sentences to draw from, not {n}: "):
            paired_bootstrap(good, bad, samples=100)
    six = paired_bootstrap(nway(refs(6, seed=9), truncated(10), pairs, True),
                           nway(refs(6, seed=9), truncated(4), pairs, True), samples=100)
    assert six.sentences == 6 and six.delta > 0
    with pytest.raises(LLMSRTError, match="not 1: "):
        paired_mean([1.0, 2.0], [3.0, 3.5], samples=100, sentences=["s", "s"])
    with pytest.raises(LLMSRTError, match="not 3: "):
        paired_mean([1.0, 2.0, 1.5], [3.0, 3.5, 2.0], samples=100, directions=[("eng", "deu")] * 3)
    # sentences that no other sentence shares a direction with: each is drawn, whole, in every resample
    apart = [{**x, "tgt": t} for x, t in zip(system(refs(8), truncated(10), (("eng", "deu"),)),
                                             ("deu", "deu", "deu", "fra", "spa", "ita", "por", "nld"))]
    worse = [{**x, "hyp_translation": " ".join(x["ref_translation"].split()[:4])} for x in apart]
    with pytest.raises(LLMSRTError, match="not 8 of which 3 share their directions with another sentence"):
        paired_bootstrap(apart, worse, samples=100)
    # transcripts: a language with too few sentences is left out, the others tested; only it: an error
    deu = ["ein satz hier", "noch einer", "der dritte"]
    rows_a = srt_rows(refs(20, seed=10), truncated(10)) + srt_rows(deu, lambda i, s: s, "deu")
    rows_b = srt_rows(refs(20, seed=10), truncated(5)) + srt_rows(deu, lambda i, s: "ein", "deu")
    assert list(paired_error_rates(rows_a, rows_b, samples=100)) == ["eng"]
    with pytest.raises(LLMSRTError, match="not 3 in deu: "):
        paired_error_rates([x for x in rows_a if x["src"] == "deu"], [x for x in rows_b if x["src"] == "deu"])


def test_systems_scored_against_other_references_are_not_compared():
    """Each system is scored against its own rows' references: hyps files written before and after the references
    were fixed (or files that only share ids) gave a confident verdict (p 0.001, delta -23) on nothing. The paired
    tests now refuse, naming the first row whose reference (or language) differs."""
    from dataclasses import replace

    from llm_srt.evaluate.significance import paired_bootstrap_runs, paired_error_rates

    r = refs(20, seed=11)
    a, b = ([rep.UtteranceResult.from_dict(x) for x in system(r, truncated(k))] for k in (10, 9))
    b2 = [replace(x, ref_translation=x.hyp_translation or "x") for x in b]
    with pytest.raises(LLMSRTError, match=r"not scored against the same references \(row 'deu-0': the reference "
                                          r"translation differs\); evaluate both systems on the same manifest again"):
        paired_bootstrap(a, b2, samples=100)
    with pytest.raises(LLMSRTError, match=r"row 'fra-0': the target language differs"):
        paired_bootstrap(a, [replace(x, tgt="spa") if x.id == "fra-0" else x for x in b], samples=100)
    with pytest.raises(LLMSRTError, match=r"row 'deu-3', run 2: the reference translation differs"):
        paired_bootstrap_runs([a, a], [b, [replace(x, ref_translation="other") if x.id == "deu-3" else x for x in b]],
                              samples=100)
    assert paired_bootstrap(a, b, samples=100).sentences == 40  # the same references: tested as before
    t = [rep.UtteranceResult.from_dict(x) for x in srt_rows(r, truncated(10))]
    u = [rep.UtteranceResult.from_dict(x) for x in srt_rows(r, truncated(9))]
    fixed = [replace(x, ref_transcript=x.ref_transcript + " fixed") if x.id.startswith("eng4:") else x for x in u]
    with pytest.raises(LLMSRTError, match=r"row 'eng4:deu': the reference transcript differs"):
        paired_error_rates(t, fixed, samples=100)
    assert paired_error_rates(t, u, samples=100)["eng"].sentences == 20


def test_a_blank_sentence_id_is_no_id_and_a_shared_id_is_named():
    """A manifest's empty sentence_id ("") made the whole test set one resampling unit, and every paired test was
    dropped as "not 1" sentence. A blank id is no id now (the clip is the unit); rows of one direction that share a
    real id are said to, beside the count."""
    from dataclasses import replace

    from llm_srt.data.manifest import Row
    from llm_srt.evaluate.run import _result
    from llm_srt.evaluate.significance import paired_error_rates, paired_mean, sentence_key, sentence_keys
    from llm_srt.prompts import Task

    r = refs(20, seed=12)
    for blank in ("", "  "):
        a = [rep.UtteranceResult.from_dict({**x, "sentence": blank}) for x in nway(r, truncated(10), (("eng", "deu"),
                                                                                                     ("eng", "fra")),
                                                                                  False)]
        b = [replace(x, hyp_translation=truncated(4)(0, x.ref_translation)) for x in a]
        assert sentence_key(a[0]) == ("clip", "eng", "clip 0 in eng")
        c = paired_bootstrap(a, b, samples=100)
        assert c.sentences == 20 and c.verdict() == "holds"
        row = Row(id="x", audio="a.wav", duration=1.0, src_lang="eng", transcript="Hi.", tgt_lang="deu",
                  translation="Hallo.", split="test", corpus="mine", sentence_id=blank)
        assert _result(row, Task.SRT, "Hi.", "Hallo.").sentence is None
    assert sentence_keys([{"1": a[0]}, {"1": replace(a[0], sentence="7")}])["1"] == ("sentence", "7")
    same = [{**x, "sentence": "s1"} for x in nway(r, truncated(10), (("eng", "deu"), ("eng", "fra")), True)]
    worse = [{**x, "hyp_translation": "the"} for x in same]
    with pytest.raises(LLMSRTError, match=r"to draw from, not 1 \(40 rows share 1 sentence id within a direction, "
                                          r"and a sentence's rows are drawn together: give each sentence its own "
                                          r"sentence_id in the manifest\): with fewer"):
        paired_bootstrap(same, worse, samples=100)
    transcripts = [{**x, "sentence": "s1" if int(x["id"][3:].split(":")[0]) < 17 else x["id"].split(":")[0]}
                   for x in srt_rows(r, truncated(10))]  # 17 clips' rows in 3 targets under one id, 3 clips their own
    with pytest.raises(LLMSRTError, match=r"not 4 in eng \(51 rows share 1 sentence id within a direction"):
        paired_error_rates(transcripts, [{**x, "hyp_transcript": "the"} for x in transcripts], samples=100)
    with pytest.raises(LLMSRTError, match=r"not 1 \(2 rows share 1 sentence id within a direction"):
        paired_mean([1.0, 2.0], [3.0, 3.5], samples=100, sentences=[("sentence", "s")] * 2,
                    directions=[("eng", "deu")] * 2)
    with pytest.raises(LLMSRTError, match=r"not 1: "):  # one clip in two directions: a sentence, rightly one unit
        paired_mean([1.0, 2.0], [3.0, 3.5], samples=100, sentences=[("sentence", "s")] * 2,
                    directions=[("eng", "deu"), ("eng", "fra")])


def test_the_bleu_test_reads_nfc_text_as_the_report_does():
    """A decomposed hypothesis is the text it composes to in the paired test too: its observed BLEU is the
    report's, not the code points' (which scored it near 0)."""
    import unicodedata

    r = refs(10, seed=13)
    a = [{**x, "ref_translation": x["ref_translation"] + " Việt", "hyp_translation": unicodedata.normalize(
        "NFD", x["ref_translation"] + " Việt")} for x in system(r, lambda i, s: s)]
    b = [{**x, "hyp_translation": truncated(6)(0, x["ref_translation"])} for x in a]
    c = paired_bootstrap(a, b, samples=100)
    assert c.a == pytest.approx(rep.score_system("a", a).average()) == pytest.approx(100.0)
