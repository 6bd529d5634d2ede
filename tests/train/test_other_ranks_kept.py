"""Every rank names the checkpoint a stop kept: ranks other than 0 said "resume from its last checkpoint, if it saved
one (else the run starts again from step 0)" after a dead peer while rank 0 named step N, because what a resume must
match (`Recipe.settings`) is rank 0's alone and the stop read "not known yet" from it (`RunStops._note_kept`). One
process plays such a rank: its settings are None, as `on_main` leaves them there."""

import pytest

from llm_srt import cli
from llm_srt.train import checkpoint, recipe

from .conftest import overrides
from .test_stop_lines import _peer_gone_in_step


def _as_another_rank(monkeypatch) -> None:
    real = recipe.on_main

    def on_main(d, fn):
        result = real(d, fn)
        return None if getattr(fn, "__name__", "") == "_check_settings" else result  # rank 0's result, there only
    monkeypatch.setattr(recipe, "on_main", on_main)


@pytest.mark.parametrize("at, advice", [
    (4, "the training state is its checkpoint saved at step 3: run the same command again to resume from it"),
    (5, "step 4 was not saved: run the same command again to resume from its last checkpoint, {out}"),
    (3, "step 2 was not saved, nor any step before it: run the same command again and the run starts again from "
        "step 0"),
])
def test_a_rank_other_than_0_names_what_the_run_kept(at, advice, tiny_setup, tmp_path, monkeypatch, capsys):
    _as_another_rank(monkeypatch)
    _peer_gone_in_step(monkeypatch, at)
    out = tmp_path / "run"
    code = cli.main(["train", *overrides(tiny_setup, out, max_steps=6, save_every=3 if at > 3 else 1000)])
    line = capsys.readouterr().err.splitlines()[-1]
    assert code == 2 and "is gone (gloo: Connection closed by peer): this rank stops; " in line, line
    assert line.split("this rank stops; ", 1)[1] == advice.format(out=out / "checkpoints" / "step-00000003")
    newest = checkpoint.latest(out)
    assert (newest and newest.step) == (3 if at > 3 else None)
