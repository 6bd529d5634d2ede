"""From a fresh clone, `llm-srt train configs/embedded/asr.yaml max_steps=2` said "data/mini/train.jsonl: no such
manifest; ... build them with llm-srt prepare or fix the paths": which prepare (and where to) was the reader's to
find. The mini corpus's own manifests now name the command that builds them."""

from pathlib import Path

import pytest
import torch

from llm_srt import cli
from llm_srt.errors import ConfigError
from llm_srt.paths import CACHE_ENV
from llm_srt.train.config import load_config
from llm_srt.train.preflight import check_before_start

EMBEDDED_ASR = Path(__file__).resolve().parents[2] / "configs" / "embedded" / "asr.yaml"


def _refusal(items: list[str]) -> str:
    with pytest.raises(ConfigError) as refused:
        check_before_start(load_config(None, ["model.encoder=embedded", "model.llm=embedded", *items]),
                           torch.device("cpu"))
    assert "\n" not in str(refused.value)
    return str(refused.value)


def test_a_fresh_clone_is_told_to_prepare_the_mini_corpus(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", str(EMBEDDED_ASR), "max_steps=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.rstrip("\n").endswith("data.train: data/mini/train.jsonl: no such manifest; data.dev: "
                                     "data/mini/dev.jsonl: no such manifest; build them with `llm-srt prepare mini "
                                     "--out data/mini` or fix the paths"), err
    assert not (tmp_path / "runs").exists()


def test_the_mini_folders_and_others(tmp_path, monkeypatch):
    """data/mini as written or from the current folder, and prepare mini's default out (the cache), each name
    `prepare mini --out` that folder; another folder, a file prepare mini does not write, or a mix keep the general
    advice."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "my cache"))
    assert _refusal(["data.train=data/mini/train.jsonl"]) == (
        "data.train: data/mini/train.jsonl: no such manifest; build it with `llm-srt prepare mini --out data/mini` "
        "or fix the path")
    local = tmp_path / "data" / "mini"
    assert _refusal([f"data.train={local / 'test.jsonl'}"]).endswith(
        f"build it with `llm-srt prepare mini --out {local}` or fix the path")
    cached = tmp_path / "my cache" / "data" / "mini"
    assert _refusal([f"data.train=[{cached / 'train.jsonl'}]", f"data.dev={cached / 'dev.jsonl'}"]).endswith(
        f"build them with `llm-srt prepare mini --out '{cached}'` or fix the paths")
    generic = "build it with `llm-srt prepare` or fix the path"
    assert _refusal(["data.train=data/fleurs/train.jsonl"]).endswith(generic)
    assert _refusal(["data.train=data/mini/extra.jsonl"]).endswith(generic)
    assert _refusal(["data.train=data/mini/train.jsonl", "data.dev=data/fleurs/dev.jsonl"]).endswith(
        "build them with `llm-srt prepare` or fix the paths")
