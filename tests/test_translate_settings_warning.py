"""translate --out-dir: an output written whose settings cannot be noted in SETTINGS_FILE (a full disk, a file size
limit) is warned of in one line under the command's name, as the toolkit's other warnings (`cli.one_line_warnings`),
for each such output. It was logged by llm_srt.out_files and, with no handler set, printed bare."""

import json
import resource
import signal

import tiny
from test_infer import Stub, stub_cli

from llm_srt import cli
from llm_srt.audio import write_wav
from llm_srt.out_files import SETTINGS_FILE


def test_settings_that_cannot_be_noted_are_warned_of_under_the_commands_name(tmp_path, monkeypatch, capsys):
    inputs = [tmp_path / "a.wav", tmp_path / "b.wav"]
    for k, path in enumerate(inputs):
        write_wav(path, tiny.tone(1.0 + k / 10, 300))
    out = tmp_path / "out"
    out.mkdir()
    record = json.dumps({"file": "other.txt", "settings": {"note": "x" * 5000}, "input": None}) + "\n"
    (out / SETTINGS_FILE).write_text(record)  # a file size limit at its size: the record cannot grow (EFBIG)
    stub_cli(monkeypatch, Stub())
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (else the signal ends the process)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(record), limit[1]))
    try:
        code = cli.main(["translate", *map(str, inputs), "--model", "stub", "--src", "eng", "--tgt", "deu",
                         "--out-dir", str(out)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, handler)
    assert code == 0 and (out / "a.txt").is_file() and (out / "b.txt").is_file()
    err = capsys.readouterr().err
    said = [f"llm-srt translate: warning: {out / SETTINGS_FILE}: cannot note the settings of {out / name} (File too "
            "large); --skip-existing will translate it again" for name in ("a.txt", "b.txt")]
    assert sorted(err.splitlines()) == said, err  # (sorted: the longest input runs first)
    assert (out / SETTINGS_FILE).read_text() == record
