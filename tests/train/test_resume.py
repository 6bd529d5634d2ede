"""What a run resumed, or a finished run asked for again, says about the settings and steps that differ."""

import json
import re
import shutil

import pytest

from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.train import preflight, recipe, resume
from llm_srt.train.final import FINAL, finished_steps, init_record

from .conftest import SHORT_STEPS as STEPS
from .conftest import saved_every_step as _config

QFORMER = "{num_queries: %d, hidden_size: 32, num_layers: 1, num_heads: 4, intermediate_size: 64}"


def test_a_changed_mapping_names_the_keys_that_changed():
    """The whole mapping was printed, shortened: its keys sorted and cut to 4, the changed one among those left out
    (`model.adapter_kwargs {'hidden_size': 32, ..., 'num_layers': 1, ...} -> {...}`)."""
    kwargs = {"num_queries": 80, "hidden_size": 768, "num_layers": 8, "num_heads": 12, "intermediate_size": 3072}
    assert resume.changes({"model.adapter_kwargs": kwargs}, {"model.adapter_kwargs": {**kwargs, "num_queries": 64}}
                          ) == ["model.adapter_kwargs.num_queries 80 -> 64"]
    tasks = {"srt": 0.5, "smt": 0.1, "s2tt": 0.1, "mt": 0.1, "asr": 0.2}
    assert resume.changes({"data.tasks": tasks}, {"data.tasks": {**tasks, "asr": 0.3, "mt": None}}) == [
        "data.tasks.asr 0.2 -> 0.3", "data.tasks.mt 0.1 -> None"]
    nested = {"a": {"b": {"c": 1, "d": [1, 2]}}}
    assert resume.changes({"x": nested}, {"x": {"a": {"b": {"c": 1, "d": [1, 3]}, "e": 2}}}) == [
        "x.a.b.d [1, 2] -> [1, 3]", "x.a.e (unset) -> 2"]
    assert resume.changes({"optim.lr": 1e-3}, {}) == ["optim.lr 0.001 -> (unset)"]
    assert resume.changes({"x": {"a": 1}}, {"x": [1]}) == ["x {'a': 1} -> [1]"]  # not two mappings: whole


def test_a_change_of_the_trained_weights_shapes_is_refused_even_with_allow_changes(base, tiny_setup, tmp_path):
    """allow_changes took another adapter option, LoRA rank or layers, trainable group or a CTC head coming, then
    the resume stopped in peft's or torch's many-line error loading the checkpoint (or its Adam state): refused
    before any model loads, naming the change, allow_changes or not, with the way on that works (init_from the
    checkpoint where its weights keep their shapes); lora.alpha and lora.dropout, the adapter's dropout and heads,
    an option spelled out at its default and a list's order may change."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    shutil.rmtree(out / FINAL)
    carry = r"start another output_dir with model.init_from=.*step-0*2 to train on from its weights"
    cannot = r"start another output_dir from the previous stage's folder \(the trained weights cannot carry over"
    for change, said, way in (
            ({"model.adapter_kwargs": QFORMER % 8}, r"model.adapter_kwargs.num_queries 4 -> 8", cannot),
            ({"ctc.weight": 0.3}, r"ctc.weight / ctc.only \(the CTC head's parameters come\)", carry),
            ({"model.lora": "{r: 4}", "trainable": "[adapter, lora]"},
             r"model.lora added \(r 4\); trainable \['adapter'\] -> \['adapter', 'lora'\]", carry)):
        for allow in ("false", "true"):
            with pytest.raises(ConfigError, match=r"run/checkpoints/step-0*2: resuming with settings that change the "
                                                  r"shapes of the trained weights: " + said + r"; no resume can take "
                                                  r"these \(allow_changes=true neither\). Set them back, or " + way):
                recipe.train(_config(tiny_setup, out, allow_changes=allow, **change), log=lambda *_: None)
    assert resume.shape_changes({"model.lora.r": 4, "model.lora.alpha": 8, "model.lora.dropout": 0.0},
                                {"model.lora.r": 4, "model.lora.alpha": 16, "model.lora.dropout": 0.1}) == []
    assert resume.shape_changes({"ctc.weight": 0.3}, {"ctc.weight": 0.5}) == []  # the head stays
    assert resume.shape_changes({"trainable": ["adapter"]}, {"trainable": ["adapter", "lora"]}) == [
        "trainable ['adapter'] -> ['adapter', 'lora']"]
    qformer = {"model.adapter": "qformer", "model.adapter_kwargs": {"num_queries": 80, "dropout": 0.1},
               "trainable": ["adapter", "lora"], "model.lora.target_modules": ["q_proj", "v_proj"]}
    for same in ({"model.adapter_kwargs": {"num_queries": 80, "dropout": 0.0, "num_heads": 4}},  # no shape
                 {"model.adapter_kwargs": {"dropout": 0.1}},  # num_queries 80: the default, spelled out before
                 {"trainable": ["lora", "adapter"], "model.lora.target_modules": ["v_proj", "q_proj"]}):
        assert resume.shape_changes(qformer, {**qformer, **same}) == [], same
    other = {**qformer, "model.adapter_kwargs": {"num_queries": 64}}
    assert resume.shape_changes(qformer, other) == ["model.adapter_kwargs.num_queries 80 -> 64"]
    assert resume.shape_changes(qformer, {**other, resume.INIT_KEY: "abc"}) == []  # init_from's adapter is built
    assert resume.shape_changes({"model.lora.r": 8}, {"model.lora": None}) == ["model.lora removed"]
    assert not resume.carries_over(["model.lora removed"]) and resume.carries_over(["model.lora added (r 4)"])


def test_a_resume_whose_init_from_folder_is_gone_says_so(tmp_path):
    """A run that started from model.init_from, resumed where that folder is not (moved to another machine without
    the previous stage), was told the folder "holds other weights than the checkpoint's run started from"."""
    start = tmp_path / "start"
    start.mkdir()
    (start / "adapter.safetensors").write_bytes(b"weights")
    saved = {resume.INIT_KEY: resume.init_identity(start)}
    gone = tmp_path / "gone"
    assert resume.changes(saved, {resume.INIT_KEY: resume.init_identity(gone)}, gone) == [
        "model.init_from (no weights there: the folder the checkpoint's run started from is gone or moved, and a "
        "resume loads it again under the checkpoint's weights; copy it back or fix the path)"]
    assert resume.changes(saved, {resume.INIT_KEY: None}, None) == [
        "model.init_from (the checkpoint's run started from a model folder, this config names none; a resume loads "
        "it again under the checkpoint's weights: give it)"]
    (tmp_path / "empty").mkdir()
    assert resume.changes(saved, {resume.INIT_KEY: None}, tmp_path / "empty")[0].startswith(
        "model.init_from (no *.safetensors in ")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "adapter.safetensors").write_bytes(b"other weights")
    assert resume.changes(saved, {resume.INIT_KEY: resume.init_identity(tmp_path / "other")}) == [
        "model.init_from (it holds other weights than the checkpoint's run started from)"]


def test_a_resume_whose_init_from_folder_is_gone_is_told_a_way_on_that_resumes(base, tiny_setup, tmp_path):
    """The error said "add allow_changes=true to go on", which then stopped at "model.init_from: ... is not a model
    folder": the checkpoint holds every trained weight, so model.init_from=null allow_changes=true resumes it, and
    final/ records the start the checkpoint's run had."""
    start, out = tmp_path / "start", tmp_path / "run"
    shutil.copytree(base / FINAL, start)
    init = {"model.init_from": str(start)}
    recipe.train(_config(tiny_setup, out, **init), log=lambda *_: None)
    shutil.rmtree(out / FINAL)
    shutil.rmtree(start)  # moved to another machine without the previous stage
    way = "model.init_from=null allow_changes=true"
    with pytest.raises(ConfigError, match=r"run/checkpoints/step-0*2: resuming with settings that differ .* Set them "
                                          r"back, or add " + re.escape(way) + r" to go on with the new ones"):
        recipe.train(_config(tiny_setup, out, STEPS + 1, **init), log=lambda *_: None)
    with pytest.raises(LLMSRTError, match=r"start is not a model folder \(no config.json\); .*, or resume from "
                                          r".*run/checkpoints/step-0*2 alone with " + re.escape(way)):
        recipe.train(_config(tiny_setup, out, STEPS + 1, allow_changes="true", **init), log=lambda *_: None)
    said = []
    recipe.train(_config(tiny_setup, out, STEPS + 1, allow_changes="true", **{"model.init_from": "null"}),
                 log=said.append)
    assert any(re.search(rf"resumed from \S+step-0*{STEPS} at step {STEPS}$", m) for m in said), said
    assert finished_steps(out) == STEPS + 1
    # final/ records the start its weights grew from (it said "from scratch": a curriculum re-run refused it)
    assert init_record(out) == (str(start), resume.init_identity(base / FINAL))


def test_a_finished_run_trained_for_more_steps_than_max_steps_is_not_handed_back_as_finished(base, tiny_setup,
                                                                                            tmp_path):
    """After a 2-step run, max_steps=1 said "already finished" and handed back the 2-step model, while the same run
    interrupted after step 2 was refused ("past max_steps"): refused too, unless allow_changes takes it as it is."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    said = []
    with pytest.raises(ConfigError, match=r"run/final was trained for 2 steps, more than max_steps 1: final/ is the "
                                          r"2-step model; set max_steps=2 to use it, add allow_changes=true to take it "
                                          r"as it is, or choose another output_dir for a 1-step run"):
        recipe.train(_config(tiny_setup, out, 1), log=said.append)
    assert not any("already finished" in m for m in said)
    final = recipe.train(_config(tiny_setup, out, 1, allow_changes="true"), log=said.append)
    assert final == out / FINAL and finished_steps(out) == STEPS
    assert said == [f"[asr] {final} was trained for 2 steps, more than max_steps 1: final/ is the 2-step model "
                    "(allow_changes)", f"[asr] already finished: {final}"]
    shutil.rmtree(out / FINAL)  # the same run interrupted after its last step: refused as before
    with pytest.raises(LLMSRTError, match=r"the newest checkpoint is at step 2, past max_steps 1"):
        recipe.train(_config(tiny_setup, out, 1), log=lambda *_: None)


def test_a_resumed_runs_first_save_keeps_the_checkpoints_it_passed_over(base, tiny_setup, tmp_path):
    """The recipe hands its first save the step it resumed from: step 2 damaged, the run resumes from step 1, and
    its own step 2 leaves the damaged one as abandoned-step-2, said in the log (it was overwritten without a word)."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    shutil.rmtree(out / FINAL)
    ckpts = out / "checkpoints"
    [weights] = [p for p in (ckpts / "step-00000002").glob("*.safetensors") if p.name.startswith("adapter")]
    weights.write_bytes(weights.read_bytes()[:-8])  # damaged
    said = []
    recipe.train(_config(tiny_setup, out), log=said.append)
    assert (ckpts / "abandoned-step-00000002").is_dir() and (ckpts / "step-00000002").is_dir()
    assert any("step-00000002: passed over by this resumed run" in m for m in said), said


def test_the_feature_cache_note_is_left_out_for_a_text_mt_stage():
    """A text MT stage reads no features, cached or not: its resume said "not bit-identical from here" for nothing."""
    from types import SimpleNamespace

    from llm_srt.train.data import DataSection
    from llm_srt.train.resume import cache_note

    saved = {"data": {"feature_cache": "auto"}}
    for tasks, said in (({"mt": 1.0}, False), ({"srt": 1.0, "mt": 0.2}, True)):
        cfg = SimpleNamespace(data=DataSection(tasks=tasks, feature_cache=None))
        assert (cache_note(saved, cfg) is not None) is said, tasks


def test_a_reordered_task_mix_is_a_change_and_a_record_of_the_same_order_is_not(tiny_setup, tmp_path):
    """{srt: 0.5, asr: 0.5} -> {asr: 0.5, srt: 0.5} compared equal (a dict's == ignores its order), but a mix lays
    out its tasks' slots and seeds their draws in its order, and the first of a tie is the main task (the dev
    set's): the resume went on in another data order without a word. The order is compared; the record checkpoints
    and final/ already hold (data.tasks as a JSON object, in its order) is no change where the order is the same."""
    tied, swapped = {"data.tasks": "{srt: 0.5, asr: 0.5}"}, {"data.tasks": "{asr: 0.5, srt: 0.5}"}
    out = tmp_path / "run"
    recipe.train(_config(tiny_setup, out, **tied), log=lambda *_: None)
    order = (r"data.tasks order \['srt', 'asr'\] -> \['asr', 'srt'\] \(the data order and, on a tie, the main task "
             r"follow it\)")
    with pytest.raises(ConfigError, match=r"run/final: this output_dir holds a model finished with other settings: "
                                          + order + r"\. "):
        recipe.train(_config(tiny_setup, out, **swapped), log=lambda *_: None)
    recipe.train(_config(tiny_setup, out, STEPS + 1, **tied), log=lambda *_: None)  # the same order: it resumes
    assert finished_steps(out) == STEPS + 1
    with pytest.raises(ConfigError, match=r"step-0*3: resuming with settings that differ from the checkpoint's: "
                                          + order + r"\. Set them back, or add allow_changes=true"):
        recipe.train(_config(tiny_setup, out, STEPS + 2, **swapped), log=lambda *_: None)
    said = []
    recipe.train(_config(tiny_setup, out, STEPS + 2, allow_changes="true", **swapped), log=said.append)
    assert finished_steps(out) == STEPS + 2
    assert any(re.search(r"resuming with changed settings \(allow_changes\): " + order, m) for m in said), said
    stored = json.loads(json.dumps({"data.tasks": {"srt": 0.7, "asr": 0.3}}))  # as a checkpoint gives it back
    assert resume.changes(stored, {"data.tasks": {"srt": 0.7, "asr": 0.3}}) == []
    assert resume.changes(stored, {"data.tasks": {"asr": 0.2, "srt": 0.8}}) == [
        "data.tasks order ['srt', 'asr'] -> ['asr', 'srt'] (the data order and, on a tie, the main task follow it)",
        "data.tasks.asr 0.3 -> 0.2", "data.tasks.srt 0.7 -> 0.8"]
    assert resume.changes({"model.adapter_kwargs": {"a": 1, "b": 2}}, {"model.adapter_kwargs": {"b": 2, "a": 1}}) == []


def test_another_data_seed_is_refused_before_the_model_loads_allow_changes_or_not(base, tiny_setup, tmp_path,
                                                                                   monkeypatch):
    """data.seed 0 -> 1 with allow_changes said "resuming with changed settings", then stopped in the data loader
    ("resuming a sampler seeded 0 with seed 1") after the model had loaded. The seed picks which rows a mix's smaller
    tasks and a weighted manifest's repeats are in each epoch's examples, so the saved position's examples are not
    the new seed's: refused in pre-flight, allow_changes or not, with the way on. A finished run asked for again is
    the recipe's to refuse, or with allow_changes to take as it is."""
    out = tmp_path / "run"
    shutil.copytree(base, out)
    monkeypatch.setattr(recipe.Recipe, "setup_model", lambda self: pytest.fail("the model loaded"))
    with pytest.raises(ConfigError, match=r"holds a model finished with other settings: data.seed 0 -> 1\. "):
        recipe.train(_config(tiny_setup, out, **{"data.seed": 1}), log=lambda *_: None)
    said = []
    assert recipe.train(_config(tiny_setup, out, **{"data.seed": 1, "allow_changes": "true"}),
                        log=said.append) == out / FINAL
    assert said[-1] == f"[asr] already finished: {out / FINAL}"
    refused = (rf"^{re.escape(str(out))}/checkpoints/step-0*2: data.seed 1 here, but this output_dir's run was seeded "
               r"0 \(its data order, its task mix's draws and its dev rows\): no resume can take another seed "
               r"\(allow_changes=true neither\); set data.seed=0 to resume, or start another output_dir with "
               rf"model.init_from={re.escape(str(out))}/checkpoints/step-0*2 to train on from its weights with seed 1$")
    for steps, allow in ((STEPS + 1, "true"), (STEPS, "false"), (STEPS, "true")):  # raised max_steps: it resumes
        cfg = _config(tiny_setup, out, steps, **{"data.seed": 1, "allow_changes": allow})
        with pytest.raises(ConfigError, match=refused):
            recipe.train(cfg, log=lambda *_: None)
        with pytest.raises(ConfigError, match=refused):
            preflight.check_before_start(cfg)
        shutil.rmtree(out / FINAL, ignore_errors=True)  # then interrupted after its last step
    preflight.check_before_start(_config(tiny_setup, out))  # the same seed


def test_a_resume_with_allow_changes_over_an_edited_manifest_says_the_position_is_another_orders(base, tiny_setup,
                                                                                                  tmp_path):
    """allow_changes with a row removed from the manifest resumed at the saved (epoch, batch) in the permutation of
    other rows: for the rest of that epoch some trained twice, others never, without a word (the count and digest of
    the ids a position counts were compared under data.skip_bad alone). Said in the log, as data.skip_bad's is."""
    from llm_srt.data.manifest import read_manifest, write_manifest

    out = tmp_path / "run"
    shutil.copytree(base, out)
    shutil.rmtree(out / FINAL)
    edited = tmp_path / "edited.jsonl"
    write_manifest(edited, [r for r in read_manifest(tiny_setup["manifest"]) if r.id != "eng-s1-deu"])  # one srt reads
    said = []
    recipe.train(_config(tiny_setup, out, STEPS + 1, **{"data.train": str(edited), "allow_changes": "true"}),
                 log=said.append)
    assert any(m.startswith("[asr] resuming with changed settings (allow_changes): data.train") for m in said), said
    assert any(re.fullmatch(r"warning: data.train .*edited.jsonl'?: the checkpoint's data position counts 8 "
                            r"examples, this run reads 7, and the rest of the epoch would train some twice and never "
                            r"reach others \(allow_changes\)", m) for m in said), said
