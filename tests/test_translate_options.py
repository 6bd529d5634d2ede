"""`llm-srt translate`'s options as the command line reads them: an option that takes one value, given twice with
two values, is refused in one line before the model loads, not silently overridden by the last."""

from llm_srt import translate
from llm_srt.audio import write_wav
from cli_run import run_cli
from test_infer import Stub, recording, stub_cli


class _Targets(Stub):
    """The stub system, noting the target language of every item it ran."""

    def __init__(self):
        super().__init__()
        self.targets = []

    def run_batch(self, items, options):
        self.targets += [it.tgt for it in items]
        return super().run_batch(items, options)


def test_a_second_tgt_is_refused_in_one_line_not_the_first_dropped(tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    stub = _Targets()
    stub_cli(monkeypatch, stub)
    code, out, err = run_cli(["translate", str(tmp_path / "a.wav"), "--model", "stub", "--src", "eng", "--tgt",
                              "deu", "--tgt", "fra"], capsys)
    assert code == 2 and out == "" and stub.targets == []  # argparse's plain store translated into fra alone, unsaid
    assert len(err.strip().splitlines()) == 1 and "argument --tgt: given twice (deu, then fra)" in err, err


def test_the_same_tgt_twice_translates_as_once(tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "a.wav", recording(2.4, [(0.2, 2.2)]))
    runs = []
    for again in ([], ["--tgt=deu"]):
        stub = _Targets()
        stub_cli(monkeypatch, stub)
        runs.append((run_cli(["translate", str(tmp_path / "a.wav"), "--model", "stub", "--src", "eng", "--tgt",
                              "deu", *again], capsys), stub.targets))
    assert runs[0][0][0] == 0 and runs[0][1] == ["deu"] and runs[1] == runs[0]


def test_inputs_and_transcripts_still_come_in_any_order(monkeypatch, capsys):
    called = []
    monkeypatch.setattr(translate, "main", lambda args: called.append(args) or 0)
    argv = ["a.wav", "--model", "m", "--transcript", "one", "b.wav", "--transcript", "two", "--model", "m", "c.wav"]
    assert run_cli(["translate", *argv], capsys)[0] == 0
    assert called[0].audio == ["a.wav", "b.wav", "c.wav"] and called[0].transcript == ["one", "two"]
    assert run_cli(["translate", "--model", "m", "--", "-take1.wav"], capsys)[0] == 0
    assert called[1].audio == ["-take1.wav"]
