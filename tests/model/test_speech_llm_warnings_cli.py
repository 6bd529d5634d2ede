"""A model folder loaded with other frozen weights than it was trained with (another LLM of the same shape): the
warning is one line under the command's name, as the toolkit's other warnings (`cli.one_line_warnings`), at every
load. It was logged by llm_srt.model.speech_llm and, with no handler set, printed bare by `llm-srt translate`."""

import tiny

from llm_srt import cli
from llm_srt.audio import write_wav


def test_other_frozen_weights_are_warned_of_under_the_commands_name(tmp_path, capsys):
    folder = tiny.speech_llm_folder(tmp_path / "trained")
    other = tiny.llm_dir(tmp_path / "other", seed=1)  # the same shape, other weights
    write_wav(tmp_path / "a.wav", tiny.tone(1.0, 300))
    argv = ["translate", str(tmp_path / "a.wav"), "--model", str(folder), "--src", "eng", "--tgt", "deu"]
    said = [f"llm-srt translate: warning: {folder}: trained with other llm weight files than {other} holds (another "
            "model of the same shape, or the same one in another format); give the llm it was trained with (--llm of "
            "translate and serve, --model-llm of evaluate; model.llm in a training config), or its outputs are not "
            "the trained model's"]
    for _ in range(2):  # every load says so
        cli.main([*argv, "--llm", str(other)])
        err = capsys.readouterr().err
        assert [line for line in err.splitlines() if "trained with other" in line] == said, err
    cli.main(argv)
    assert "trained with other" not in capsys.readouterr().err
