"""`llm-srt train` and `curriculum` let go of their process groups however they end: a refused or stopped run under
torchrun left its gloo groups to the interpreter's teardown, which aborted a rank now and then ("terminate called
without an active exception", exit -6 where the run said its one line and meant 2; parallel.release_groups)."""

import argparse
from pathlib import Path

import pytest

from llm_srt.errors import LLMSRTError
from llm_srt.train import curriculum, recipe

EMBEDDED = Path(__file__).resolve().parents[2] / "configs" / "embedded"


@pytest.mark.parametrize("module, argv", [(recipe, [str(EMBEDDED / "asr.yaml"), "data.train=no/such.jsonl"]),
                                          (curriculum, [str(EMBEDDED), "--stages", "asr,st"])])
def test_a_refused_run_releases_its_groups_too(module, argv, monkeypatch):
    released = []
    monkeypatch.setattr(module, "release_groups", lambda: released.append(True))
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    with pytest.raises(LLMSRTError):  # refused after the command line was read, as under torchrun
        module.main(parser.parse_args(argv))
    assert released == [True]


def test_a_finished_train_releases_them_once(monkeypatch):
    released = []
    monkeypatch.setattr(recipe, "release_groups", lambda: released.append(True))
    monkeypatch.setattr(recipe, "train", lambda cfg, source=None: None)
    parser = argparse.ArgumentParser()
    recipe.add_arguments(parser)
    assert recipe.main(parser.parse_args(["max_steps=1"])) == 0 and released == [True]
