"""The warning of an input whose audio decodes only in part (damaged, cut short): one line under the command's name,
as the toolkit's other warnings (`cli.one_line_warnings`). It was logged by llm_srt.audio, and with no handler set
printed bare (`in/trunc.wav: only the first 5.0 s of 10.0 s decode ...`), unlike every other line of the run."""

from llm_srt import cli
from llm_srt.audio import write_wav
from test_infer import Stub, recording, stub_cli


def test_an_input_cut_short_is_warned_of_under_the_commands_name(tmp_path, monkeypatch, capsys):
    write_wav(tmp_path / "cut.wav", recording(8.0, [(0.5, 2.5), (5.0, 7.5)]))
    data = (tmp_path / "cut.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])  # the header still claims 8 s
    said = (f"llm-srt translate: warning: {tmp_path / 'cut.wav'}: only the first 4.0 s of 8.0 s decode (it ends "
            "before the length its header gives): the file is damaged or cut short; those are used (re-export it, or "
            "copy it again, for the rest)")
    stub_cli(monkeypatch, Stub())
    assert cli.main(["translate", str(tmp_path / "cut.wav"), "--model", "stub", "--src", "eng", "--tgt", "deu"]) == 3
    err = capsys.readouterr().err
    assert err.splitlines() == [said], err
