"""`llm-srt translate --skip-existing`'s exit code: the inputs skipped, their outputs there already, are done. A run
whose one input left failed exited 1 ("none translated") with 5 of its 6 outputs there; now 3 (some failed), and 1
only where no input has an output."""

from llm_srt import cli
from llm_srt.audio import write_wav
from test_infer import Stub, _Broken, recording, stub_cli


def _inputs(tmp_path, n: int) -> list[str]:
    files = []
    for k in range(n):
        write_wav(tmp_path / f"f{k}.wav", recording(2.0 + 0.2 * k, [(0.2, 1.8 + 0.2 * k)], seed=k))
        files.append(str(tmp_path / f"f{k}.wav"))
    return files


def _run(files: list[str], tmp_path, *more: str) -> int:
    return cli.main(["translate", *files, "--model", "stub", "--src", "eng", "--tgt", "deu", "--format", "srt",
                     "--out-dir", str(tmp_path / "out"), "--skip-existing", *more])


def test_a_bad_input_beside_skipped_ones_exits_3_not_1(tmp_path, monkeypatch, capsys):
    files = _inputs(tmp_path, 5)
    stub_cli(monkeypatch, Stub())
    assert _run(files, tmp_path) == 0
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")  # no data chunk: cannot decode
    stub_cli(monkeypatch, Stub())
    assert _run([*files, str(tmp_path / "corrupt.wav")], tmp_path) == 3
    err = capsys.readouterr().err
    assert "5 of 6 inputs skipped" in err and "corrupt.wav: cannot decode audio" in err
    assert _run(files, tmp_path) == 0  # every one skipped
    capsys.readouterr()
    assert _run([str(tmp_path / "corrupt.wav")], tmp_path) == 1  # none has an output: 1, as before
    assert "corrupt.wav" in capsys.readouterr().err


def test_a_gpu_failing_for_good_after_skipped_inputs_exits_3(tmp_path, monkeypatch, capsys):
    """The GPU failing for good (an illegal memory access) on the one input left: its output is not there, the
    skipped ones' are."""
    files = _inputs(tmp_path, 3)
    stub_cli(monkeypatch, Stub())
    assert _run(files[:2], tmp_path) == 0
    stub_cli(monkeypatch, _Broken(interrupt=1))
    assert _run(files, tmp_path, "--batch-size", "1") == 3
    err = capsys.readouterr().err
    assert "2 of 3 inputs skipped" in err and "illegal memory access" in err
    stub_cli(monkeypatch, _Broken(interrupt=1))
    assert _run(files[2:], tmp_path, "--batch-size", "1") == 1  # none done, none skipped
