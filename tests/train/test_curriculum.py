"""The curriculum's plan: which configs run, where each stage writes and which model each starts from."""

from pathlib import Path

import pytest

from llm_srt import cli
from llm_srt.errors import ConfigError
from llm_srt.train import curriculum, resume


def _stage_folder(tmp_path: Path) -> Path:
    """asr, smt, srt YAMLs as the shipped ones chain them: each starts from the last one's output_dir/final."""
    folder = tmp_path / "cfgs"
    folder.mkdir()
    for stage, before in (("asr", None), ("smt", "asr"), ("srt", "smt")):
        init = f"{tmp_path / 'runs' / before / 'final'}" if before else "null"
        (folder / f"{stage}.yaml").write_text(f"stage: {stage}\ndata:\n  train: x.jsonl\nmodel:\n  init_from: {init}\n"
                                              f"output_dir: {tmp_path / 'runs' / stage}\n")
    return folder


def _finished(folder: Path) -> Path:
    (folder / "final").mkdir(parents=True)
    (folder / "final" / "config.json").write_text("{}")
    return folder / "final"


def test_no_stage_config_is_an_error_not_an_empty_curriculum(capsys):
    """`llm-srt curriculum $CFG_DIR max_steps=3` with CFG_DIR unset printed `curriculum done: ` and exited 0."""
    with pytest.raises(ConfigError, match=r"no stage configs given: name a folder holding asr.yaml, smt.yaml and "
                                          r"srt.yaml .*or the stage YAMLs in order"):
        curriculum.plan([], ["max_steps=3"])
    assert cli.main(["curriculum", "max_steps=3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("llm-srt curriculum: error: no stage configs given") and err.count("\n") == 1
    assert cli.main(["curriculum", "", "max_steps=3"]) == 2  # "$CFG_DIR" quoted: the current folder, before
    assert "an empty argument (an unset shell variable in quotes?)" in capsys.readouterr().err


def test_out_root_moves_the_first_stages_start_to_the_stage_before_it_under_out_root(tmp_path):
    """`--stages asr --out-root R`, then `--stages smt,srt --out-root R` trained SMT from the configs' ASR model
    (runs/asr/final), not R's: a first stage configured to start from another stage's output starts from that
    stage's folder under OUT_ROOT, which must hold a finished model."""
    folder, root = _stage_folder(tmp_path), tmp_path / "R"
    with pytest.raises(ConfigError, match=r"stage smt .*: model.init_from .*runs/asr/final is the asr stage's output; "
                                          r"under --out-root .*R that stage writes .*R/asr, which holds no finished "
                                          r"model: run --stages asr with this --out-root first, or choose the start "
                                          r"explicitly: smt:model.init_from=.*runs/asr/final$"):
        curriculum.plan([str(folder)], stages=["smt", "srt"], out_root=root)
    _finished(root / "asr")
    stages = curriculum.plan([str(folder)], stages=["smt", "srt"], out_root=root)
    assert [s.config.model.init_from for s in stages] == [str(root / "asr" / "final"), str(root / "smt" / "final")]
    assert [s.config.output_dir for s in stages] == [str(root / "smt"), str(root / "srt")]
    asr = (folder / "asr.yaml").read_text()
    (folder / "asr_more.yaml").write_text(asr)  # a second ASR config writing the same folder: which one is meant?
    assert curriculum.plan([str(folder)], stages=["smt"], out_root=root)[0].config.model.init_from == str(
        root / "asr" / "final")  # the one finished under OUT_ROOT
    _finished(root / "asr_more")
    with pytest.raises(ConfigError, match=r"stage smt .*: model.init_from .*runs/asr/final is the output of stages "
                                          r"asr, asr_more, and under --out-root .*R asr, asr_more are finished; choose "
                                          r"the start explicitly: smt:model.init_from=.*R/asr/final$"):
        curriculum.plan([str(folder)], stages=["smt"], out_root=root)
    # without --out-root the configs' folders, as before
    assert curriculum.plan([str(folder)], stages=["smt"])[0].config.model.init_from == str(tmp_path / "runs" / "asr"
                                                                                            / "final")


@pytest.mark.parametrize("given", ["smt:model.init_from={}", "model.init_from={}", "smt:model={{init_from: {}}}"])
def test_a_start_the_user_sets_is_kept_under_out_root(tmp_path, given):
    """An init_from the user's overrides set (for that stage or all, as a key or inside a mapping) is not moved."""
    folder, root = _stage_folder(tmp_path), tmp_path / "R"
    mine = _finished(tmp_path / "elsewhere")
    stages = curriculum.plan([str(folder)], [given.format(mine)], stages=["smt", "srt"], out_root=root)
    assert [s.config.model.init_from for s in stages] == [str(mine), str(root / "smt" / "final")]


def test_a_start_that_is_no_stages_output_is_kept_under_out_root(tmp_path):
    """The demo's smt.yaml starts from the shipped ASR model: not another stage's output, so not moved."""
    folder, root = _stage_folder(tmp_path), tmp_path / "R"
    shipped = tmp_path / "checkpoints" / "asr"
    smt = folder / "smt.yaml"
    smt.write_text(smt.read_text().replace(str(tmp_path / "runs" / "asr" / "final"), str(shipped)))
    assert curriculum.plan([str(smt)], out_root=root)[0].config.model.init_from == str(shipped)
    assert curriculum.plan([str(folder)], stages=["smt"], out_root=root)[0].config.model.init_from == str(shipped)


def test_a_mapping_override_of_a_later_stages_start_is_the_users(tmp_path):
    """Only the exact key `srt:model.init_from` counted as the user's: `srt:model={init_from: X}` was replaced by
    the previous stage's final/."""
    folder = _stage_folder(tmp_path)
    mine = str(tmp_path / "mine")
    for given in (f"srt:model={{init_from: {mine}}}", f"srt:model.init_from={mine}"):
        stages = curriculum.plan([str(folder)], [given])
        assert [s.config.model.init_from for s in stages] == [None, str(tmp_path / "runs" / "asr" / "final"), mine]


def test_a_start_given_for_every_stage_is_the_first_stages_and_the_later_ones_chain(tmp_path):
    """`model.init_from=X` without a stage prefix starts the curriculum from X (a shipped ASR model, say); each later
    stage still starts from the stage before it, not from X."""
    folder = _stage_folder(tmp_path)
    mine = str(tmp_path / "mine")
    stages = curriculum.plan([str(folder)], [f"model.init_from={mine}"])
    runs = tmp_path / "runs"
    assert [s.config.model.init_from for s in stages] == [mine, str(runs / "asr" / "final"),
                                                          str(runs / "smt" / "final")]


def test_output_dir_for_every_stage_and_out_root_together_are_refused(tmp_path):
    """`output_dir=X --out-root R`: X was silently replaced by R/<stage>; one stage's output_dir still wins."""
    folder, root = _stage_folder(tmp_path), tmp_path / "R"
    with pytest.raises(ConfigError, match=r"output_dir=runs/x and --out-root .*R both say where the stages write; "
                                          r"give --out-root alone .*or STAGE:output_dir=\.\.\. for one stage"):
        curriculum.plan([str(folder)], ["output_dir=runs/x"], stages=["asr"], out_root=root)
    stages = curriculum.plan([str(folder)], ["asr:output_dir=runs/x"], stages=["asr", "smt"], out_root=root)
    assert [s.config.output_dir for s in stages] == ["runs/x", str(root / "smt")]


def test_the_log_names_the_first_stages_start_too(tmp_path, monkeypatch):
    """`== stage 1/2: smt (...) -> R/smt` did not say which model SMT started from; the later stages' lines did."""
    folder, root = _stage_folder(tmp_path), tmp_path / "R"
    _finished(root / "asr")
    monkeypatch.setattr(curriculum, "check_before_start", lambda cfg, **_: None)
    monkeypatch.setattr(curriculum, "train", lambda cfg, log: Path(cfg.output_dir) / "final")
    said = []
    curriculum.run_stages(curriculum.plan([str(folder)], stages=["smt", "srt"], out_root=root), log=said.append)
    assert said == [f"== stage 1/2: smt ({folder / 'smt.yaml'}) -> {root / 'smt'}, from {root / 'asr' / 'final'}",
                    f"== stage 2/2: srt ({folder / 'srt.yaml'}) -> {root / 'srt'}, from {root / 'smt' / 'final'}"]


def test_a_stage_output_written_with_a_variable_or_as_yml_is_found_under_out_root(tmp_path, monkeypatch):
    """The stages' output_dir read as load_config reads it: `${RUNS}/asr` (the paper configs use variables) and
    `~/`, in .yaml or .yml files beside the stage. Left as written, `${RUNS}/asr` never matched the start, and SMT
    trained from the configs' ASR model under --out-root again."""
    folder, root = _stage_folder(tmp_path), tmp_path / "R"
    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HOME", str(tmp_path))
    asr = folder / "asr.yaml"
    asr.write_text(asr.read_text().replace(f"output_dir: {tmp_path / 'runs' / 'asr'}", "output_dir: ${RUNS}/asr"))
    (folder / "smt.yaml").write_text((folder / "smt.yaml").read_text().replace(
        str(tmp_path / "runs" / "asr" / "final"), "${RUNS}/asr/final"))
    with pytest.raises(ConfigError, match=r"is the asr stage's output; under --out-root"):
        curriculum.plan([str(folder)], stages=["smt", "srt"], out_root=root)
    asr.rename(folder / "asr.yml")
    (folder / "asr.yml").write_text(asr.with_suffix(".yml").read_text().replace("${RUNS}", "~/runs"))
    _finished(root / "asr")
    assert curriculum.plan([str(folder)], stages=["smt"], out_root=root)[0].config.model.init_from == str(
        root / "asr" / "final")


def test_a_start_the_caller_adjusts_is_kept_under_out_root(tmp_path):
    """A start the caller's `adjust` chose (the demo's kind of typed change) is the caller's, not moved."""
    from dataclasses import replace

    folder, root = _stage_folder(tmp_path), tmp_path / "R"
    _finished(root / "asr")
    chosen = str(tmp_path / "runs" / "asr" / "final")  # another stage's output, on purpose

    def adjust(cfg):
        return replace(cfg, model=replace(cfg.model, init_from=chosen)) if cfg.stage == "smt" else cfg
    smt = folder / "smt.yaml"
    smt.write_text(smt.read_text().replace(chosen, "null"))
    assert curriculum.plan([str(folder)], stages=["smt"], out_root=root, adjust=adjust)[0].config.model.init_from == \
        chosen


def test_a_later_stage_starts_from_the_stage_its_config_names_when_that_one_runs_too(tmp_path):
    """`--stages asr,smt,srt,baseline` trained the Baseline (baseline.yaml: from asr/final) on the finished SRT model:
    a later stage whose config starts it from another stage of the plan starts from that one's final/ (under
    --out-root, that one's there); one starting from no stage of the plan still starts from the previous one (the
    "w/o SMT" ablation, `--stages asr,srt`)."""
    stages = ["asr", "smt", "srt", "baseline"]
    assert [s.config.model.init_from for s in curriculum.plan(["configs/embedded"], stages=stages)] == [
        None, "runs/embedded/asr/final", "runs/embedded/smt/final", "runs/embedded/asr/final"]
    root = tmp_path / "R"
    assert [s.config.model.init_from for s in curriculum.plan(["configs/embedded"], stages=stages, out_root=root)] == [
        None, str(root / "asr" / "final"), str(root / "smt" / "final"), str(root / "asr" / "final")]
    assert curriculum.plan(["configs/embedded"], stages=["asr", "srt"])[1].config.model.init_from == \
        "runs/embedded/asr/final"
    folder = _stage_folder(tmp_path)  # listed in another order: smt would start from a model trained after it
    with pytest.raises(ConfigError, match=r"^stage smt \(.*smt.yaml\): model.init_from .*runs/asr/final is the output "
                                          r"of stage asr, which runs after it here; list asr before smt$"):
        curriculum.plan([str(folder / "smt.yaml"), str(folder / "asr.yaml")])


def test_a_later_stage_starts_from_the_stage_its_yaml_names_where_that_one_writes_in_this_run(tmp_path):
    """`asr:output_dir=X` with `--stages asr,smt,srt,baseline` trained the Baseline (its YAML: from asr's final) on
    the SRT model: the stages' outputs were read with the overrides in, so none was asr/final any more. A stage is
    chained by its YAML's start to the stage whose YAML output it names, at that stage's output_dir in this run."""
    stages = ["asr", "smt", "srt", "baseline"]
    assert [s.config.model.init_from for s in curriculum.plan(["configs/embedded"], ["asr:output_dir=runs/x"],
                                                              stages)] == [
        None, "runs/x/final", "runs/embedded/smt/final", "runs/x/final"]
    root = tmp_path / "R"  # under --out-root too: asr's own output_dir wins there, and the Baseline follows it
    assert [s.config.model.init_from for s in curriculum.plan(["configs/embedded"], ["asr:output_dir=runs/x"], stages,
                                                              out_root=root)] == [
        None, "runs/x/final", str(root / "smt" / "final"), "runs/x/final"]


def test_a_start_given_for_every_stage_leaves_the_later_stages_chained_by_their_yamls(tmp_path):
    """`model.init_from=Y` for every stage trained the Baseline on the SRT model: the YAMLs' starts were dropped. Y
    is the first stage's start alone; the later ones chain as without it, and a later YAML writing `init_from: null`
    is refused as without it (it started from the stage before, without a word)."""
    stages, mine = ["asr", "smt", "srt", "baseline"], str(tmp_path / "shipped_asr")
    assert [s.config.model.init_from for s in curriculum.plan(["configs/embedded"], [f"model.init_from={mine}"],
                                                              stages)] == [
        mine, "runs/embedded/asr/final", "runs/embedded/smt/final", "runs/embedded/asr/final"]
    folder = _stage_folder(tmp_path)  # asr starts from `mine`; no_asr.yaml writes `init_from: null`
    (folder / "no_asr.yaml").write_text((folder / "asr.yaml").read_text().replace("runs/asr", "runs/no_asr"))
    with pytest.raises(ConfigError, match=r"^stage no_asr \(.*no_asr.yaml\): its config starts it from a fresh "
                                          r"adapter \(model.init_from: null\), and after stage asr"):
        curriculum.plan([str(folder / "asr.yaml"), str(folder / "no_asr.yaml")], [f"model.init_from={mine}"])


def test_a_later_stage_whose_config_starts_it_fresh_is_refused_unless_told(tmp_path):
    """`--stages asr,smt,srt,ablation_no_asr` trained the "w/o ASR" ablation (its YAML: init_from: null, SMT from a
    fresh adapter) on the finished SRT model: the config and the curriculum's chaining disagree, so it is refused up
    front, naming both ways; a stage prefix says which, and a YAML that leaves init_from out still chains."""
    folder = _stage_folder(tmp_path)
    (folder / "no_asr.yaml").write_text((folder / "asr.yaml").read_text().replace("runs/asr", "runs/no_asr"))
    files = [str(folder / "asr.yaml"), str(folder / "no_asr.yaml")]
    asr_final = tmp_path / "runs" / "asr" / "final"
    with pytest.raises(ConfigError, match=rf"^stage no_asr \(.*no_asr.yaml\): its config starts it from a fresh "
                                          rf"adapter \(model.init_from: null\), and after stage asr it would start "
                                          rf"from {asr_final}; run it first or alone, or say which: "
                                          rf"no_asr:model.init_from={asr_final} or no_asr:model.init_from=null$"):
        curriculum.plan(files)
    assert [s.config.model.init_from for s in curriculum.plan(files, ["no_asr:model.init_from=null"])] == [None, None]
    assert curriculum.plan(files, [f"no_asr:model.init_from={asr_final}"])[1].config.model.init_from == str(asr_final)
    assert curriculum.plan(files[1:])[0].config.model.init_from is None  # alone: as written
    (folder / "no_asr.yaml").write_text(f"stage: no_asr\ndata:\n  train: x.jsonl\noutput_dir: {tmp_path / 'n'}\n")
    assert curriculum.plan(files)[1].config.model.init_from == str(asr_final)


def _recorded(monkeypatch) -> list:
    """`train` replaced by a recorder (and the paths' checks left out): what run_stages would have trained."""
    calls = []
    monkeypatch.setattr(curriculum, "check_before_start", lambda cfg, **_: None)
    monkeypatch.setattr(curriculum, "train", lambda cfg, log: calls.append(cfg.stage) or Path(cfg.output_dir) / "final")
    return calls


@pytest.mark.parametrize("given,said", [
    (["asr:model.adapter_kwargs={num_queries: 4}", "smt:model.adapter_kwargs={num_queries: 8}"],
     r"stage smt .* starts from stage asr's final/, but model.adapter_kwargs.num_queries is 8 in smt, 4 in asr; "
     r"make them match or drop the key from smt"),
    (["smt:model.adapter_kwargs={num_queries: 8}"], r"num_queries is 8 in smt, 80 in asr"),  # asr's by default
    (["asr:model.adapter_kwargs={num_queries: 4}", "srt:model.adapter_kwargs={num_queries: 8}"],
     r"stage srt .* stage smt's final/, but model.adapter_kwargs.num_queries is 8 in srt, 4 in smt"),  # smt's start's
    (["asr:model.adapter=pooled", "smt:model.adapter=linear", "smt:model.adapter_kwargs={k: 3}"],
     r"model.adapter is linear in smt, pooled in asr; set the same adapter and options or drop them"),
    (["asr:model.lora={r: 4}"], r"asr has model.lora \(its final/ holds LoRA weights\) and smt model.lora: null"),
    (["model.lora={r: 4}", "srt:model.lora={r: 8}"], r"model.lora is r 8 on q_proj, v_proj in srt, r 4 on q_proj, "
                                                     r"v_proj in smt; give srt r 4 and at least smt's target_modules "
                                                     r"\(added ones start afresh\)$"),
    (["model.lora={r: 4}", "smt:model.lora.target_modules=[q_proj]"], r"model.lora is r 4 on q_proj in smt"),
    (["model.lora={r: 4, target_modules: [q_proj, k_proj]}", "smt:model.lora.target_modules=[q_proj, v_proj]"],
     r"model.lora is r 4 on q_proj, v_proj in smt, r 4 on q_proj, k_proj in asr"),  # k_proj's weights: no layer
    (["smt:model.llm=/elsewhere/llm"], r"model.llm is /elsewhere/llm in smt, embedded in asr"),
])
def test_stages_that_do_not_fit_together_are_refused_before_any_trains(tmp_path, monkeypatch, given, said):
    """An SMT stage with 8 adapter queries after an ASR stage with 4, LoRA in one stage and not the next (or of
    another rank or modules), another adapter kind with its options, or another LLM: refused when that stage
    started, after the stages before it had trained (at the paper's scale, days)."""
    calls = _recorded(monkeypatch)
    with pytest.raises(ConfigError, match=said):
        curriculum.run_stages(curriculum.plan([str(_stage_folder(tmp_path))], given), log=lambda *_: None)
    assert calls == []


def test_stages_that_fit_together_all_train(tmp_path, monkeypatch):
    """The same options, options a later stage leaves out, LoRA added in a later stage, and another adapter kind
    without options (the recipe trains the start's, and says so) pass; so do LoRA target_modules a later stage adds
    (`llm.load_lora_state` starts them afresh) with another alpha and dropout, and one LLM copied to another path
    (compared by its weights, as loading does): both were refused."""
    calls, folder = _recorded(monkeypatch), _stage_folder(tmp_path)
    given = ["asr:model.adapter_kwargs={num_queries: 4}", "smt:model.adapter_kwargs={num_queries: 4}",
             "srt:model.lora={r: 4}", "srt:model.adapter=pooled"]
    curriculum.run_stages(curriculum.plan([str(folder)], given), log=lambda *_: None)
    assert calls == ["asr", "smt", "srt"]
    calls.clear()
    given = ["model.lora={r: 4}", "srt:model.lora={r: 4, alpha: 8, dropout: 0.1, target_modules: [q_proj, k_proj, "
             "v_proj, o_proj]}"]
    curriculum.run_stages(curriculum.plan([str(folder)], given), log=lambda *_: None)
    assert calls == ["asr", "smt", "srt"]
    calls.clear()
    llm, copy, other = tmp_path / "llm", tmp_path / "elsewhere" / "llm", tmp_path / "other"
    for model, weights in ((llm, b"w" * 4096), (copy, b"w" * 4096), (other, b"v" * 4096)):
        model.mkdir(parents=True)
        (model / "model.safetensors").write_bytes(weights)
    curriculum.run_stages(curriculum.plan([str(folder)], [f"model.llm={llm}", f"srt:model.llm={copy}"]),
                          log=lambda *_: None)
    assert calls == ["asr", "smt", "srt"]
    with pytest.raises(ConfigError, match=rf"stage srt .* starts from stage smt's final/, but model.llm is {other} in "
                                          rf"srt, {llm} in smt \(the adapter learns one llm's output\)"):
        curriculum.run_stages(curriculum.plan([str(folder)], [f"model.llm={llm}", f"srt:model.llm={other}"]),
                              log=lambda *_: None)
    assert calls == ["asr", "smt", "srt"]  # none more


def test_a_finished_stage_trained_from_another_start_is_refused_before_any_stage_trains(tmp_path, monkeypatch):
    """`curriculum ablation_no_asr.yaml srt.yaml` after the main curriculum trained the ablation's stage, then
    refused srt (its final/ trained from smt/final): a finished stage whose start trains in this run is refused
    first (whatever start its final/init_from.json names: the main curriculum again with smt/ removed to train it
    anew passed, then refused srt after SMT had trained), one whose start is there already by its weights."""
    import json
    import shutil

    folder = _stage_folder(tmp_path)
    calls = _recorded(monkeypatch)
    srt = _finished(tmp_path / "runs" / "srt")
    (srt / "init_from.json").write_text(json.dumps({"init_from": str(tmp_path / "runs" / "other" / "final"),
                                                    "weights": "0" * 64}))
    said = (rf"^stage srt \(.*srt.yaml\): {srt} was trained from {{}}, and its start, stage smt's final/, trains "
            rf"again in this run, so {srt} cannot be this start's; remove {srt} or use another output_dir$")
    with pytest.raises(ConfigError, match=said.format(tmp_path / "runs" / "other" / "final")):
        curriculum.run_stages(curriculum.plan([str(folder)]), log=lambda *_: None)
    smt = _finished(tmp_path / "runs" / "smt")
    (smt / "adapter.safetensors").write_bytes(b"smt weights")
    with pytest.raises(ConfigError, match=r"^stage srt .*runs/srt/final was trained from .*runs/other/final, but "
                                          r"model.init_from is now .*runs/smt/final \(other weights\); use another "):
        curriculum.run_stages(curriculum.plan([str(folder)]), log=lambda *_: None)
    assert calls == []
    (srt / "init_from.json").write_text(json.dumps({"init_from": str(smt), "weights": resume.init_identity(smt)}))
    curriculum.run_stages(curriculum.plan([str(folder)]), log=lambda *_: None)  # its start, there: handed back
    assert calls == ["asr", "smt", "srt"]
    calls.clear()
    shutil.rmtree(smt)  # the start it names, removed to train it again: its new weights are not srt's start
    with pytest.raises(ConfigError, match=said.format(smt)):
        curriculum.run_stages(curriculum.plan([str(folder)]), log=lambda *_: None)
    assert calls == []


@pytest.mark.parametrize("given,done,how", [
    ([], {"max_steps": 500}, r"trains further \(max_steps 1000, its final/ has 500\)"),  # max_steps raised since
    (["smt:final_weights=best", "smt:data.dev=x.jsonl"], {"max_steps": 1000, "final_weights": "last"},
     r"writes its final/ again \(final_weights: best\)"),  # from its checkpoint at max_steps
])
def test_a_finished_stage_whose_finished_start_goes_on_is_refused_before_any_trains(tmp_path, monkeypatch, given,
                                                                                     done, how):
    """A finished SMT stage whose max_steps was raised (or final_weights changed) continues, and its final/ changes:
    the finished SRT stage trained from the earlier one passed, then was refused after SMT had trained on."""
    import json

    folder = _stage_folder(tmp_path)
    calls = _recorded(monkeypatch)
    _finished(tmp_path / "runs" / "asr")
    smt, srt = _finished(tmp_path / "runs" / "smt"), _finished(tmp_path / "runs" / "srt")
    (smt / "adapter.safetensors").write_bytes(b"smt weights")
    (smt / "train_config.json").write_text(json.dumps(done))
    (srt / "init_from.json").write_text(json.dumps({"init_from": str(smt), "weights": resume.init_identity(smt)}))
    step = tmp_path / "runs" / "smt" / "checkpoints" / "step-00001000"
    step.mkdir(parents=True)
    (step / "checksums.json").write_text("{}")  # intact: final/ is written again from it
    with pytest.raises(ConfigError, match=rf"^stage srt .*: {srt} was trained from {smt}, and its start, stage smt's "
                                          rf"final/, {how} in this run, so {srt} cannot be this start's; remove "
                                          rf"{srt} or use another output_dir$"):
        curriculum.run_stages(curriculum.plan([str(folder)], given), log=lambda *_: None)
    assert calls == []
    (smt / "train_config.json").write_text(json.dumps({**done, "max_steps": 1000, "final_weights": "last"}))
    curriculum.run_stages(curriculum.plan([str(folder)]), log=lambda *_: None)  # handed back as it is: passes
    assert calls == ["asr", "smt", "srt"]
