"""A SIGTERM that comes while a run is already ending on an error (torchrun's, to the rank that met a dead peer first,
during the clean-up's `device.release`): the last line said "stopped by SIGTERM; ... if it saved one (else the run
starts again from step 0)", the peer and the checkpoint kept dropped. It is the error's own line; the exit status is
the signal's (cli._ending_line)."""

import os
import signal
import sys
import types

from llm_srt import cli
from llm_srt import device as device_lib
from llm_srt.errors import TERMINATED, LLMSRTError, Terminated

from .conftest import overrides
from .test_stop_lines import GONE, _peer_gone_in_step


def test_a_sigterm_in_the_clean_up_after_a_dead_peer_keeps_the_dead_peer_line(tiny_setup, tmp_path, monkeypatch,
                                                                               capsys):
    _peer_gone_in_step(monkeypatch, 4)
    real = device_lib.release

    def release(*args, **kwargs):  # torchrun's SIGTERM, as the rank left collects its garbage
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(device_lib, "release", release)
    out = tmp_path / "run"
    code = cli.main(["train", *overrides(tiny_setup, out, max_steps=6, save_every=3)])
    line = capsys.readouterr().err.splitlines()[-1]
    assert code == TERMINATED
    assert line.startswith("llm-srt train: error: [rank "), line
    assert line.endswith("is gone (gloo: Connection closed by peer): this rank stops; the training state is its "
                         "checkpoint saved at step 3: run the same command again to resume from it"), line


def test_a_sigterm_while_an_error_unwinds_keeps_its_line(monkeypatch, capsys):
    def main(args):
        try:
            raise LLMSRTError("data.train: x.jsonl: no such file; fix the path")
        finally:
            raise Terminated()  # as cli's handler raises it, in a clean-up

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, "train", ("fake_verb", "a verb SIGTERMed"))
    assert cli.main(["train"]) == TERMINATED
    assert capsys.readouterr().err == "llm-srt train: error: data.train: x.jsonl: no such file; fix the path\n"


def test_a_curriculums_dead_peer_line_names_its_stage(monkeypatch, capsys):
    import torch.distributed  # noqa: F401  (what `ranks.peer_gone` reads a collective's error with)

    def main(args):
        try:
            raise RuntimeError(GONE)
        finally:
            stop = Terminated()
            stop.curriculum_stage = ("smt", ("asr",))  # as the curriculum sets it on what passes through it
            raise stop

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, "curriculum", ("fake_verb", "a verb SIGTERMed"))
    assert cli.main(["curriculum"]) == TERMINATED
    line = capsys.readouterr().err
    assert "is gone (gloo: Connection closed by peer): this rank stops; run the same command again to resume from " \
           "stage smt's last checkpoint, if it saved one (else stage smt starts again from step 0); stage asr is " \
           "finished (the rerun skips it)\n" in line, line


def test_a_plain_sigterm_says_so(monkeypatch, capsys):
    def main(args):
        try:
            raise ValueError("handled")
        except ValueError:
            pass
        raise Terminated()

    monkeypatch.setitem(sys.modules, "fake_verb", types.SimpleNamespace(add_arguments=lambda p: None, main=main))
    monkeypatch.setitem(cli.VERBS, "score", ("fake_verb", "a verb SIGTERMed"))
    assert cli.main(["score"]) == TERMINATED
    assert capsys.readouterr().err == "llm-srt score: stopped by SIGTERM\n"
