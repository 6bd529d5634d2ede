"""The demo's verdicts on the paper's two claims (Table 3: the curriculum beats plain instruction tuning; Table 8: the
SMT stage helps SRT): paired bootstrap p-values on BLEU and on the teacher-forced loss of the references, with what
bounds them (the LLM's text MT, the transcripts' error rates, the outputs' shapes), and claims.json's record."""

import math
from collections.abc import Mapping, Sequence

from .errors import LLMSRTError


def bleu_per_direction(scores: Mapping[str, float]) -> str:
    """{"deu-eng": 4.3, ...} -> "deu->eng 4.3, ..." (as the demo prints BLEU per direction)."""
    return ", ".join(f"{d.replace('-', '->')} {b:.1f}" for d, b in scores.items())


def claims_record(numbers: list[dict], seed: int) -> list[dict]:
    """claims.json: each claim's numbers with the training seed of the runs it compares; a number that is not finite
    (BLEU with no row holding a reference is NaN) is null, as json.dumps writes a bare NaN, which is not JSON."""
    return [_finite({**claim, "seed": seed}) for claim in numbers]


def _finite(value):
    """`value` with each float that is not finite made None, within dicts and lists too (as report.py's `_num`)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


CLAIMS = (  # (claim, system that should win, system it is compared with, the paper's figures)
    ("curriculum beats plain instruction tuning (Table 3)", "LLM-SRT (this run)", "Baseline (this run)",
     "LLM-SRT-3B 20.6 vs Baseline-3B 8.6 avg BLEU"),
    ("the SMT stage helps SRT (Table 8)", "LLM-SRT (this run)", "LLM-SRT w/o SMT (this run)",
     "removing SMT lowers BLEU"),
)


def check_claims(results: Mapping[str, list], losses: Mapping[str, list[float | None]] | None = None,
                 samples: int = 1000, loss_rows: Sequence | None = None,
                 loss_tasks: Mapping[str, str] | None = None,
                 text_mt: Mapping[str, float] | None = None,
                 lora_text_mt: Mapping[str, Mapping[str, float]] | None = None,
                 own_prompt_mt: Mapping[str, Mapping[str, float]] | None = None) -> dict:
    """The paper's claims on this run's utterance results (system name -> its rows): average BLEU of each pair and
    whether the difference is beyond chance (paired bootstrap over the test sentences, p < 0.05). `losses` (system name
    -> teacher-forced loss of each reference translation, same rows in the same order, lower is better, None where
    a row was not scored; `loss_rows`: those manifest rows, whose sentences (`sentence_key`) and directions the test
    resamples as the BLEU test does, None: each row its own): the same test on the rows both systems scored, on the
    loss, which varies far less than BLEU at this scale, between two systems scored in one task
    (`loss_tasks`: name -> the task its loss was taken in; an SRT loss is given the gold transcript). `text_mt`
    (direction -> the plain LLM's own text-MT BLEU there) and `lora_text_mt` (system name -> direction -> the same
    measure of that run's LLM with its LoRA, from the plain LLM's MT prompt) and `own_prompt_mt` (the same from the
    speech LLM's own text-MT prompt, transcript<|src|><|tgt|>, the format its training used): printed with the claims
    and kept with each, as what bounds them (a curriculum cannot transfer MT its LLM no longer has)."""
    from .evaluate.report import UtteranceResult, score_system
    from .evaluate.significance import paired_bootstrap, paired_mean, sentence_key

    # each loss row's test sentence as the BLEU test keys it (evaluate records these fields of the same manifest
    #   rows): a blank sentence id falls back to the clip, instead of making every row one sentence
    units = [sentence_key(UtteranceResult(id=r.id, src=r.src_lang, tgt=r.tgt_lang, ref_transcript=r.transcript or None,
                                          sentence=r.sentence_id)) for r in loss_rows] if loss_rows else None
    directions = [(r.src_lang, r.tgt_lang) for r in loss_rows] if loss_rows else None

    per_run_mt = (  # (claims.json key, system name -> direction -> BLEU, what the line says it measured)
        ("text_mt_bleu_with_lora", lora_text_mt,
         "the same text MT of each run's LLM, its LoRA applied (what training on speech left of it)"),
        ("text_mt_bleu_own_prompt", own_prompt_mt,
         "each run's LLM from its own text-MT prompt (transcript<|src|><|tgt|>, the format its stages used)"))
    lines = [f"=== the paper's claims, on this run (avg BLEU over the demo directions; paired bootstrap over test "
             f"sentences, {samples} resamples)"]
    numbers = []
    for claim, a, b, paper in CLAIMS:
        try:
            c = paired_bootstrap(results[a], results[b], samples=samples)
        except LLMSRTError as e:  # too few test sentences for a test: the BLEU still prints, and why no verdict
            bleu_a, bleu_b = (score_system(n, results[n]).average() for n in (a, b))
            entry = {"claim": claim, "system": a, "bleu": round(bleu_a, 2), "compared_with": b,
                     "bleu_compared": round(bleu_b, 2), "holds_here": False, "p": None, "verdict": "not tested",
                     "why": str(e), "paper": paper}
            lines.append(f"{claim}: {a} {bleu_a:.1f} vs {b} {bleu_b:.1f} BLEU -> not tested here: {e} (paper: "
                         f"{paper})")
        else:
            verdict = c.verdict()
            entry = {"claim": claim, "system": a, "bleu": round(c.a, 2), "compared_with": b,
                     "bleu_compared": round(c.b, 2), "holds_here": verdict == "holds", "p": round(c.p, 5),
                     "verdict": verdict, "delta_ci95": [round(c.low, 2), round(c.high, 2)], "sentences": c.sentences,
                     "paper": paper}
            lines.append(f"{claim}: {a} {c.a:.1f} vs {b} {c.b:.1f} BLEU (delta {c.delta:+.1f}, 95% interval "
                         f"[{c.low:+.1f}, {c.high:+.1f}]) -> {verdict} (p={c.shown_p}) here (paper: {paper})")
            if verdict == "not significant" and abs(c.delta) >= 0.05:  # a difference that prints as one
                entry["power"] = power = detectable_difference(c)
                lines.append(f"  why not significant: with {c.sentences} test sentences only a difference beyond "
                             f"{power['detectable_delta']:.1f} BLEU is significant here (the interval's half-width); "
                             f"at the same spread per sentence, {c.delta:+.1f} would reach p < 0.05 with about "
                             f"{power['sentences_to_reach']} sentences, and a true {c.delta:+.1f} would be "
                             f"significant 80% of the time with about {power['sentences_for_80_percent']} (or pool "
                             "seeds: README)")
        tasks = [(loss_tasks or {}).get(n) for n in (a, b)]
        if losses and a in losses and b in losses and tasks[0] != tasks[1]:
            # an SRT model's reference loss is given the gold transcript, an S2TT model's speech alone: not one
            # measure (until 2026-12-05 Table 3 printed "holds (p=0.001)" on it)
            entry["reference_loss"] = {"verdict": "not comparable", "why": f"{a} is scored as {tasks[0]}, {b} as "
                                                                           f"{tasks[1]}"}
            lines.append(f"  reference loss: not comparable ({a} is scored as {tasks[0]}, given the gold transcript "
                         f"where srt; {b} as {tasks[1]})")
        elif losses and a in losses and b in losses:
            both = [i for i, (x, y) in enumerate(zip(losses[a], losses[b])) if x is not None and y is not None]
            left = len(losses[a]) - len(both)  # rows either could not score (their audio): paired only where both
            #   have a loss, so that the two means are over the same rows
            gone = f"; {left} of {len(losses[a])} rows left out (not scored for both)" if left else ""
            try:
                n = len(loss_rows) if loss_rows else len(losses[a])
                if len(losses[a]) != n or len(losses[b]) != n:
                    raise LLMSRTError(f"the two systems' losses cover {len(losses[a])} and {len(losses[b])} of {n} "
                                      "rows; measure both on the same rows")
                t = paired_mean([losses[a][i] for i in both], [losses[b][i] for i in both], samples=samples,
                                sentences=[units[i] for i in both] if units else None,
                                directions=[directions[i] for i in both] if directions else None)
            except LLMSRTError as e:
                entry["reference_loss"] = {"verdict": "not tested", "why": str(e) + gone}
                lines.append(f"  reference loss: not tested: {e}{gone}")
            else:
                lv = t.verdict(higher_is_better=False)
                entry["reference_loss"] = {"system": round(t.a, 4), "compared_with": round(t.b, 4),
                                           "p": round(t.p, 5), "verdict": lv,
                                           "delta_ci95": [round(t.low, 4), round(t.high, 4)], "rows": len(both),
                                           "unscored": left}
                lines.append(f"  reference loss (nats/token, lower is better): {t.a:.3f} vs {t.b:.3f} (delta "
                             f"{t.delta:+.3f}, [{t.low:+.3f}, {t.high:+.3f}]) -> {lv} (p={t.shown_p}){gone}")
        if text_mt:
            entry["text_mt_bleu"] = dict(text_mt)
        for key, by_run, _ in per_run_mt:
            if by_run:
                entry[key] = {n: dict(by_run[n]) for n in (a, b) if n in by_run}
        numbers.append(entry)
    if text_mt:
        lines.append("what bounds both: the LLM's own text MT (gold transcript -> translation) in the scored "
                     "directions, BLEU " + bleu_per_direction(text_mt))
    plain = sum(text_mt.values()) / len(text_mt) if text_mt else None

    def kept(bleu: Mapping[str, float]) -> str:
        mean = sum(bleu.values()) / len(bleu)
        return bleu_per_direction(bleu) + (f" ({mean / plain:.0%} of the plain LLM's)" if plain else "")
    for _, by_run, what in per_run_mt:
        if by_run:
            lines.append(f"  {what}, BLEU: " + "; ".join(f"{name}: {kept(bleu)}" for name, bleu in by_run.items()))
    heard = transcript_errors(results)
    if heard:
        lines.append("what the systems heard (their transcripts' error rate per source language, lower is better): "
                     + "; ".join(f"{name}: " + ", ".join(f"{src} {m.upper()} {v:.1f}" for src, (m, v) in by.items())
                                 for name, by in heard.items()))
    shapes = {name: output_shapes(results[name]) for name in dict.fromkeys(n for c in CLAIMS for n in c[1:3])}
    lines.append("what the systems wrote (of the scored rows): " + "; ".join(
        f"{name}: translation empty in {v['empty']}/{v['rows']}, a copy of its own transcript in {v['copies']}"
        + (f", language tags written for it in {v['forced_tags']}" if v["forced_tags"] else "")
        + (f", cut at its token cap in {v['capped']}" if v["capped"] else "")
        for name, v in shapes.items()))
    for entry in numbers:
        entry["outputs"] = {name: shapes[name] for name in (entry["system"], entry["compared_with"])}
        entry["transcript_errors"] = {name: {src: {"metric": m, "score": round(v, 2)} for src, (m, v) in by.items()}
                                      for name, by in heard.items()}
    return {"lines": lines, "numbers": numbers}


Z_95, Z_80 = 1.959964, 0.841621  # the standard normal's 97.5% and 80% quantiles (two-sided 0.05; power 0.8)


def detectable_difference(c) -> dict:
    """What a not-significant comparison's test set can detect (`Comparison` c, delta not 0): the interval's
    half-width (the smallest difference that is significant with these sentences), and the sentences at which the
    observed difference would just reach p < 0.05 and at which a true difference of that size would be found
    significant 80% of the time, taking the half-width to shrink as 1 / sqrt(sentences) (sentences as varied as
    these: a projection, not a measurement)."""
    half = (c.high - c.low) / 2
    ratio = half / abs(c.delta)
    return {"detectable_delta": round(half, 2), "sentences_to_reach": max(c.sentences + 1,
                                                                          math.ceil(c.sentences * ratio ** 2)),
            "sentences_for_80_percent": math.ceil(c.sentences * (ratio * (Z_95 + Z_80) / Z_95) ** 2)}


def transcript_errors(results: Mapping[str, list]) -> dict[str, dict[str, tuple[str, float]]]:
    """WER (CER for unsegmented scripts) of each system's transcripts per source language, for the systems that
    write one (SRT runs; the cascade's Whisper): a translation written after a wrong transcript cannot profit from
    transcribing first, so this bounds the claims as the LLM's text MT does. -> name -> src -> (metric, score)."""
    from .evaluate.report import score_system

    out = {}
    for name, rows in results.items():
        asr = score_system(name, rows).asr
        if asr:
            out[name] = {src: (s.metric, s.score) for src, s in sorted(asr.items())}
    return out


def output_shapes(rows: list) -> dict[str, int]:
    """What a system wrote on its scored rows (those with a reference translation): how many, how many with an
    empty translation (failed rows included), how many whose translation only repeats its own transcript (case and
    punctuation aside), how many got their SRT language tags written for them (the model ended after its
    transcript), how many were cut at their token cap: the measured reasons a speech LLM's BLEU stays near 0 at the
    demo's scale."""
    def norm(text: str | None) -> str:
        return " ".join("".join(ch for ch in (text or "").lower() if ch.isalnum() or ch.isspace()).split())

    scored = [r for r in rows if r.ref_translation]
    empty = sum(not norm(r.hyp_translation) for r in scored)
    copies = sum(bool(norm(r.hyp_translation)) and norm(r.hyp_translation) == norm(r.hyp_transcript) for r in scored)
    return {"rows": len(scored), "empty": empty, "copies": copies,
            "forced_tags": sum(bool(r.forced_tags) for r in scored), "capped": sum(bool(r.capped) for r in scored)}
