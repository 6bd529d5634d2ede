"""infer's warnings of a batch that failed and was retried in halves, and of a batch that ran out of memory: one line
under the command's name, as the toolkit's other warnings (`cli.one_line_warnings`). They were logged by llm_srt.infer:
`llm-srt translate` (no handler) printed them bare, `llm-srt serve` as its server log lines. Given at every such
batch, not once per process (serve's: tests/serve/test_serve_infer_warnings.py)."""

import tiny
from test_infer import SR, Stub, _OutOfMemory, stub_cli

from llm_srt import cli
from llm_srt.audio import write_wav

RETRIED = "a batch of {} failed ({}); retrying it as two halves"
INDEX = "RuntimeError: index out of range in self"


def _inputs(tmp_path, n: int = 4) -> list[str]:
    paths = [tmp_path / f"a{k}.wav" for k in range(n)]
    for k, path in enumerate(paths):
        write_wav(path, tiny.tone(1.0 + k / 10, 300))
    return [str(p) for p in paths]


def _warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if "retrying" in line or "out of memory at" in line]


def test_a_failed_batch_retried_in_halves_is_warned_of_under_the_commands_name(tmp_path, monkeypatch, capsys):
    inputs = _inputs(tmp_path)
    stub_cli(monkeypatch, Stub(fails=lambda it: it.audio.size == int(1.2 * SR)))
    argv = ["translate", *inputs, "--model", "stub", "--src", "eng", "--tgt", "deu", "--batch-size", "4"]
    said = [f"llm-srt translate: warning: {RETRIED.format(4, INDEX)}",
            f"llm-srt translate: warning: {RETRIED.format(2, INDEX)}"]
    for _ in range(2):  # a second run in the same process says it again
        assert cli.main(argv) == 3
        err = capsys.readouterr().err
        assert _warnings(err) == said, err


def test_running_out_of_memory_is_warned_of_under_the_commands_name(tmp_path, monkeypatch, capsys):
    stub_cli(monkeypatch, _OutOfMemory())
    argv = ["translate", *_inputs(tmp_path), "--model", "stub", "--src", "eng", "--tgt", "deu", "--batch-size", "4"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    oom = "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert _warnings(err) == [f"llm-srt translate: warning: {RETRIED.format(4, oom)}",
                              "llm-srt translate: warning: out of memory at batch 1: later batches use at most 2 rows"]
