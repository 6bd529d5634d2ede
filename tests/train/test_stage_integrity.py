"""A curriculum stage is only reused or resumed when it started from the same model, and each stage owns its
folder; a resume never runs past max_steps and its logs read as one run."""

import json
import shutil
from pathlib import Path

import pytest

from llm_srt.errors import ConfigError, LLMSRTError
from llm_srt.train import curriculum, recipe
from llm_srt.train.config import load_config

from .conftest import overrides, tiny


def _stage_folder(tmp_path, out=True):
    folder = tmp_path / "cfgs"
    folder.mkdir()
    for stage in ("asr", "smt", "srt"):
        where = f"output_dir: {tmp_path / stage}\n" if out else ""
        (folder / f"{stage}.yaml").write_text(f"stage: {stage}\ndata:\n  train: x.jsonl\n  tasks: {{{stage}: 1.0}}\n"
                                              + where)
    return folder


def test_a_stage_trained_from_another_start_is_neither_reused_nor_resumed(tiny_setup, tmp_path):
    folder = _stage_folder(tmp_path)
    common = [o for o in overrides(tiny_setup, "x", max_steps=2, save_every=1) if not o.startswith("output_dir")]
    curriculum.run_curriculum([str(folder)], common, log=lambda *_: None)
    with pytest.raises(LLMSRTError, match=r"srt/final was trained from .*smt/final, but model.init_from is now "
                                          r".*asr/final \(other weights\); use another output_dir"):
        curriculum.run_curriculum([str(folder)], common, stages=["asr", "srt"], log=lambda *_: None)
    shutil.rmtree(tmp_path / "srt" / "final")
    with pytest.raises(ConfigError, match=r"model.init_from \(it holds other weights.*allow_changes=true"):
        curriculum.run_curriculum([str(folder)], common, stages=["asr", "srt"], log=lambda *_: None)
    messages = []  # the same start as before: resumed and finished as usual
    curriculum.run_curriculum([str(folder)], common, log=messages.append)
    assert any("[srt] resumed from" in m for m in messages)


def test_an_interrupted_stage_whose_start_trains_on_is_refused_before_that_start_trains(tiny_setup, tmp_path,
                                                                                        monkeypatch):
    """ASR finished, SMT interrupted with checkpoints, then the curriculum again with asr:max_steps raised: ASR
    trained on over asr/final, and only then was SMT's resume refused (its checkpoints started from the ASR model
    that was no longer there to set back). Refused before any stage trains; the curriculum as it was resumes SMT."""
    folder = _stage_folder(tmp_path)
    common = [o for o in overrides(tiny_setup, "x", max_steps=4, save_every=1) if not o.startswith("output_dir")]

    class Stop(Exception):
        pass

    real = recipe.Recipe.train_step

    def step(self):
        loss = real(self)
        if self.cfg.stage == "smt" and self.step == 2:
            raise Stop()  # after step 1's checkpoint: SMT interrupted
        return loss
    with monkeypatch.context() as m, pytest.raises(Stop):
        m.setattr(recipe.Recipe, "train_step", step)
        curriculum.run_curriculum([str(folder)], common, stages=["asr", "smt"], log=lambda *_: None)
    asr = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "asr" / "final").iterdir()}
    messages = []
    with pytest.raises(ConfigError, match=rf"^stage smt \(.*smt.yaml\): .*smt/checkpoints/step-00000001 resumes only "
                                          rf"from the start it was trained from, and its start, stage asr's final/, "
                                          rf"trains further \(max_steps 6, its final/ has 4\) in this run, so the "
                                          rf"resume would be refused once asr had trained; remove "
                                          rf"{tmp_path / 'smt' / 'checkpoints'} or use another output_dir$"):
        curriculum.run_curriculum([str(folder)], [*common, "asr:max_steps=6"], stages=["asr", "smt"],
                                  log=messages.append)
    assert not any(m.startswith("== stage") for m in messages), messages
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "asr" / "final").iterdir()} == asr
    curriculum.run_curriculum([str(folder)], common, stages=["asr", "smt"], log=messages.append)  # as it was
    assert any("[smt] resumed from" in m for m in messages), messages


def test_stages_sharing_an_output_dir_or_starting_from_their_own_final_are_refused(tmp_path):
    folder = _stage_folder(tmp_path, out=False)
    with pytest.raises(ConfigError, match="stages asr and smt both write runs/default; give each stage its own"):
        curriculum.plan([str(folder)])
    with pytest.raises(ConfigError, match="stages asr and smt both write runs/mine"):
        curriculum.plan([str(folder)], ["output_dir=runs/mine"])
    with pytest.raises(ConfigError, match="stage smt: model.init_from .*smt/final is its own final model"):
        curriculum.plan([str(folder)], ["smt:model.init_from=" + str(tmp_path / "r" / "smt" / "final")],
                        out_root=tmp_path / "r")
    with pytest.raises(ConfigError, match="stage srt: distributed_timeout_min 90, stage asr's 30: one process group"):
        curriculum.plan([str(folder)], ["srt:distributed_timeout_min=90"], out_root=tmp_path / "r")
    assert curriculum.plan([str(folder)], ["distributed_timeout_min=90"], out_root=tmp_path / "r")


def test_stages_pick_from_listed_files_and_an_override_for_no_stage_is_refused(tmp_path):
    folder = _stage_folder(tmp_path)
    files = [str(folder / f"{s}.yaml") for s in ("asr", "smt", "srt")]
    stages = curriculum.plan(files, stages=["asr", "srt"])
    assert [s.name for s in stages] == ["asr", "srt"]
    assert stages[1].config.model.init_from == str(tmp_path / "asr" / "final")
    with pytest.raises(ConfigError, match="--stages names mt, but the stage configs given are asr, smt, srt"):
        curriculum.plan(files, stages=["mt"])
    for bad in ("SRT:optim.lr=1e-5", "str:max_steps=50"):
        with pytest.raises(ConfigError, match=r"no stage '(SRT|str)' runs here; the stages are asr, smt, srt"):
            curriculum.plan(files, [bad])
    with pytest.raises(ConfigError, match="the stages are asr, srt"):  # a stage left out by --stages
        curriculum.plan([str(folder)], ["smt:max_steps=5"], stages=["asr", "srt"])


def test_a_checkpoint_past_max_steps_is_refused(tiny_setup, tmp_path):
    out = tmp_path / "run"
    recipe.train(load_config(None, overrides(tiny_setup, out, max_steps=6, save_every=2)), log=lambda *_: None)
    shutil.rmtree(out / "final")
    with pytest.raises(LLMSRTError, match=r"step-00000006: the newest checkpoint is at step 6, past max_steps 4; "
                                          "raise max_steps to at least 6 or use another output_dir"):
        recipe.train(load_config(None, overrides(tiny_setup, out, max_steps=4, save_every=2)),
                     log=lambda *_: None)


def test_the_logged_lr_is_the_steps_own_and_a_resume_rewrites_the_later_lines(tiny_setup, tmp_path, monkeypatch):
    purges = []
    board = recipe._tensorboard
    monkeypatch.setattr(recipe, "_tensorboard", lambda out, purge=None: purges.append(purge) or board(out, purge))
    out = tmp_path / "run"
    cfg = load_config(None, overrides(tiny_setup, out, max_steps=6, save_every=3,
                                      **{"optim.schedule": "linear"}))
    recipe.train(cfg, log=lambda *_: None)
    lines = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in lines] == pytest.approx([3e-3 * (1 - k / 6) for k in range(6)])
    shutil.rmtree(out / "final")  # as if killed after step 6, before its checkpoint and final/
    shutil.rmtree(out / "checkpoints" / "step-00000006")
    recipe.train(cfg, log=lambda *_: None)
    again = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in again] == [1, 2, 3, 4, 5, 6]
    assert [r["lr"] for r in again] == [r["lr"] for r in lines]
    assert purges == [1, 4]  # a fresh start drops what a run killed before its first checkpoint logged


def test_a_frozen_llm_swapped_for_one_of_the_same_shape_is_noticed_on_resume_and_on_a_finished_run(tiny_setup,
                                                                                                     tmp_path):
    out = tmp_path / "run"
    other = tiny.llm_dir(tmp_path / "other", seed=1)  # the same shape, other weights (an instruct model for the base)
    moved = shutil.copytree(tiny_setup["llm"], tmp_path / "moved" / "llm")  # the same weights on another path
    base = dict(max_steps=2, save_every=1)
    recipe.train(load_config(None, overrides(tiny_setup, out, **base)), log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"run/final: this output_dir holds a model finished with other settings: "
                                          r"model.llm \(it holds other weights than the checkpoint's run was trained"):
        recipe.train(load_config(None, overrides(tiny_setup, out, **base, **{"model.llm": other})),
                     log=lambda *_: None)
    shutil.rmtree(out / "final")
    with pytest.raises(ConfigError, match=r"step-00000002: resuming with settings that differ from the checkpoint's: "
                                          r"model.llm \(it holds other weights"):
        recipe.train(load_config(None, overrides(tiny_setup, out, **base, **{"model.llm": other})),
                     log=lambda *_: None)
    messages = []
    recipe.train(load_config(None, overrides(tiny_setup, out, **base, **{"model.llm": moved})),
                 log=messages.append)
    assert any("already finished" in m or "resumed from" in m for m in messages), messages


@pytest.mark.parametrize("bad,said", [
    ("srt:data.dev=typo.jsonl", "stage srt .*data.dev: typo.jsonl: no such manifest"),
    ("srt:model.encoder=/nonexistent/whisper", "stage srt .*model.encoder: /nonexistent/whisper: no such folder"),
    ("srt:model.llm=Embeded", r"stage srt .*model.llm: Embeded: no such folder \(did you mean 'embedded'\?\)"),
    ("srt:precision=bf16", "stage srt .*precision: bf16 autocast needs a CUDA device"),
])
def test_a_later_stages_bad_path_or_precision_stops_the_curriculum_before_the_first_stage(tiny_setup, tmp_path,
                                                                                        bad, said):
    """A typo in the SRT stage was found when that stage started: after the ASR and SMT stages had trained (at the
    paper's scale, days). Every stage's manifests, models and precision are checked first."""
    folder = _stage_folder(tmp_path)
    common = [o for o in overrides(tiny_setup, "x", max_steps=2, save_every=1) if not o.startswith("output_dir")]
    with pytest.raises(ConfigError, match=said):
        curriculum.run_curriculum([str(folder)], [*common, bad], log=lambda *_: None)
    assert not (tmp_path / "asr").exists()  # the first stage never started


def test_under_torchrun_only_rank_0_prints_the_curriculums_lines(monkeypatch, capsys, tmp_path):
    """Every rank printed each stage's header and "curriculum done" (N copies on N GPUs)."""
    import argparse

    def fake(configs, overrides, stages, out_root, log=print):
        log("== stage 1/1: asr")
        return [Path("runs/asr/final")]

    monkeypatch.setattr(curriculum, "run_curriculum", fake)
    args = argparse.Namespace(items=[str(tmp_path)], stages=None, out_root=None)
    for rank, printed in (("1", ""), ("0", "== stage 1/1: asr\ncurriculum done: runs/asr/final\n")):
        monkeypatch.setenv("RANK", rank)
        assert curriculum.main(args) == 0 and capsys.readouterr().out == printed
