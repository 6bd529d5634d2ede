"""What `llm-srt train` says when another rank has gone (`ranks.peer_gone`): its last line claimed "the training state
is its last checkpoint: run the same command again to resume from it" whatever the run had saved; where it had saved
none, the same command started again from step 0. It names the checkpoint this process knows was saved, or says
none was (cli.stopped_advice, from the `Kept` the recipe puts on the collective's error). And the first signal's
line names the step it waits for."""

import os
import signal

import pytest

from llm_srt import cli
from llm_srt.train import checkpoint, recipe

from .conftest import overrides

GONE = "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:23456"


def _peer_gone_in_step(monkeypatch, at: int) -> None:
    """Step `at` fails in its collective as gloo does on a rank whose peer was killed."""
    real = recipe.Recipe.train_step

    def step(self):
        if self.step + 1 == at:
            raise RuntimeError(GONE)
        return real(self)
    monkeypatch.setattr(recipe.Recipe, "train_step", step)


def _advice(tiny_setup, out, capsys, **extra) -> str:
    """The advice after "this rank stops; " on the run's last line (exit status 2)."""
    code = cli.main(["train", *overrides(tiny_setup, out, max_steps=6, **extra)])
    line = capsys.readouterr().err.splitlines()[-1]
    assert code == 2 and line.startswith("llm-srt train: error: [rank ") and "is gone (gloo: Connection closed by " \
        "peer): this rank stops; " in line, line
    return line.split("this rank stops; ", 1)[1]


@pytest.mark.parametrize("at, save_every, advice", [
    (4, 3, "the training state is its checkpoint saved at step 3: run the same command again to resume from it"),
    (5, 3, "step 4 was not saved: run the same command again to resume from its last checkpoint, {out}"),
    (3, 1000, "step 2 was not saved, nor any step before it: run the same command again and the run starts again "
              "from step 0"),
    (1, 1000, "no checkpoint was saved: run the same command again and the run starts again from step 0"),
])
def test_a_dead_peer_line_names_what_the_run_saved(at, save_every, advice, tiny_setup, tmp_path, monkeypatch,
                                                   capsys):
    _peer_gone_in_step(monkeypatch, at)
    out = tmp_path / "run"
    said = _advice(tiny_setup, out, capsys, save_every=save_every)
    assert said == advice.format(out=out / "checkpoints" / "step-00000003")
    newest = checkpoint.latest(out)
    assert (newest and newest.step) == (3 if save_every == 3 else None)  # what the same command resumes from


def test_a_resumed_run_whose_peer_goes_before_a_step_names_the_checkpoint_it_resumed(tiny_setup, tmp_path,
                                                                                    monkeypatch, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", *overrides(tiny_setup, out, max_steps=2, save_every=2)]) == 0
    capsys.readouterr()
    _peer_gone_in_step(monkeypatch, 3)
    assert _advice(tiny_setup, out, capsys, allow_changes="true") == (
        "the training state is its checkpoint saved at step 2: run the same command again to resume from it")


def test_a_checkpoint_written_before_the_peer_went_is_named(tiny_setup, tmp_path, monkeypatch, capsys):
    """Rank 0 wrote step 2's checkpoint, and the agreement after the write (`on_main`'s) failed: the rerun resumes
    from step 2, which the line names (it said none was saved)."""
    written, real_save, real_on_main = [], checkpoint.save, recipe.on_main
    monkeypatch.setattr(checkpoint, "save", lambda *a, **k: written.append(real_save(*a, **k)) or written[-1])

    def on_main(d, fn):
        before = len(written)
        result = real_on_main(d, fn)
        if len(written) > before:
            raise RuntimeError(GONE)
        return result
    monkeypatch.setattr(recipe, "on_main", on_main)
    assert _advice(tiny_setup, tmp_path / "run", capsys, save_every=2) == (
        "the training state is its checkpoint saved at step 2: run the same command again to resume from it")
    assert checkpoint.latest(tmp_path / "run").step == 2


def _stages(tmp_path):
    folder = tmp_path / "cfgs"
    folder.mkdir()
    for name in ("asr", "smt"):
        (folder / f"{name}.yaml").write_text(f"stage: {name}\ndata:\n  tasks: {{{name}: 1.0}}\n"
                                             f"output_dir: {tmp_path / name}\nmax_steps: 2\n")
    return folder


@pytest.mark.parametrize("at, advice", [
    (3, "the training state is stage smt's checkpoint saved at step 2: run the same command again to resume from it"),
    (1, "no checkpoint was saved: run the same command again and stage smt starts again from step 0"),
])
def test_a_curriculum_names_the_stage_that_stopped_and_the_finished_ones(at, advice, tiny_setup, tmp_path,
                                                                         monkeypatch, capsys):
    """It said "the training state is the stage's last checkpoint" after asr had finished and smt had saved none
    (the same command then trained smt from step 0, asr skipped): which stage, and what of it, was not said."""
    real = recipe.Recipe.train_step

    def step(self):
        if self.cfg.stage == "smt" and self.step + 1 == at:
            raise RuntimeError(GONE)
        return real(self)
    monkeypatch.setattr(recipe.Recipe, "train_step", step)
    common = [o for o in overrides(tiny_setup, "x") if not o.startswith("output_dir")]
    assert cli.main(["curriculum", str(_stages(tmp_path)), "--stages", "asr,smt", *common, "smt:max_steps=4",
                     "smt:save_every=2"]) == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.split("this rank stops; ", 1)[1] == f"{advice}; stage asr is finished (the rerun skips it)", line
    assert (tmp_path / "asr" / "final").is_dir() and not (tmp_path / "smt" / "final").exists()


@pytest.mark.parametrize("within", [True, False])
def test_the_first_signals_line_names_the_step_it_waits_for(within, tiny_setup, tmp_path, monkeypatch, capsys):
    """It said "finishing the step in progress, then saving a checkpoint": whether to wait for it (minutes a step at
    7B) wants which step. A signal within step 3's training waits for step 3; one after step 2's (its log, evaluation
    or save) for step 2, where the run then stops."""
    real = recipe.Recipe.train_step

    def step(self):
        if within and self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        loss = real(self)
        if not within and self.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return loss
    monkeypatch.setattr(recipe.Recipe, "train_step", step)
    monkeypatch.delenv("RANK", raising=False)
    assert cli.main(["train", *overrides(tiny_setup, tmp_path / "run", max_steps=5)]) == 130
    at = 3 if within else 2
    lines = capsys.readouterr().err.splitlines()
    assert f"Ctrl-C: finishing step {at} of 5, then saving it; Ctrl-C again (2 s or more later) stops at once " \
           "without saving" in lines, lines
    assert lines[-1] == f"llm-srt train: interrupted; the training state is its checkpoint saved at step {at}: run " \
                        "the same command again to resume from it"


def _log_unwritable_at(monkeypatch, step: int) -> None:
    """Step `step`'s train_log.jsonl line cannot be written (a full disk)."""
    from llm_srt.train import logs

    real = logs._log_json

    def log_json(out, record):
        if record.get("step") == step:
            raise OSError(28, "No space left on device")
        return real(out, record)
    monkeypatch.setattr(recipe, "_log_json", log_json)


def _index_unwritable_at(monkeypatch, step: int) -> None:
    """Step `step`'s save writes its folder whole, then cannot write checkpoints/index.json (a disk filled by it)."""
    import errno

    real = checkpoint.write_json

    def write_json(path, *args, **kwargs):
        if path.name == checkpoint.INDEX and any(p.name == checkpoint.step_name(step) for p in path.parent.iterdir()):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)
    monkeypatch.setattr(checkpoint, "write_json", write_json)


def test_a_stop_whose_checkpoint_is_in_place_but_not_indexed_says_it_is_kept(tiny_setup, tmp_path, monkeypatch,
                                                                            capsys):
    """The save at the stop wrote step-3 whole and failed at the index ("step-00000003 is saved"): the lines named
    step-2 as the newest and said step 3 was not saved, where the same command resumes from step 3."""
    _index_unwritable_at(monkeypatch, 3)
    real = recipe.Recipe.train_step

    def step(self):
        loss = real(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return loss
    monkeypatch.setattr(recipe.Recipe, "train_step", step)
    out = tmp_path / "run"
    assert cli.main(["train", *overrides(tiny_setup, out, max_steps=5, save_every=2)]) == 130
    said = capsys.readouterr()
    assert said.err.splitlines()[-1] == "llm-srt train: interrupted; the training state is its checkpoint saved at " \
                                        "step 3: run the same command again to resume from it"
    stop = next(s for s in said.out.splitlines() if s.startswith("[asr] SIGINT at step 3: "))
    assert stop.endswith(f"; the newest one is {out / 'checkpoints' / 'step-00000003'}"), stop
    assert checkpoint.latest(out).step == 3


def test_a_log_failure_whose_last_checkpoint_is_in_place_names_it(tiny_setup, tmp_path, monkeypatch, capsys):
    """The same after a log line that cannot be written: its last checkpoint attempt's folder is in place."""
    _index_unwritable_at(monkeypatch, 3)
    _log_unwritable_at(monkeypatch, 3)
    out = tmp_path / "run"
    assert cli.main(["train", *overrides(tiny_setup, out, max_steps=5, save_every=2)]) == 2
    line = capsys.readouterr().err.splitlines()[-1]
    assert f"the newest one is {out / 'checkpoints' / 'step-00000003'}. Free space" in line, line
    assert checkpoint.latest(out).step == 3


def test_a_curriculum_stage_whose_yaml_names_none_is_named_by_its_file(tmp_path):
    """A stage YAML without `stage:` ran as TrainConfig's default, "asr": every line of smt.yaml's stage, its stop's
    ("[asr] SIGINT at step 3: saved a checkpoint, .../smt/checkpoints/...") included, named the wrong stage."""
    from llm_srt.train import curriculum

    folder = tmp_path / "cfgs"
    folder.mkdir()
    for name, named in (("asr", ""), ("smt", ""), ("srt", "stage: srt_mt\n")):
        (folder / f"{name}.yaml").write_text(f"{named}data:\n  train: t.jsonl\noutput_dir: {tmp_path / name}\n")
    planned = curriculum.plan([str(folder)], ["asr:stage=speech"])
    assert [s.config.stage for s in planned] == ["speech", "smt", "srt_mt"]  # a stage the user names keeps its name


def test_a_failed_save_again_of_the_step_resumed_from_says_it_is_kept(tiny_setup, tmp_path, monkeypatch, capsys):
    """A run resumed at a step whose due dev evaluation a signal had skipped runs it first; a signal during it saves
    the step again, and where that save failed the lines said the step, the checkpoint resumed from, was not saved
    ("step 3 was not saved: ... resume from its last checkpoint, .../step-00000003")."""
    from llm_srt.errors import LLMSRTError

    args = overrides(tiny_setup, tmp_path / "run", max_steps=6, eval_every=3,
                     **{"data.dev": tiny_setup["manifest"], "data.dev_size": 2})
    real = recipe.Recipe.train_step

    def step(self):
        loss = real(self)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # in step 3, whose evaluation is due: saved without it
        return loss
    with monkeypatch.context() as m:
        m.setattr(recipe.Recipe, "train_step", step)
        assert cli.main(["train", *args]) == 130
    assert checkpoint.latest(tmp_path / "run").step == 3

    def evaluate(self):  # the skipped evaluation, run first on resume, and a signal during it
        os.kill(os.getpid(), signal.SIGINT)
        return {}

    def save_checkpoint(self, *args, **kwargs):
        raise LLMSRTError(f"{self.out}: cannot write the checkpoint (No space left on device)")
    monkeypatch.setattr(recipe.Recipe, "evaluate", evaluate)
    monkeypatch.setattr(recipe.Recipe, "save_checkpoint", save_checkpoint)
    capsys.readouterr()
    assert cli.main(["train", *args]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == (
        "llm-srt train: interrupted; the training state is its checkpoint saved at step 3: run the same command again "
        "to resume from it")
    assert checkpoint.latest(tmp_path / "run").step == 3
