import typing
from dataclasses import dataclass, field

import pytest

from llm_srt import config
from llm_srt.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-4
    warmup_steps: int = 10


@dataclass
class Cfg:
    name: str = "x"
    optim: Optim = field(default_factory=Optim)
    trainable: list[str] = field(default_factory=lambda: ["adapter"])
    mix: dict[str, float] = field(default_factory=dict)
    init_from: str | None = None


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: asr\noptim:\n  lr: 1e-4\n")
    cfg = config.load(Cfg, p, ["optim.warmup_steps=5", "trainable=[adapter, lora]", "mix.srt=0.8"])
    assert cfg.optim.lr == 1e-4 and cfg.optim.warmup_steps == 5
    assert cfg.trainable == ["adapter", "lora"] and cfg.mix == {"srt": 0.8}
    assert config.from_dict(Cfg, config.to_dict(cfg)) == cfg


@pytest.mark.parametrize("text,override,message", [
    ("nmae: x\n", None, r"c.yaml: unknown key 'nmae'"),
    ("optim:\n  lrr: 1\n", None, r"unknown key 'optim.lrr'"),
    ("optim:\n  warmup_steps: ten\n", None, r"optim.warmup_steps must be int"),
    ("trainable: adapter\n", None, r"trainable must be a list"),
    ("name: [unclosed\n", None, r"c.yaml:\d+: not valid YAML"),
    ("", "optim.lr", r"write overrides as key=value"),
    ("", "optim.lr=fast", r"optim.lr must be float"),
])
def test_errors_name_file_and_key(tmp_path, text, override, message):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.load(Cfg, p, [override] if override else None)


def test_missing_file():
    with pytest.raises(ConfigError, match="no such config file"):
        config.load(Cfg, "does/not/exist.yaml")


def test_environment_variables_expand_and_missing_ones_are_named(tmp_path, monkeypatch):
    p = tmp_path / "c.yaml"
    p.write_text("name: ${MY_MODEL}/x\n")
    monkeypatch.setenv("MY_MODEL", "/models/qwen")
    assert config.load(Cfg, p).name == "/models/qwen/x"
    monkeypatch.delenv("MY_MODEL")
    with pytest.raises(ConfigError, match=r"name uses \$\{MY_MODEL\} but that environment variable is not set"):
        config.load(Cfg, p)


@dataclass
class Section:
    size: int = 1

    MOVED: typing.ClassVar[dict[str, str]] = {"width": "write size instead"}


@dataclass
class WithSection:
    section: Section = field(default_factory=Section)


def test_a_moved_key_says_what_to_write_instead(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("section:\n  width: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: 'section.width' is no longer a key here; write size instead"):
        config.load(WithSection, p)
    with pytest.raises(ConfigError, match=r"unknown key 'section.height'; known keys here: size$"):
        config.load(WithSection, None, ["section.height=3"])
    assert config.load(WithSection, None, ["section.size=3"]).section.size == 3


def test_a_hash_in_an_override_is_part_of_the_value():
    """`output_dir=runs/demo #1` on a command line: YAML would read 'runs/demo' (the rest as a comment)."""
    assert config.load(Cfg, None, ["name=runs/demo #1"]).name == "runs/demo #1"
    assert config.load(Cfg, None, ["name='quoted # kept'"]).name == "quoted # kept"
    assert config.load(Cfg, None, ["trainable=[adapter, lora]"]).trainable == ["adapter", "lora"]
