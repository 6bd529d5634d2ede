"""`llm-srt ARGV` run in-process as a shell would see it: the exit code (argparse's refusal, a SystemExit, included),
then what went to stdout and stderr."""

from llm_srt import cli


def run_cli(argv: list[str], capsys) -> tuple[int | None, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err
