import json
from dataclasses import replace

import pytest

from llm_srt.cli import VERBS
from llm_srt.data.manifest import Row, read_manifest, write_manifest
from llm_srt.demo import test_subset as demo_subset


def test_demo_subset_keeps_the_chosen_directions_and_sentences(tmp_path):
    wav = tmp_path / "a.wav"
    import numpy as np
    from llm_srt.audio import write_wav
    write_wav(wav, np.zeros(1600, dtype=np.float32))
    rows = []
    for sid in range(12):
        for src, tgt in (("eng", "deu"), ("deu", "eng"), ("eng", "zho"), ("eng", "")):
            rows.append(Row(id=f"{sid}-{src}-{tgt}", audio=str(wav), duration=0.1, src_lang=src, transcript="x",
                            tgt_lang=tgt, translation="y" if tgt else "", split="test", corpus="t",
                            sentence_id=f"{sid:02d}"))
    write_manifest(tmp_path / "test.jsonl", rows)
    out = demo_subset(tmp_path / "test.jsonl", tmp_path / "sub.jsonl", directions=(("eng", "deu"), ("deu", "eng")),
                      sentences=5)
    kept = read_manifest(out)
    assert len(kept) == 10
    assert {(r.src_lang, r.tgt_lang) for r in kept} == {("eng", "deu"), ("deu", "eng")}
    assert {r.sentence_id for r in kept} == {"00", "01", "02", "03", "04"}
    assert "demo" in VERBS
    out = demo_subset(tmp_path / "test.jsonl", tmp_path / "sub2.jsonl", directions=(("eng", "deu"),), sentences=3,
                      exclude=frozenset({"00", "02"}))
    assert [r.sentence_id for r in read_manifest(out)] == ["01", "03", "04"]



def test_demo_subset_takes_the_first_sentences_of_each_direction_where_directions_lack_some(tmp_path):
    """`sentences` per direction, as the docstring says: the first N ids were taken over every row (ASR rows and
    other directions too), so a sentence an unwanted direction alone had, or one a direction lacked (a catalogue
    without that msgid), left that direction short of N rows."""
    import numpy as np
    from llm_srt.audio import write_wav

    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(1600, dtype=np.float32))
    has = {"00": [("eng", "zho")], "01": [("eng", "deu")], "02": [("deu", "eng")]}  # the rest: both directions
    rows = [Row(id=f"{sid}-{src}-{tgt}", audio=str(wav), duration=0.1, src_lang=src, transcript="x", tgt_lang=tgt,
                translation="y", split="test", corpus="t", sentence_id=sid)
            for sid in [f"{i:02d}" for i in range(8)]
            for src, tgt in has.get(sid, [("eng", "deu"), ("deu", "eng")])]
    write_manifest(tmp_path / "test.jsonl", rows)
    out = demo_subset(tmp_path / "test.jsonl", tmp_path / "sub.jsonl", directions=(("eng", "deu"), ("deu", "eng")),
                      sentences=3, exclude=frozenset({"03"}))
    kept = [(r.src_lang, r.tgt_lang, r.sentence_id) for r in read_manifest(out)]
    assert sorted(s for src, _, s in kept if src == "eng") == ["01", "04", "05"]
    assert sorted(s for src, _, s in kept if src == "deu") == ["02", "04", "05"]

def test_shipped_training_sentences_are_read_from_the_checkpoint(tmp_path):
    from llm_srt.demo import SHIPPED, TRAIN_SENTENCES, shipped_training_sentences

    assert shipped_training_sentences(tmp_path) == set()
    (tmp_path / TRAIN_SENTENCES).write_text("ab12\ncd34\n")
    assert shipped_training_sentences(tmp_path) == {"ab12", "cd34"}
    shipped = shipped_training_sentences(SHIPPED / "srt")  # the list the repo ships next to the adapter
    assert len(shipped) >= 100 and all(len(i) == 10 for i in shipped)
    asr = shipped_training_sentences(SHIPPED / "asr")  # the demo's start: 560 mini sentences + 1,200 prose
    assert len(asr) >= 1000 and all(len(i) == 10 for i in asr) and (SHIPPED / "asr" / "adapter.safetensors").is_file()


def test_the_demo_corpus_adds_test_sentences_no_shipped_model_trained_on_and_rebuilds_an_older_one(tmp_path):
    import json

    from llm_srt.data.mini import DEFAULT_SIZES
    from llm_srt.demo import SHIPPED, TRAIN_SENTENCES, UNSEEN_TEST, corpus_options, older_demo_corpus

    options = corpus_options(tmp_path / "mini")
    assert options.unseen_test == UNSEEN_TEST >= 40 and options.out == tmp_path / "mini"
    assert options.unseen_by == (SHIPPED / "asr" / TRAIN_SENTENCES, SHIPPED / "srt" / TRAIN_SENTENCES)
    assert (options.train, options.dev, options.test) == tuple(DEFAULT_SIZES[s] for s in ("train", "dev", "test"))
    assert corpus_options(tmp_path, asr=tmp_path).unseen_by == (SHIPPED / "srt" / TRAIN_SENTENCES,)

    assert not older_demo_corpus(tmp_path)  # no summary: a corpus of the user's
    _older_corpus(tmp_path)
    assert older_demo_corpus(tmp_path)  # the earlier demo's: built again
    assert not _older_corpus(tmp_path, sentences={"train": 240, "dev": 30, "test": 80}, unseen_test=40)  # today's
    assert not _older_corpus(tmp_path, sentences={"train": 560, "dev": 30, "test": 40})  # another build: as it is


def _older_corpus(folder, seed=0, langs=None, records=None, **fields):
    """summary.json and voices.jsonl as `build_mini(MiniOptions(folder))` wrote them before the demo's unseen test
    sentences (options in `fields` and `seed` changed); -> older_demo_corpus(folder)."""
    from llm_srt.data import mini
    from llm_srt.data.manifest import parse_directions
    from llm_srt.demo import older_demo_corpus

    langs = list(langs or mini.DEFAULT_LANGS)
    summary = {"langs": langs, "directions": [f"{s}-{t}" for s, t in parse_directions("all", langs)],
               "sentences": dict(mini.DEFAULT_SIZES), "rows": {}, "hours": {}, "rejected": {},
               "rejected_sentences": 0, "rejected_examples": [], **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary))
    if records is None:
        records = []
        for sentence in ("0a1b2c3d4e", "5f6a7b8c9d"):
            for lang in langs:
                voice, speed, pitch = mini.espeak_draw(seed, sentence, lang)
                records.append({"audio": f"audio/{lang}/{sentence}.flac", "voice": str(voice), "speed": speed,
                                "pitch": pitch})
    (folder / "voices.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return older_demo_corpus(folder)


def test_only_the_older_demo_corpus_itself_is_rebuilt(tmp_path):
    """A corpus of the user's with the default split sizes (other languages, prose, a held-out voice, other voices,
    augmentation, another seed) was taken for the earlier demo's, rebuilt in place with the demo's options (its
    prose.jsonl and heldout/ deleted), and the log said it kept the same rows."""
    assert _older_corpus(tmp_path / "older")
    assert not _older_corpus(tmp_path / "langs", langs=("eng", "deu"))
    assert not _older_corpus(tmp_path / "seed", seed=1)
    assert not _older_corpus(tmp_path / "prose", extra={"prose": 4})
    assert not _older_corpus(tmp_path / "voices", voices={"espeak-ng:en+m1": 3, "flite:slt": 1})
    assert not _older_corpus(tmp_path / "no_voices", records=[])
    drawn = json.loads((tmp_path / "older" / "voices.jsonl").read_text().splitlines()[0])
    assert not _older_corpus(tmp_path / "augmented", records=[{**drawn, "augment": {"speed": 1.1}}])
    assert not _older_corpus(tmp_path / "wav", records=[{**drawn, "audio": drawn["audio"].replace(".flac", ".wav")}])
    assert _older_corpus(tmp_path / "heldout")
    (tmp_path / "heldout" / "heldout").mkdir()  # a held-out voice's audio (its summary extra left aside)
    from llm_srt.demo import older_demo_corpus

    assert not older_demo_corpus(tmp_path / "heldout")


class _Stop(Exception):
    pass


def _run_corpus_step(tmp_path, monkeypatch, data, asr=None):
    """run_demo up to its corpus step (models, placement and the corpus build stubbed; stopped at demo_stages) ->
    (the log's lines, the MiniOptions build_mini was called with)."""
    from types import SimpleNamespace

    from llm_srt import demo, embedded
    from llm_srt.data import mini

    built = []
    monkeypatch.setattr(embedded, "ensure_embedded", lambda: None)
    monkeypatch.setattr(demo, "demo_placement", lambda dtype, log: SimpleNamespace(dtype_name="float32"))
    monkeypatch.setattr(mini, "build_mini", lambda opts: built.append(opts) or SimpleNamespace(lines=lambda: []))

    def stop(*args, **kwargs):
        raise _Stop
    monkeypatch.setattr(demo, "demo_stages", stop)
    lines = []
    try:
        demo.run_demo(tmp_path / "work", data, log=lines.append, **({"asr": asr} if asr else {}))
    except _Stop:
        pass
    return lines, built


def test_the_demo_uses_a_users_corpus_as_it_is(tmp_path, monkeypatch):
    """A corpus of the user's with the default split sizes was rebuilt with the demo's options; it is used as it
    is, and the log says so. So is a smaller one `llm-srt prepare mini` built where the catalogues are short (what
    the short-catalogue error tells `make demo` users to do)."""
    for name, fields in (("user", {"langs": ("eng", "deu")}), ("small", {"sentences": {"train": 100, "dev": 20,
                                                                                         "test": 20}})):
        data = tmp_path / name
        _older_corpus(data, **fields)
        (data / "test.jsonl").write_text("")
        (data / "prose.jsonl").write_text("")
        lines, built = _run_corpus_step(tmp_path, monkeypatch, data)
        assert built == [] and (data / "prose.jsonl").is_file()
        assert f"{data}: not a corpus the demo built (other options, or no summary.json); used as it is" in lines
        assert not any("built again" in line for line in lines)
    older = tmp_path / "older"
    _older_corpus(older)
    (older / "test.jsonl").write_text("")
    lines, built = _run_corpus_step(tmp_path, monkeypatch, older)
    assert [opts.out for opts in built] == [older] and any("built again (the same train" in line for line in lines)


def test_an_asr_stage_without_its_training_sentences_is_said(tmp_path, monkeypatch):
    """`--asr FOLDER` without train_sentences.txt (a run's final/ has none) skipped the check that the test
    sentences were not trained on, without a word; demo_stages' error, which tells users to train the stage, did
    not say how to write the list."""
    import pytest

    from llm_srt import demo
    from llm_srt.errors import LLMSRTError

    asr = tmp_path / "asr"
    asr.mkdir()
    data = tmp_path / "data"
    _older_corpus(data, sentences={"train": 100, "dev": 20, "test": 20})
    (data / "test.jsonl").write_text("")
    lines, _ = _run_corpus_step(tmp_path, monkeypatch, data, asr=asr)
    warned = [line for line in lines if line.startswith(f"warning: {asr} has no train_sentences.txt")]
    assert len(warned) == 1 and "cannot be checked against that stage's training sentences" in warned[0]
    assert "checkpoints/embedded/asr/README.md" in warned[0]
    (asr / "train_sentences.txt").write_text("0a1b2c3d4e\n")
    lines, _ = _run_corpus_step(tmp_path, monkeypatch, data, asr=asr)
    assert not any("train_sentences.txt" in line for line in lines)
    monkeypatch.undo()  # the real demo_stages
    with pytest.raises(LLMSRTError, match=r"missing: no config.json; .* and list the sentence ids it trained on in its "
                                          r"train_sentences.txt \(one a line: .*checkpoints/embedded/asr/README.md"):
        demo.demo_stages(tmp_path / "work", data, asr=tmp_path / "missing")


def test_claims_say_holds_reversed_or_not_significant_with_p():
    from llm_srt.demo import check_claims
    from llm_srt.evaluate.report import UtteranceResult

    words = "the cat sat on a mat while dogs ran in the park and it rained over the old city".split()
    rng = __import__("numpy").random.default_rng(0)
    refs = [" ".join(rng.choice(words, size=10)) for _ in range(30)]

    def system(hyp):
        return [UtteranceResult(id=str(i), src="deu", tgt="eng", hyp_translation=hyp(i, r), ref_translation=r)
                for i, r in enumerate(refs)]

    full, poor = system(lambda i, r: r), system(lambda i, r: " ".join(r.split()[:3]))
    almost = system(lambda i, r: r if i else "")  # one sentence of 30 lost: no real difference
    names = ("LLM-SRT (this run)", "Baseline (this run)", "LLM-SRT w/o SMT (this run)")
    table3, table8 = check_claims(dict(zip(names, (full, poor, almost))), samples=300)["numbers"]
    assert table3["holds_here"] and table3["verdict"] == "holds" and table3["p"] < 0.01 and table3["bleu"] == 100.0
    assert table3["compared_with"] == "Baseline (this run)" and table3["bleu_compared"] < 30
    assert table8["compared_with"] == "LLM-SRT w/o SMT (this run)" and table8["verdict"] == "not significant"
    assert not table8["holds_here"] and table8["p"] >= 0.05 and table8["bleu"] > table8["bleu_compared"]
    result = check_claims(dict(zip(names, (poor, full, full))), samples=300)
    assert [n["verdict"] for n in result["numbers"]] == ["reversed", "reversed"]
    assert not any(n["holds_here"] for n in result["numbers"])
    assert all("-> reversed (p=0.00" in line for line in result["lines"][1:3])
    losses = {names[0]: [2.0 + 0.01 * i for i in range(30)], names[1]: [2.5 + 0.01 * i for i in range(30)],
              names[2]: [2.0 + 0.01 * i + (0.2 if i % 2 else -0.2) for i in range(30)]}
    result = check_claims(dict(zip(names, (full, poor, almost))), losses, samples=300)
    table3, table8 = result["numbers"]
    assert table3["reference_loss"]["verdict"] == "holds" and table3["reference_loss"]["p"] < 0.01
    assert table3["reference_loss"]["system"] < table3["reference_loss"]["compared_with"]
    assert table8["reference_loss"]["verdict"] == "not significant"
    assert sum("reference loss (nats/token" in line for line in result["lines"]) == 2
    # as the demo measures them: the curriculum's SRT loss is given the gold transcript, the Baseline's S2TT loss
    # speech alone; that pair is not one measure (it printed "holds (p=0.001)"), the SRT pair is
    tasks = {names[0]: "srt", names[1]: "s2tt", names[2]: "srt"}
    result = check_claims(dict(zip(names, (full, poor, almost))), losses, samples=300, loss_tasks=tasks)
    table3, table8 = result["numbers"]
    assert table3["reference_loss"] == {"verdict": "not comparable", "why": f"{names[0]} is scored as srt, "
                                                                            f"{names[1]} as s2tt"}
    assert table8["reference_loss"]["verdict"] == "not significant"
    assert sum("reference loss: not comparable" in line for line in result["lines"]) == 1
    shape = {"rows": 30, "empty": 0, "copies": 0, "forced_tags": 0, "capped": 0}
    assert table3["outputs"] == {names[0]: shape, names[1]: shape}
    assert table8["outputs"][names[2]] == {**shape, "empty": 1}
    assert "LLM-SRT w/o SMT (this run): translation empty in 1/30" in result["lines"][-1]



def test_the_loss_test_resamples_the_bleu_tests_sentences_and_pairs_only_rows_both_systems_scored():
    """Blank sentence ids (a hand-made manifest) fall back to the clip, as in the BLEU test beside it (they made the
    whole test set one sentence: "not tested"); the loss is the mean over directions, as the BLEU claim; a row one
    system could not score (its audio) is left out of both sides, and said."""
    import numpy as np

    from llm_srt.demo import check_claims
    from llm_srt.evaluate.report import UtteranceResult

    words = "the cat sat on a mat while dogs ran in the park and it rained over the old city".split()
    rng = np.random.default_rng(1)
    refs = [" ".join(rng.choice(words, size=10)) for _ in range(30)]
    src = ["deu"] * 20 + ["fra"] * 10  # two directions of unequal size: a mean over rows is not one over directions
    rows = [Row(id=str(i), audio="a.wav", duration=1.0, src_lang=s, transcript=f"clip {i}", tgt_lang="eng",
                translation=r, split="test", corpus="t", sentence_id="") for i, (s, r) in enumerate(zip(src, refs))]

    def system(hyp):
        return [UtteranceResult(id=r.id, src=r.src_lang, tgt="eng", hyp_translation=hyp(r.translation),
                                ref_transcript=r.transcript, ref_translation=r.translation) for r in rows]

    names = ("LLM-SRT (this run)", "Baseline (this run)", "LLM-SRT w/o SMT (this run)")
    results = dict(zip(names, (system(lambda r: r), system(lambda r: " ".join(r.split()[:3])), system(lambda r: r))))
    base = 2.0 + 0.05 * rng.standard_normal(30)
    better = base - np.where(np.arange(30) < 20, 0.3, 0.1)
    losses = {names[0]: list(better), names[1]: list(base), names[2]: list(base + 0.01)}
    table3 = check_claims(results, losses, samples=300, loss_rows=rows)["numbers"][0]
    loss = table3["reference_loss"]
    assert loss["verdict"] == "holds" and loss["rows"] == 30 and loss["unscored"] == 0
    assert loss["system"] == round((better[:20].mean() + better[20:].mean()) / 2, 4)  # over directions
    assert loss["system"] != round(better.mean(), 4)
    losses[names[0]][5] = None  # the run could not score row 5, the baseline row 25
    losses[names[1]][25] = None
    result = check_claims(results, losses, samples=300, loss_rows=rows)
    loss = result["numbers"][0]["reference_loss"]
    kept = [i for i in range(30) if i not in (5, 25)]
    assert loss["rows"] == 28 and loss["unscored"] == 2 and loss["verdict"] == "holds"
    assert loss["compared_with"] == round((base[[i for i in kept if i < 20]].mean()
                                           + base[[i for i in kept if i >= 20]].mean()) / 2, 4)
    assert any(line.startswith("  reference loss (nats/token") and line.endswith("; 2 of 30 rows left out (not "
                                                                               "scored for both)")
               for line in result["lines"])
    short = check_claims(results, {names[0]: list(better[:29]), names[1]: list(base)}, samples=300,
                         loss_rows=rows)["numbers"][0]["reference_loss"]
    assert short == {"verdict": "not tested", "why": "the two systems' losses cover 29 and 30 of 30 rows; measure "
                                                     "both on the same rows"}


def test_a_not_significant_claim_says_what_its_test_set_can_detect():
    """The measured cause of "not significant": the interval's half-width, and the test set size at which the
    observed difference would reach p < 0.05; a test set that much larger (the same sentences repeated, so the
    same spread) does make it significant, and one as large as today's does not."""
    import math

    from llm_srt.demo import check_claims
    from llm_srt.evaluate.report import UtteranceResult

    words = "the cat sat on a mat while dogs ran in the park and it rained over the old city".split()
    rng = __import__("numpy").random.default_rng(1)
    refs = [" ".join(rng.choice(words, size=10)) for _ in range(24)]

    def system(hyp, copies=1):
        return [UtteranceResult(id=f"{k}-{i}", src="deu", tgt="eng", hyp_translation=hyp(i, r), ref_translation=r)
                for k in range(copies) for i, r in enumerate(refs)]

    def better(i, r):
        return " ".join(r.split()[:7]) if i % 3 else " ".join(r.split()[:4])

    def worse(i, r):
        return " ".join(r.split()[:6]) if i % 2 else " ".join(r.split()[:5])

    names = ("LLM-SRT (this run)", "Baseline (this run)", "LLM-SRT w/o SMT (this run)")
    result = check_claims(dict(zip(names, (system(better), system(better), system(worse)))), samples=400)
    same, table8 = result["numbers"]
    assert same["verdict"] == "not significant" and "power" not in same  # no difference at all: nothing to project
    assert table8["verdict"] == "not significant" and table8["sentences"] == 24
    power = table8["power"]
    low, high = table8["delta_ci95"]
    assert power["detectable_delta"] == round((high - low) / 2, 2) > table8["bleu"] - table8["bleu_compared"] > 0
    assert 24 < power["sentences_to_reach"] < power["sentences_for_80_percent"]
    assert sum(line.startswith("  why not significant: with 24 test sentences") for line in result["lines"]) == 1
    copies = math.ceil(1.5 * power["sentences_to_reach"] / 24)
    larger = check_claims(dict(zip(names, (system(better, copies), system(better, copies),
                                           system(worse, copies)))), samples=400)["numbers"][1]
    assert larger["verdict"] == "holds" and "power" not in larger


def test_claims_report_what_the_systems_heard():
    """The transcripts' error rate per source language, for the systems that write one (not the S2TT Baseline), in
    the claims' lines and in claims.json: a wrong transcript bounds what transcribing first can gain."""
    from llm_srt.demo import check_claims
    from llm_srt.evaluate.report import UtteranceResult

    said = ["der hund lief im park", "es regnet heute in der stadt", "die katze sitzt auf der matte",
            "wir fahren morgen nach hause"]

    def system(transcript):
        return [UtteranceResult(id=str(i), src="deu", tgt="eng", hyp_transcript=transcript(t),
                                hyp_translation="the dog ran", ref_transcript=t, ref_translation="the dog ran")
                for i, t in enumerate(said)]

    exact = system(lambda t: t)
    half = system(lambda t: " ".join(w if k % 2 else "x" for k, w in enumerate(t.split())))
    baseline = [UtteranceResult(id=r.id, src=r.src, tgt=r.tgt, hyp_translation=r.hyp_translation,
                                ref_transcript=r.ref_transcript, ref_translation=r.ref_translation) for r in exact]
    names = ("LLM-SRT (this run)", "Baseline (this run)", "LLM-SRT w/o SMT (this run)")
    result = check_claims(dict(zip(names, (half, baseline, exact))), samples=100)
    line = next(x for x in result["lines"] if x.startswith("what the systems heard"))
    assert "LLM-SRT (this run): deu WER " in line and "LLM-SRT w/o SMT (this run): deu WER 0.0" in line
    assert "Baseline" not in line
    errors = result["numbers"][0]["transcript_errors"]
    assert set(errors) == {names[0], names[2]} and errors[names[2]]["deu"] == {"metric": "wer", "score": 0.0}
    assert 40 < errors[names[0]]["deu"]["score"] < 60


def test_claims_json_is_json_when_a_score_is_not_a_number():
    """With no row holding a reference, each system's BLEU is NaN, and claims.json held a bare NaN (json.dumps
    writes one), which no JSON reader takes: it is null now, the other numbers as they were."""
    import math

    from llm_srt.demo import check_claims, claims_record
    from llm_srt.evaluate.report import UtteranceResult

    rows = [UtteranceResult(id=str(i), src="deu", tgt="eng", hyp_translation="the dog ran", ref_translation=None)
            for i in range(4)]
    names = ("LLM-SRT (this run)", "Baseline (this run)", "LLM-SRT w/o SMT (this run)")
    numbers = check_claims(dict.fromkeys(names, rows), samples=50)["numbers"]
    assert math.isnan(numbers[0]["bleu"])  # what made the file invalid

    def refuse(constant):
        raise ValueError(f"{constant} in claims.json")

    written = json.loads(json.dumps(claims_record(numbers, 3), indent=2), parse_constant=refuse)  # as the demo does
    assert [(c["bleu"], c["bleu_compared"], c["verdict"], c["seed"]) for c in written] == [
        (None, None, "not tested", 3)] * 2
    assert claims_record([{"p": float("inf"), "delta_ci95": [float("nan"), 1.5], "x": {"y": -float("inf")}}], 0) == [
        {"p": None, "delta_ci95": [None, 1.5], "x": {"y": None}, "seed": 0}]


def test_claims_report_what_each_runs_lora_left_of_the_llms_text_mt():
    """The measured bound of both claims: the plain LLM's text MT and each run's (its LoRA applied), as a share of
    the plain one, in the lines and, for the two systems of each claim, in claims.json; with too few test sentences
    for a test too (they used to stop the demo after its training)."""
    from llm_srt.demo import check_claims
    from llm_srt.evaluate.report import UtteranceResult

    rows = [UtteranceResult(id=str(i), src="deu", tgt="eng", hyp_translation="the dog ran", ref_translation=r)
            for i, r in enumerate(["the dog ran home", "it rains today", "a cat sat"])]
    names = ("LLM-SRT (this run)", "Baseline (this run)", "LLM-SRT w/o SMT (this run)")
    lora = {names[0]: {"deu-eng": 1.0, "eng-deu": 2.0}, names[1]: {"deu-eng": 6.0, "eng-deu": 4.0},
            names[2]: {"deu-eng": 9.0, "eng-deu": 11.0}}
    own = {names[0]: {"deu-eng": 10.0, "eng-deu": 6.0}, names[2]: {"deu-eng": 14.0, "eng-deu": 16.0}}
    result = check_claims(dict.fromkeys(names, rows), samples=50, text_mt={"deu-eng": 12.0, "eng-deu": 8.0},
                          lora_text_mt=lora, own_prompt_mt=own)
    mine = next(x for x in result["lines"] if "its own text-MT prompt" in x)
    assert "LLM-SRT (this run): deu->eng 10.0, eng->deu 6.0 (80% of the plain LLM's)" in mine
    assert "LLM-SRT w/o SMT (this run): deu->eng 14.0, eng->deu 16.0 (150% of the plain LLM's)" in mine
    line = next(x for x in result["lines"] if "its LoRA applied" in x)
    assert "LLM-SRT (this run): deu->eng 1.0, eng->deu 2.0 (15% of the plain LLM's)" in line
    assert "LLM-SRT w/o SMT (this run): deu->eng 9.0, eng->deu 11.0 (100% of the plain LLM's)" in line
    table3, table8 = result["numbers"]
    assert table3["text_mt_bleu"] == {"deu-eng": 12.0, "eng-deu": 8.0}
    assert table3["text_mt_bleu_with_lora"] == {names[0]: lora[names[0]], names[1]: lora[names[1]]}
    assert table8["text_mt_bleu_with_lora"] == {names[0]: lora[names[0]], names[2]: lora[names[2]]}
    assert table3["text_mt_bleu_own_prompt"] == {names[0]: own[names[0]]}  # the Baseline's was not measured here
    assert table8["text_mt_bleu_own_prompt"] == own
    # 3 test sentences: fewer than any test needs, so no verdict, but the BLEU, why, and the bounds all the same
    assert (table3["verdict"], table3["p"], table3["holds_here"]) == ("not tested", None, False)
    assert table3["bleu"] == table3["bleu_compared"] and "at least 6 test sentences" in table3["why"]
    assert any(x.startswith("curriculum beats") and "-> not tested here: a paired test needs at least 6" in x
               for x in result["lines"])
    alone = check_claims(dict.fromkeys(names, rows), samples=50, lora_text_mt=lora)  # no plain figure: no share
    assert "of the plain LLM's" not in next(x for x in alone["lines"] if "its LoRA applied" in x)
    assert not any("its LoRA applied" in x or "own text-MT prompt" in x
                   for x in check_claims(dict.fromkeys(names, rows), samples=50)["lines"])


def test_output_shapes_count_empty_translations_and_copies_of_the_transcript():
    from llm_srt.demo_claims import output_shapes
    from llm_srt.evaluate.report import UtteranceResult

    def row(transcript, translation, ref="Hello."):
        return UtteranceResult(id="x", src="deu", tgt="eng", hyp_transcript=transcript, hyp_translation=translation,
                               ref_translation=ref)

    rows = [row("Hallo Welt.", "hallo, welt"), row("Hallo.", ""), row("Hallo.", None), row("Hallo.", "Hello."),
            row("Hallo.", "Hallo.", ref=None)]  # the last has no reference: not scored
    assert output_shapes(rows) == {"rows": 4, "empty": 2, "copies": 1, "forced_tags": 0, "capped": 0}
    rows[0] = replace(rows[0], forced_tags=True, capped=True)
    assert output_shapes(rows)["forced_tags"] == 1 and output_shapes(rows)["capped"] == 1


def test_demo_runs_start_from_the_asr_stage_with_equal_budgets_inside_the_work_folder(tmp_path):
    """`llm-srt demo --work "runs/demo #1"`: the curriculum (smt -> srt), the Baseline and w/o SMT all start from the
    ASR stage, the single-stage runs get the curriculum's steps summed at its batch size, and every output_dir
    stays under the work folder (a `#` used to start a YAML comment when the path went through an override)."""
    import argparse
    from pathlib import Path

    import pytest

    from llm_srt import demo
    from llm_srt.errors import LLMSRTError

    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--work", "runs/demo #1", "--data", "data/mini #2"])
    asr = tmp_path / "asr stage"
    with pytest.raises(LLMSRTError, match="no config.json; the demo starts from the shipped ASR stage"):
        demo.demo_stages(Path(args.work), Path(args.data), asr=asr)
    asr.mkdir()
    (asr / "config.json").write_text("{}")
    stages = demo.demo_stages(Path(args.work), Path(args.data), asr=asr)
    work = Path("runs/demo #1")
    runs = {s.name: s.config for group in stages.values() for s in group}
    names = ("smt", "srt", "baseline_1", "baseline_2", "srt_no_smt_1", "srt_no_smt_2")
    assert list(runs) == list(names) and {name: cfg.output_dir for name, cfg in runs.items()} == {
        name: str(work / name) for name in names}
    # each single run goes once over each curriculum stage's examples: its second pass from its first
    assert {name: cfg.model.init_from for name, cfg in runs.items()} == {
        "smt": str(asr), "srt": str(work / "smt" / "final"), "baseline_1": str(asr),
        "baseline_2": str(work / "baseline_1" / "final"), "srt_no_smt_1": str(asr),
        "srt_no_smt_2": str(work / "srt_no_smt_1" / "final")}
    assert {(cfg.data.train, cfg.data.dev) for cfg in runs.values()} == {("data/mini #2/train.jsonl",
                                                                           "data/mini #2/dev.jsonl")}
    assert [runs[n].stage for n in names] == ["smt", "srt", "baseline", "baseline", "srt", "srt"]
    assert [runs[n].max_steps for n in names] == [runs["smt"].max_steps, runs["srt"].max_steps] * 3
    assert runs["smt"].max_steps > 0 and runs["srt"].max_steps > 0
    assert [stages["baseline"][-1].file.name, stages["no_smt"][-1].file.name] == ["baseline.yaml", "srt.yaml"]
    assert {cfg.data.batch_size for cfg in runs.values()} == {runs["smt"].data.batch_size}
    assert {cfg.model.adapter for cfg in runs.values()} == {"linear"}  # the shipped ASR stage's adapter
    # the LLM (and the ASR stage's LoRA) frozen in SMT, LoRA trained in every run's last stage; every run loads the
    # shipped ASR stage's LoRA, so each has its shape
    assert {n: tuple(runs[n].trainable) for n in runs} == {"smt": ("adapter",), **{
        n: ("adapter", "lora") for n in names[1:]}}
    from llm_srt.model.llm import LoraOptions

    shipped = LoraOptions.from_dict(json.loads((demo.SHIPPED / "asr" / "config.json").read_text())["lora"])
    assert {cfg.model.lora for cfg in runs.values()} == {shipped}
    assert {cfg.dtype for cfg in runs.values()} == {"auto"}
    # `llm-srt demo --dtype bfloat16`: every run's frozen weights in it; int8 cannot train and is refused first
    args = parser.parse_args(["--dtype", "bfloat16"])
    assert args.asr == str(demo.SHIPPED / "asr") and parser.parse_args(["--asr", "runs/x"]).asr == "runs/x"
    stages = demo.demo_stages(Path(args.work), Path(args.data), asr=asr, dtype=args.dtype)
    assert {s.config.dtype for group in stages.values() for s in group} == {"bfloat16"}
    # every run trains with the demo's seed (model init, dropout, data order): 0 unless `--seed` says otherwise
    assert {(cfg.seed, cfg.data.seed) for cfg in runs.values()} == {(0, 0)}
    args = parser.parse_args(["--seed", "7"])
    stages = demo.demo_stages(Path(args.work), Path(args.data), asr=asr, seed=args.seed)
    assert {(s.config.seed, s.config.data.seed) for group in stages.values() for s in group} == {(7, 7)}
    assert demo.claims_record([{"claim": "a", "p": 0.01}], 7) == [{"claim": "a", "p": 0.01, "seed": 7}]
    for bad in ("-1", str(2**32)):
        with pytest.raises(LLMSRTError, match=f"--seed {bad}: give a seed from 0 to {2**32 - 1}"):
            demo.main(parser.parse_args(["--seed", bad]))
    with pytest.raises(LLMSRTError, match=r"--dtype int8: the demo trains, .* use float32 or bfloat16"):
        demo.run_demo(tmp_path / "w", tmp_path / "no data", dtype="int8")


def test_scored_directions_are_the_llms_best_at_text_mt(tmp_path, monkeypatch):
    """`choose_directions` ranks the candidates by the text-MT BLEU of the cascade's LLM on dev sentences and
    keeps the best `n` (here a stand-in MT system that copies the source for deu->eng only)."""
    import numpy as np

    from llm_srt import demo
    from llm_srt.audio import write_wav
    from llm_srt.model import systems
    from llm_srt.model.protocol import Output

    class CopyMT:
        def __init__(self, folder, placement, name="mt"):
            pass

        def run_batch(self, items, options):
            return [Output(translation=it.transcript if (it.src, it.tgt) == ("deu", "eng") else "nichts da")
                    for it in items]

    monkeypatch.setattr(systems, "TextMTSystem", CopyMT)
    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(1600, dtype=np.float32))
    words = "the cat sat on a mat while dogs ran in the park".split()
    rows = [Row(id=f"{k}-{s}-{t}", audio=str(wav), duration=0.1, src_lang=s, transcript=" ".join(words[k:k + 6]),
                tgt_lang=t, translation=" ".join(words[k:k + 6]), split="dev", corpus="t", sentence_id=f"{k:02d}")
            for k in range(5) for s, t in (("deu", "eng"), ("eng", "deu"), ("fra", "eng"))]
    write_manifest(tmp_path / "dev.jsonl", rows)
    lines = []
    got = demo.choose_directions(tmp_path / "dev.jsonl", lines.append, candidates=(("deu", "eng"), ("eng", "deu"),
                                 ("fra", "eng")), n=1, sentences=4)
    assert got["chosen"] == [("deu", "eng")] and got["sentences"] == 4
    assert got["bleu"]["deu-eng"] == 100.0 and got["bleu"]["eng-deu"] < 10
    assert "scored: deu->eng" in lines[0]


def test_the_text_mt_probe_takes_the_first_sentences_of_each_candidate_direction(tmp_path, monkeypatch):
    """`choose_directions` promises the first `sentences` dev sentences of each candidate direction, as test_subset
    takes its test rows (fcd3f74); probe_rows took the first N ids over all the candidates together, so a direction
    lacking one of them (a catalogue without that msgid) was ranked on fewer, and one direction's extra ids took
    the others' places. Per direction now; the log says which had fewer."""
    import numpy as np

    from llm_srt import demo
    from llm_srt.audio import write_wav
    from llm_srt.model import systems
    from llm_srt.model.protocol import Output

    class CopyMT:
        def __init__(self, folder, placement, name="mt"):
            self.name = name

        def run_batch(self, items, options):
            return [Output(translation=it.transcript) for it in items]

    monkeypatch.setattr(systems, "TextMTSystem", CopyMT)
    wav = tmp_path / "a.wav"
    write_wav(wav, np.zeros(1600, dtype=np.float32))
    has = {"00": [("eng", "fra")], "01": [("deu", "eng")], "02": [("deu", "eng")]}  # the rest: all three
    rows = [Row(id=f"{sid}-{s}-{t}", audio=str(wav), duration=0.1, src_lang=s, transcript=f"the cat number {sid}",
                tgt_lang=t, translation=f"the cat number {sid}", split="dev", corpus="t", sentence_id=sid)
            for sid in [f"{i:02d}" for i in range(6)]
            for s, t in has.get(sid, [("deu", "eng"), ("eng", "deu"), ("eng", "fra")])]
    write_manifest(tmp_path / "dev.jsonl", rows)
    pairs = (("deu", "eng"), ("eng", "deu"))
    kept = {(r.src_lang, r.tgt_lang, r.sentence_id) for r in demo.probe_rows(tmp_path / "dev.jsonl", pairs, 3)}
    assert sorted(sid for s, _, sid in kept if s == "deu") == ["01", "02", "03"]
    assert sorted(sid for s, _, sid in kept if s == "eng") == ["03", "04", "05"]
    lines = []
    got = demo.choose_directions(tmp_path / "dev.jsonl", lines.append, candidates=pairs + (("spa", "eng"),), n=1,
                                 sentences=4)
    assert got["sentences"] == 4 and "on 4 dev sentences (fewer in eng->deu 3, spa->eng 0)" in lines[0]
    again = demo.probe_rows(tmp_path / "dev.jsonl", pairs, got["sentences"])  # run_demo's probe of the chosen ones
    assert len(again) == 7


def test_the_demo_trains_in_float32_on_a_gpu_that_emulates_bfloat16(monkeypatch):
    """The demo trains, so on a T4 auto takes training's float32 (inference's float16 would be refused by train)."""
    import torch

    from llm_srt import demo, device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla T4")
    assert demo.demo_placement("auto", print).dtype == torch.float32


def test_the_demo_runs_in_bfloat16_on_a_cpu_with_amx_unless_told(tmp_path, monkeypatch):
    """`auto`: bfloat16 where the CPU lists amx_bf16 (and says so), float32 on other CPUs; a dtype given stays."""
    import torch

    from llm_srt import demo, device

    flags = "processor\t: 0\nflags\t\t: fpu sse avx512f {}\nbugs\t\t: spectre\n"
    amx, plain = tmp_path / "amx", tmp_path / "plain"
    amx.write_text(flags.format("amx_bf16 amx_tile"))
    plain.write_text(flags.format("avx512_bf16 amx_bf16x"))  # a flag only named like it
    assert device.cpu_has_amx(amx) and not device.cpu_has_amx(plain) and not device.cpu_has_amx(tmp_path / "none")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for has, dtype, want in ((True, "auto", torch.bfloat16), (False, "auto", torch.float32),
                             (True, "float32", torch.float32), (False, "bfloat16", torch.bfloat16)):
        monkeypatch.setattr(device, "cpu_has_amx", lambda has=has: has)
        said = []
        placement = demo.demo_placement(dtype, said.append)
        assert placement.device.type == "cpu" and placement.dtype == want, (has, dtype)
        assert bool(said) == (has and dtype == "auto") and all("AMX" in line for line in said)
        # a speed-up measured once on another machine is said as such, not as this one's
        assert all("faster here" not in line and "on README's 2-core Xeon with AMX, 1.4x" in line for line in said)


def test_the_text_mt_probe_says_what_failed_and_refuses_a_direction_it_could_not_measure():
    """A direction whose every probe row failed (out of memory, say) was a BLEU of 0, ranked last and printed as a
    measurement; a failed row among good ones counted as empty without a word."""
    import pytest

    from llm_srt import demo
    from llm_srt.errors import LLMSRTError
    from llm_srt.model.protocol import Output

    class Flaky:
        name = "flaky"

        def __init__(self, fails):
            self.fails = fails

        def run_batch(self, items, options):
            if any(self.fails(it) for it in items):
                raise RuntimeError("CUDA out of memory")
            return [Output(translation=it.transcript) for it in items]

    rows = [Row(f"r{i}-{t}", "x.wav", 1.0, "eng", f"Will it rain on day {i}?", t, f"Will it rain on day {i}?",
                "dev", "mini", f"s{i}") for i in range(3) for t in ("deu", "fra")]
    with pytest.raises(LLMSRTError, match=r"flaky: text MT failed on every probe row of eng->fra \(first: "
                                          r"RuntimeError: CUDA out of memory; out of GPU memory as a batch of one: "
                                          r".*\); nothing was measured there"):
        demo.text_mt_bleu(Flaky(lambda it: it.tgt == "fra"), rows, log=lambda *_: None)
    logged = []
    assert demo.text_mt_bleu(Flaky(lambda it: False), rows, log=logged.append) == {"eng-deu": 100.0,
                                                                                    "eng-fra": 100.0}
    assert not logged
    scores = demo.text_mt_bleu(Flaky(lambda it: it.tgt == "fra" and "day 0" in it.transcript), rows,
                               log=logged.append)  # the halves retry until only that row fails
    assert len(logged) == 1 and logged[0].startswith("warning: flaky: text MT failed on 1 of 6 probe rows (first: "
                                                     "RuntimeError: CUDA out of memory; out of GPU memory as a batch")
    assert logged[0].endswith("); they count as empty translations") and scores["eng-fra"] < 100.0


def test_a_reused_stage_trained_for_other_steps_than_its_config_asks_is_refused(tmp_path, monkeypatch):
    """A finished stage is reused when it has at least max_steps: after smt.yaml's steps were lowered the demo kept
    the longer run, and the curriculum had more steps than the Baseline and w/o SMT, without a word."""
    import json
    from dataclasses import replace
    from pathlib import Path

    import pytest

    from llm_srt import demo
    from llm_srt.errors import LLMSRTError
    from llm_srt.train import curriculum

    asr = tmp_path / "asr"
    asr.mkdir()
    (asr / "config.json").write_text("{}")
    stages = demo.demo_stages(tmp_path / "work", tmp_path / "data", asr=asr)["curriculum"]
    monkeypatch.setattr(curriculum, "run_stages", lambda stages, log=print: [Path(s.config.output_dir) / "final"
                                                                            for s in stages])
    for stage in stages:
        (Path(stage.config.output_dir) / "final").mkdir(parents=True)
        (Path(stage.config.output_dir) / "final" / "train_config.json").write_text(
            json.dumps({"max_steps": stage.config.max_steps}))
        (Path(stage.config.output_dir) / "final" / "config.json").write_text("{}")
    assert demo.run_with_budget(stages) == [Path(s.config.output_dir) / "final" for s in stages]
    shorter = [replace(stages[0], config=replace(stages[0].config, max_steps=stages[0].config.max_steps - 5)),
               stages[1]]
    ran = []
    monkeypatch.setattr(curriculum, "run_stages", lambda stages, log=print: ran.append(stages))
    with pytest.raises(LLMSRTError, match=r"smt: trained for \d+ steps, and the demo's budget for it is \d+: the "
                                          r"runs' budgets would differ; remove .*smt, .*srt to train again"):
        demo.run_with_budget(shorter)
    assert ran == []  # refused before any stage trains (the SRT stage would train from the longer SMT)
    longer = [replace(stages[0], config=replace(stages[0].config, max_steps=stages[0].config.max_steps + 5))]
    demo.run_with_budget(longer)  # fewer steps than asked: the run goes on from its checkpoint
    assert ran == [longer]


def _stub_demo(tmp_path, monkeypatch, evaluate=None, choose_directions=None):
    """run_demo with every step stubbed but its own file handling: (work, data, what the stubbed evaluate saw)."""
    from types import SimpleNamespace

    from llm_srt import demo, embedded
    from llm_srt.evaluate import report, run

    data, work = tmp_path / "data", tmp_path / "work"
    data.mkdir()
    (data / "test.jsonl").write_text("")
    (work / "report").mkdir(parents=True)
    row = SimpleNamespace(sentence_id="s1", translation="x", tgt_lang="deu", src_lang="eng", audio="a.wav",
                          transcript="y")
    monkeypatch.setattr(embedded, "ensure_embedded", lambda: None)
    monkeypatch.setattr(demo, "demo_placement", lambda dtype, log: SimpleNamespace(dtype_name="float32",
                                                                                   device="cpu", dtype=None))
    monkeypatch.setattr(demo, "older_demo_corpus", lambda data: False)
    monkeypatch.setattr(demo, "demo_corpus", lambda data: True)
    monkeypatch.setattr(demo, "demo_stages", lambda *a, **k: {"curriculum": [], "baseline": [], "no_smt": []})
    monkeypatch.setattr(demo, "run_with_budget", lambda stages, log: [tmp_path / "final"])
    monkeypatch.setattr(demo, "choose_directions", choose_directions or (
        lambda *a, **k: {"chosen": [("eng", "deu")], "sentences": 1, "bleu": {"eng-deu": 1.0}}))
    monkeypatch.setattr(demo, "shipped_training_sentences", lambda folder: set())
    monkeypatch.setattr(demo, "read_manifest", lambda path: [row])
    monkeypatch.setattr(demo, "test_subset", lambda *a, **k: tmp_path / "subset.jsonl")
    seen = {}

    def evaluated(*args, **kwargs):
        seen["earlier files at evaluation"] = sorted(p.name for p in (work / "report").iterdir())
        return evaluate() if evaluate else {}
    monkeypatch.setattr(run, "evaluate", evaluated)
    monkeypatch.setattr(report, "load_results", lambda path: [])
    monkeypatch.setattr(demo, "probe_rows", lambda *a: [])
    monkeypatch.setattr(demo, "measure_runs", lambda *a: {"losses": {}, "loss_tasks": {}, "text_mt": {},
                                                          "text_mt_own_prompt": {}})
    monkeypatch.setattr(demo, "check_claims", lambda *a, **k: {"lines": ["a claim"], "numbers": [{"claim": "c"}]})
    return work, data, seen


def test_a_demo_failing_after_its_claims_keeps_them_and_no_earlier_runs(tmp_path, monkeypatch):
    """claims.json and timings.json were written after the last step (one held-out clip): a demo failing there had
    printed its claims but kept none, and an earlier run's claims.json stayed beside this run's hypotheses. Now the
    claims are written as soon as they are checked, and an earlier run's files are removed before the evaluation."""
    from types import SimpleNamespace

    from llm_srt import demo, infer

    work, data, seen = _stub_demo(tmp_path, monkeypatch)
    (work / "report" / "claims.json").write_text('"an earlier run"\n')
    (work / "report" / "timings.json").write_text('"an earlier run"\n')

    def broken(*args, **kwargs):
        raise demo.LLMSRTError("a broken shipped model")
    monkeypatch.setattr(infer.SpeechTranslator, "from_pretrained", broken)
    with pytest.raises(demo.LLMSRTError, match="a broken shipped model"):
        demo.run_demo(work, data, log=lambda line: None)
    assert seen["earlier files at evaluation"] == ["directions.json"]
    assert json.loads((work / "report" / "claims.json").read_text()) == [{"claim": "c", "seed": 0}]
    assert not (work / "report" / "timings.json").exists()
    failing = SimpleNamespace(translate=lambda *a, **k: [SimpleNamespace(error="RuntimeError: boom", transcript="",
                                                                          translation="")])
    monkeypatch.setattr(infer.SpeechTranslator, "from_pretrained", lambda *a, **k: failing)
    with pytest.raises(demo.LLMSRTError, match=r"^one held-out clip: a.wav failed: RuntimeError: boom$"):
        demo.run_demo(work, data, log=lambda line: None)  # not an empty transcript and translation, and done


def test_a_demo_stopped_in_its_evaluation_leaves_no_part_of_an_earlier_runs_report(tmp_path, monkeypatch):
    """A rerun stopped in the evaluation removed the earlier run's claims.json and timings.json only: its
    results.json, report.md, plots and hypotheses stayed beside this run's directions.json, one report/ of two runs.
    The earlier report goes whole before the evaluation; a file of the user's there is not the demo's to remove."""
    from llm_srt import demo

    def interrupted():
        raise KeyboardInterrupt
    work, data, seen = _stub_demo(tmp_path, monkeypatch, evaluate=interrupted)
    earlier = ["claims.json", "timings.json", "results.json", "report.md", "bleu_matrix.png", "mt_vs_s2tt.png",
               "hyps.LLM-SRT (this run).jsonl", "hyps.Baseline (this run).jsonl",
               "hyps.LLM-SRT w_o SMT (this run).jsonl", "hyps.Cascade.jsonl", "directions.json"]
    for name in (*earlier, "notes.txt"):
        (work / "report" / name).write_text("of an earlier run\n")
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(work, data, log=lambda line: None)
    assert seen["earlier files at evaluation"] == ["directions.json", "notes.txt"]
    assert sorted(p.name for p in (work / "report").iterdir()) == ["directions.json", "notes.txt"]
    assert json.loads((work / "report" / "directions.json").read_text())["chosen"] == [["eng", "deu"]]  # this run's


def test_a_demo_file_that_cannot_be_written_whole_leaves_the_earlier_one(tmp_path, monkeypatch):
    """directions.json, claims.json and timings.json were written in place: a disk that filled (here a file-size
    limit) or a kill part way through left an earlier run's good file cut short, not JSON."""
    import resource
    import signal

    from llm_srt import demo

    limit = resource.getrlimit(resource.RLIMIT_FSIZE)

    def full_disk(*args, **kwargs):  # the disk fills as the text MT ends: every file from here on is cut at 1 KiB
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, limit[1]))
        return {"chosen": [("eng", "deu")], "sentences": 1, "bleu": {f"eng-x{k:03d}": 1.0 for k in range(200)}}
    work, data, _ = _stub_demo(tmp_path, monkeypatch, choose_directions=full_disk)
    earlier = json.dumps({"chosen": [["deu", "eng"]], "bleu": {f"deu-x{k:03d}": 2.0 for k in range(200)}}, indent=2)
    (work / "report" / "directions.json").write_text(earlier)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), as on a full disk
    try:
        with pytest.raises(OSError):
            demo.run_demo(work, data, log=lambda line: None)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert (work / "report" / "directions.json").read_text() == earlier
    assert [p.name for p in (work / "report").iterdir()] == ["directions.json"]  # no temporary file left
