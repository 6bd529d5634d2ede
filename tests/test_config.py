import re
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
    ("nmae: x\n", None, r"c.yaml:[0-9]+: unknown key 'nmae'"),
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


def test_a_time_or_zero_padded_number_is_refused_by_a_number_field_not_read_as_another_number(tmp_path):
    """YAML 1.1 read `1:30` as 90 (sexagesimal) and `010` as 8 (octal): `optim.warmup_steps=1:30` warmed up for 90
    steps without a word. Both stay text, which a number field refuses by name; a text field keeps it."""
    for given in ("1:30", "010", "1:30.5"):
        with pytest.raises(ConfigError, match=rf"optim.warmup_steps must be int, got '{given}'"):
            config.load(Cfg, None, [f"optim.warmup_steps={given}"])
        (tmp_path / "c.yaml").write_text(f"name: {given}\noptim:\n  warmup_steps: {given}\n")
        with pytest.raises(ConfigError, match=r"optim.warmup_steps must be int"):
            config.load(Cfg, tmp_path / "c.yaml")
        assert config.load(Cfg, None, [f"name={given}"]).name == given
    assert config.load(Cfg, None, ["optim.warmup_steps=0o10", "optim.lr=1.5e-4"]).optim.warmup_steps == 8
    for prefix_alone in ("0o_", "0x_", "0b_"):  # a ValueError traceback from the int constructor
        with pytest.raises(ConfigError, match=rf"optim.warmup_steps must be int, got '{prefix_alone}'"):
            config.load(Cfg, None, [f"optim.warmup_steps={prefix_alone}"])
    assert [config.parse_yaml(t) for t in ("12", "-3", "1_000", "0x10", ".5", "1.0e-4")] == [12, -3, 1000, 16, 0.5,
                                                                                            1e-4]


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
    with pytest.raises(ConfigError, match=r"c.yaml:2: 'section.width' is no longer a key here; write size "
                                          r"instead"):
        config.load(WithSection, p)
    with pytest.raises(ConfigError, match=r"unknown key 'section.height'; known keys here: size$"):
        config.load(WithSection, None, ["section.height=3"])
    assert config.load(WithSection, None, ["section.size=3"]).section.size == 3


def test_a_hash_in_an_override_is_part_of_the_value():
    """`output_dir=runs/demo #1` on a command line: YAML would read 'runs/demo' (the rest as a comment)."""
    assert config.load(Cfg, None, ["name=runs/demo #1"]).name == "runs/demo #1"
    assert config.load(Cfg, None, ["name='quoted # kept'"]).name == "quoted # kept"
    assert config.load(Cfg, None, ["trainable=[adapter, lora]"]).trainable == ["adapter", "lora"]


# ---- hostile or careless configs: refused at load, in one short line ----------------------------------------------
@dataclass
class Ranged:
    lr: float = field(default=1e-4, metadata=config.bounds(gt=0))
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=config.bounds(ge=0, lt=1))
    mix: dict[str, float] = field(default_factory=dict, metadata=config.bounds(gt=0))
    keep: int = field(default=2, metadata=config.bounds(ge=1, note="the newest is always kept"))
    free: float = 0.5


@pytest.mark.parametrize("override,message", [
    ("lr=0", r"lr must be > 0, got 0"),
    ("lr=.nan", r"lr must be a finite number, got nan"),
    ("lr=nan", r"lr must be a finite number, got nan"),
    ("free=-.inf", r"free must be a finite number, got -inf"),
    ("free=1e400", r"free must be a finite number"),
    ("betas=[2, 3]", r"betas\[0\] must be >= 0 and < 1, got 2.0"),
    ("betas=[0.9, 1]", r"betas\[1\] must be >= 0 and < 1, got 1.0"),
    ("mix={srt: .inf}", r"mix.srt must be a finite number, got inf"),
    ("mix={srt: -1}", r"mix.srt must be > 0, got -1.0"),
    ("mix={1: 1}", r"a key of mix must be str, got 1"),
    ("keep=0", r"keep must be >= 1 \(the newest is always kept\), got 0"),
])
def test_ranges_and_finiteness_are_checked_at_load(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        config.load(Ranged, None, [override])
    assert "\n" not in str(e.value)
    assert config.load(Ranged, None, ["lr=1e30", "betas=[0, 0.5]", "keep=1"]).lr == 1e30  # the edges are allowed


def test_a_repeated_key_is_refused_naming_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\noptim:\n  lr: 1e-3\ntrainable: [adapter]\noptim:\n  warmup_steps: 0\n")
    with pytest.raises(ConfigError, match=r"c.yaml:5: key 'optim' appears twice in one mapping \(first on line 2\)"):
        config.load(Cfg, p)
    p.write_text("optim:\n  lr: 1e-3\n  lr: 1e-4\n")  # nested too
    with pytest.raises(ConfigError, match=r"c.yaml:3: key 'lr' appears twice"):
        config.load(Cfg, p)
    with pytest.raises(ConfigError, match=r"override 'mix=\{a: 1, a: 2\}': key 'a' appears twice"):
        config.load(Cfg, None, ["mix={a: 1, a: 2}"])


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path):
    """Nine levels of nine aliases: 9**9 strings if expanded (the 'billion laughs'), 350 bytes on disk."""
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for prev, name in zip("abcdefgh", "bcdefghi"):
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
    text += "name: *i\n"
    p = tmp_path / "bomb.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=r"bomb.yaml:2: YAML aliases \(\*a\) are not accepted") as e:
        config.load(Cfg, p)
    assert len(str(e.value)) < 200
    p.write_text("optim: &o {lr: 1.0}\nname: x\n")  # an anchor without an alias is harmless
    assert config.load(Cfg, p).optim.lr == 1.0
    with pytest.raises(ConfigError, match="YAML aliases"):
        config.load(Cfg, None, ["trainable=[&x a, *x]"])


def test_huge_values_are_shortened_in_messages_and_huge_files_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("trainable: " + "x" * 100_000 + "\n")
    with pytest.raises(ConfigError, match=r"trainable must be a list, got 'x+\.\.\.x+'") as e:
        config.load(Cfg, p)
    assert len(str(e.value)) < 200
    p.write_text("name: [" + ", ".join(["[1, 2, 3]"] * 2_000) + "]\n")
    with pytest.raises(ConfigError, match=r"name must be str") as e:
        config.load(Cfg, p)
    assert len(str(e.value)) < 200
    p.write_text("name: " + "[" * 600 + "]" * 600 + "\n")
    with pytest.raises(ConfigError, match=r"c.yaml: nested too deeply"):
        config.load(Cfg, p)
    p.write_text("# " + "x" * (config.MAX_CONFIG_BYTES + 1) + "\nname: x\n")
    with pytest.raises(ConfigError, match=r"c.yaml: \d+ bytes; a config is at most 1024 KiB"):
        config.load(Cfg, p)
    with pytest.raises(ConfigError, match=r": not a regular file"):
        config.load(Cfg, tmp_path)  # a folder
    with pytest.raises(ConfigError, match=r"unknown key 'y+\.\.\.y+'") as e:
        config.load(Cfg, None, ["y" * 10_000 + "=1"])
    assert len(str(e.value)) < 300


def test_deep_nesting_is_refused_whatever_the_recursion_limit(tmp_path):
    """torch.compile raises the interpreter's recursion limit for the whole process; the depth guard must not
    depend on it."""
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(5000)
    try:
        p = tmp_path / "c.yaml"
        p.write_text("name: " + "[" * 600 + "]" * 600 + "\n")
        with pytest.raises(ConfigError, match=r"c.yaml: nested too deeply"):
            config.load(Cfg, p)
        with pytest.raises(ConfigError, match=r"nested too deeply"):
            config.load(Cfg, None, ["name=" + "[" * 150 + "]" * 150])
        p.write_text("name: !!omap [{a: " + "[" * 600 + "]" * 600 + "}]\n")  # a tag that builds tuples
        with pytest.raises(ConfigError, match=r"c.yaml: nested too deeply"):
            config.load(Cfg, p)
        p.write_text("name: " + "[" * 50 + "]" * 50 + "\n")
        with pytest.raises(ConfigError, match=r"name must be str"):  # deep, but within MAX_DEPTH: parsed
            config.load(Cfg, p)
    finally:
        sys.setrecursionlimit(limit)


def test_train_config_errors_are_caught_at_load_once_and_str_overrides_keep_their_text():
    from llm_srt.train.config import load_config

    with pytest.raises(ConfigError, match=r"^<defaults> \(with overrides\): data.tasks is empty; name the stage's"):
        load_config(None, ["data.tasks={}", "max_steps=3", "log_every=2"])
    with pytest.raises(ConfigError, match=r"^<defaults> \(with overrides\): trainable is empty, so nothing would "
                                          r"train; list adapter"):
        load_config(None, ["trainable=[]", "max_steps=3"])
    cfg = load_config(None, ["stage=no", "output_dir=2024-01-01", "data.train=2024-01-01", "data.dev=yes"])
    assert (cfg.stage, cfg.output_dir, cfg.data.train, cfg.data.dev) == ("no", "2024-01-01", "2024-01-01", "yes")
    assert load_config(None, ["data.dev=null"]).data.dev is None


def test_a_path_in_the_home_folder_is_expanded_in_the_file_and_on_the_command_line(tmp_path, monkeypatch):
    """`data.feature_cache=~/c` (quoted, or in YAML) made a folder named '~' in the working directory."""
    from llm_srt.train.config import load_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "c.yaml"
    path.write_text("output_dir: ~/runs/a\ndata:\n  train: [~/a.jsonl, b~/c.jsonl]\n")
    cfg = load_config(str(path), ["data.feature_cache=~/cache", "model.init_from=~"])  # a lone ~ is YAML's null
    home = tmp_path / "home"
    assert (cfg.output_dir, cfg.data.feature_cache, cfg.model.init_from) == (f"{home}/runs/a", f"{home}/cache", None)
    assert cfg.data.train == [f"{home}/a.jsonl", "b~/c.jsonl"]  # only a leading ~/


def test_a_value_that_fits_no_type_of_a_union_names_them_all():
    """`data.train: 5` said "must be a list", although a string (one manifest) is taken too."""
    from llm_srt.train.config import load_config

    with pytest.raises(ConfigError, match=r"data.train must be a list or str, got \{'a': 1\}"):
        load_config(None, ["data.train={a: 1}"])
    with pytest.raises(ConfigError, match=r"data.train\[0\] must be str, got 1"):  # an item: its own type
        load_config(None, ["data.train=[1, 2]"])


def test_an_unset_variable_in_a_union_field_is_named_not_taken_for_the_wrong_type(tmp_path, monkeypatch):
    """`data.train: ${NOPE_DATA}/train.jsonl` (a list or a string) said "data.train must be a list": the list
    option's error won over the unset variable. The variable is expanded before the options are tried, once."""
    from llm_srt.train.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("data:\n  train: ${NOPE_DATA}/train.jsonl\n  dev: ${NOPE_DATA}/dev.jsonl\n")
    monkeypatch.delenv("NOPE_DATA", raising=False)
    with pytest.raises(ConfigError, match=r"c.yaml:[0-9]+: data.train uses \$\{NOPE_DATA\} but that environment "
                                          r"variable is "
                                          r"not set; export NOPE_DATA=/path/to/the/folder or override data.train="):
        load_config(path)
    monkeypatch.setenv("NOPE_DATA", "/data/${HOME}")  # a value holding ${...} is taken as it is, not expanded again
    cfg = load_config(path)
    assert (cfg.data.train, cfg.data.dev) == ("/data/${HOME}/train.jsonl", "/data/${HOME}/dev.jsonl")


def test_a_variable_set_but_empty_is_an_error_like_an_unset_one(tmp_path, monkeypatch):
    """`WHISPER_LARGE_V3= llm-srt train ...` made model.encoder "" + the rest: the current folder."""
    p = tmp_path / "c.yaml"
    p.write_text("name: ${MY_MODEL}\ninit_from: ${MY_MODEL}/x\n")
    monkeypatch.setenv("MY_MODEL", "")
    with pytest.raises(ConfigError, match=r"c.yaml:[0-9]+: name uses \$\{MY_MODEL\} but that environment "
                                          r"variable is set but "
                                          r"empty; export MY_MODEL=/path/to/the/folder or override name=\.\.\.$"):
        config.load(Cfg, p)
    with pytest.raises(ConfigError, match=r"init_from uses \$\{MY_MODEL\} but that environment variable is set but "
                                          r"empty"):
        config.load(Cfg, p, ["name=x"])


def test_an_empty_argument_is_neither_a_config_nor_an_override():
    """`llm-srt curriculum "$CFG_DIR"` with CFG_DIR unset: Path("") is the current folder, which exists."""
    for empty in ("", " "):
        with pytest.raises(ConfigError, match=r"^an empty argument \(an unset shell variable in quotes\?\): give a "
                                              r"config file or folder, or key=value$"):
            config.split_items([empty, "max_steps=3"])


@pytest.mark.parametrize("value", ["[m, ]", "[, m]", "[m, , n]", "[m,]", "[, ]", "[[m, ], n]"])
def test_an_empty_entry_of_a_list_override_is_refused_not_dropped(value):
    """`data.train=[$CV, $FLEURS]` with FLEURS unset reaches the program as `[/cv/train.jsonl, ]`: YAML read a list of
    one, and training went on without the second corpus; `[, m]` was a YAML syntax error naming no variable."""
    with pytest.raises(ConfigError, match=rf"^override {re.escape(repr(f'trainable={value}'))}: an entry of the list "
                                          r"is empty \(an unset shell variable\?\); set the variable, or leave"):
        config.load(Cfg, None, [f"trainable={value}"])


def test_commas_and_brackets_in_quoted_or_plain_text_are_no_empty_entry():
    load = lambda value: config.load(Cfg, None, [value])  # noqa: E731
    assert load("trainable=[m, n]").trainable == ["m", "n"]
    assert load("trainable=[]").trainable == []
    assert load('trainable=["a,]", b]').trainable == ["a,]", "b"]
    assert load("trainable=['it''s, ]', \"x\\\", ]\"]").trainable == ["it's, ]", 'x", ]']
    assert load("trainable=[it's, b]").trainable == ["it's", "b"]  # a quote inside plain text starts no string
    assert load("name=runs/x[1,]").name == "runs/x[1,]"  # a bracket inside plain text starts no list
    assert load("name='[a, ]'").name == "[a, ]"


def test_a_mapping_given_to_a_section_sets_its_keys_and_keeps_the_others(tmp_path):
    """`smt:model={init_from: X}` replaced the whole model section: the YAML's encoder, LLM, adapter and LoRA went
    back to their defaults, and the stage would have trained the embedded models. A mapping given to a section sets
    its keys one by one (as `model.init_from=X`); one given to a mapping field (`data.tasks`) is its whole value."""
    from llm_srt.train.config import load_config

    cfg = tmp_path / "stage.yaml"
    cfg.write_text("stage: srt\ndata:\n  train: t.jsonl\n  tasks: {srt: 0.8, asr: 0.2}\nmodel:\n  encoder: /w\n"
                   "  llm: /l\n  adapter: linear\n  lora: {r: 8, alpha: 16}\noutput_dir: runs/x\n")
    got = load_config(cfg, ["model={init_from: /x/final, lora: {r: 4}}", "data.tasks={asr: 1.0}"])
    assert (got.model.encoder, got.model.llm, got.model.adapter, got.model.init_from) == ("/w", "/l", "linear",
                                                                                          "/x/final")
    assert (got.model.lora.r, got.model.lora.alpha) == (4, 16) and got.data.tasks == {"asr": 1.0}
    assert got.data.train == "t.jsonl"
    with pytest.raises(ConfigError, match=r"model.init_form"):  # a typo inside the mapping is still named
        load_config(cfg, ["model={init_form: /x/final}"])
    assert load_config(cfg, ["model.lora=null"]).model.lora is None
    assert load_config(cfg, ["model.lora=null", "model.lora={r: 2}"]).model.lora.alpha == 32  # none to keep


def test_an_unknown_key_suggests_the_closest_known_one_in_one_line(tmp_path):
    """`max_step=10` listed all 23 top-level keys and `optim.lrr` all 7 of optim's: the one meant is named first."""
    from llm_srt.train.config import load_config

    for given, meant in (("max_step=10", "max_steps"), ("optim.lrr=1e-4", "optim.lr"), ("optim.warmup=5",
                                                                                         "optim.warmup_steps")):
        with pytest.raises(ConfigError, match=rf"unknown key '{given.split('=')[0]}'; did you mean '{meant}'\?$") as e:
            load_config(None, [given])
        assert "known keys" not in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "c.yaml").write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml:2: unknown key 'optim.lrr'; did you mean 'optim.lr'\?$"):
        config.load(Cfg, tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match=r"unknown key 'zzz'; known keys here: name, optim, trainable, mix, "
                                          r"init_from$"):  # nothing close: every key
        config.load(Cfg, None, ["zzz=1"])
    (tmp_path / "c.yaml").write_text("1: x\n")  # a key that is no string: no suggestion, no crash
    with pytest.raises(ConfigError, match=r"unknown key '1'; known keys here"):
        config.load(Cfg, tmp_path / "c.yaml")


@pytest.mark.parametrize("value,form", [
    ("${HOME_NOPE:-/x}", "${HOME_NOPE:-/x}"), ("$HOME/x", "$HOME"), ("runs/${RUN:-x}/a", "${RUN:-x}"),
    ("/a/${MY_MODEL", "${MY_MODEL"), ("${}/a", "${}"), ("/a/$_x", "$_x"), ("${MY_MODEL}/$OTHER", "$OTHER"),
])
def test_a_shell_form_other_than_braced_name_is_refused_not_kept_as_text(tmp_path, monkeypatch, value, form):
    """`model.encoder=${HOME_NOPE:-/x}` and `$HOME/x` stayed literal text (refused later as "no such folder"), and
    `output_dir: runs/${RUN:-x}` made a folder of that name."""
    monkeypatch.setenv("HOME_NOPE", "/home")
    monkeypatch.setenv("MY_MODEL", "/models")
    said = rf"name holds '{re.escape(form)}', which is not expanded: only \$\{{NAME\}} is \(no \$NAME, no "
    with pytest.raises(ConfigError, match=rf"^<defaults> \(with overrides\): {said}") as e:
        config.load(Cfg, None, [f"name={value}"])
    assert "\n" not in str(e.value)
    (tmp_path / "c.yaml").write_text(f"name: x\ntrainable: [a, '{value}']\n")
    with pytest.raises(ConfigError, match=rf"c.yaml:[0-9]+: trainable\[1\] holds '{re.escape(form)}'"):
        config.load(Cfg, tmp_path / "c.yaml")


def test_a_dollar_that_starts_no_variable_is_kept():
    """Only `$` before a letter, `_` or `{` is taken for a variable: a `$` elsewhere in a value stays as written."""
    for value in ("/a/$5/b", "price$", "a$-b", "$$5", "/m/${MY_MODEL}x"):
        expected = value.replace("${MY_MODEL}", "/models")
        with pytest.MonkeyPatch.context() as m:
            m.setenv("MY_MODEL", "/models")
            assert config.load(Cfg, None, [f"name={value}"]).name == expected


def test_a_hex_octal_or_binary_integer_is_refused_by_a_float_field_and_taken_by_an_int_field(tmp_path):
    """`optim.lr=0x1` became 1.0: YAML's int resolver read the hex integer, then the float field took it."""
    for given in ("0x1", "0o7", "0b1", "-0x1_0"):
        with pytest.raises(ConfigError, match=r"optim.lr must be a decimal number \(e.g. 1e-4\), got the hex, octal "
                                              r"or binary integer -?\d+$"):
            config.load(Cfg, None, [f"optim.lr={given}"])
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0x10\n")
    with pytest.raises(ConfigError, match=r"c.yaml:[0-9]+: optim.lr must be a decimal number"):
        config.load(Cfg, tmp_path / "c.yaml")
    got = config.load(Cfg, None, ["optim.lr=1", "optim.warmup_steps=0x10"]).optim
    assert (got.lr, got.warmup_steps) == (1.0, 16) and type(got.warmup_steps) is int


def test_a_wrong_key_or_value_in_a_file_is_named_with_its_line(tmp_path):
    """STYLE's errors say where: an unknown key or a value of the wrong type or range named the file and the key but
    not the line (YAML's own errors did); an override's value has no line of the file, nor does a key under it."""
    from llm_srt.train.config import load_config

    f = tmp_path / "stage.yaml"
    for text, said in (("max_steps: 5\ndata:\n  batchsize: 8\n",
                        r":3: unknown key 'data.batchsize'; did you mean 'data.batch_size'\?"),
                       ("data:\n  batch_size: '16'\n", r":2: data.batch_size must be int, got '16'"),
                       ("data:\n  train:\n    - x.jsonl\n    - 3\n", r":4: data.train\[1\] must be str, got 3"),
                       ("\noptim:\n  lr: -1\n", r":3: optim.lr must be > 0, got -1.0"),
                       ("model: {lora: {r: x}}\n", r":1: model.lora.r must be int, got 'x'"),
                       ("data:\n  tasks:\n    1: 2\n", r":2: a key of data.tasks must be str, got 1"),
                       ("model:\n  adapter_kwargs: {~: 80}\n",
                        r":2: a key of model.adapter_kwargs must be str, got None"),
                       ("model:\noptim:\n  lr: 1e-3\n", r":1: model is empty; give its keys under it, or remove the "
                                                     r"line")):
        f.write_text(text)
        with pytest.raises(ConfigError, match=re.escape(str(f)) + said + "$"):
            load_config(f)
    f.write_text("data:\n  batch_size: '16'\n  num_workers: 0\n")
    with pytest.raises(ConfigError, match=re.escape(str(f)) + r" \(with overrides\): data.batch_size must be int, "
                                          r"got 'zz'$"):  # the command line's value: no line
        load_config(f, ["data.batch_size=zz"])
    with pytest.raises(ConfigError, match=re.escape(str(f)) + r":2 \(with overrides\): data.batch_size must be"):
        load_config(f, ["data.num_workers=1"])  # another key overridden: the file's value keeps its line
    f.write_text("model:\n  lora: {r: 4, alpha: x}\n")
    with pytest.raises(ConfigError, match=re.escape(str(f)) + r" \(with overrides\): model.lora.alpha must be"):
        load_config(f, ["model.lora={r: 8, alpha: y}"])  # a mapping merged over the file's: no line of the file


def test_a_stage_mixing_s2tt_and_srt_is_refused(tmp_path):
    """s2tt and srt share one prompt (speech + <|src|><|tgt|>, Table 1) and differ in the target: a mix of both gave
    the same speech and prompt two targets, and trained."""
    from llm_srt.train.config import load_config

    said = r"s2tt and srt share the prompt <\|src\|><\|tgt\|>; train them in separate stages$"
    with pytest.raises(ConfigError, match=r"^<defaults> \(with overrides\): data.tasks \{'srt': 0.5, 's2tt': 0.5\}: "
                                          + said):
        load_config(None, ["data.tasks={srt: 0.5, s2tt: 0.5}"])
    f = tmp_path / "stage.yaml"
    f.write_text("stage: srt\ndata:\n  tasks: {s2tt: 0.8, asr: 0.1, srt: 0.1}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}:3: data.tasks .*" + said):
        load_config(f)
    for tasks in ("{s2tt: 0.8, asr: 0.2}", "{srt: 0.8, asr: 0.2}", "{srt: 0.5, smt: 0.5}"):  # each alone still trains
        assert load_config(None, [f"data.tasks={tasks}"]).data.tasks


def test_an_override_under_a_section_the_file_does_not_write_names_no_line_of_the_file(tmp_path):
    """`llm-srt train srt.yaml model.lora.alpha=0` said "srt.yaml:5 (with overrides): model.lora: ...", line 5 being
    `model:`: the file writes no lora, so the whole section came from the command line."""
    from llm_srt.train.config import load_config

    srt = "configs/embedded/srt.yaml"
    for given in ("model.lora.alpha=0", "model.lora.r=0"):
        with pytest.raises(ConfigError, match=rf"^{re.escape(srt)} \(with overrides\): model.lora: needs r >= 1"):
            load_config(srt, [given])
    f = tmp_path / "stage.yaml"
    f.write_text("model:\n  encoder: /w\n  adapter_kwargs: {num_queries: 0}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}:3 \(with overrides\): model.adapter_kwargs.num_q"):
        load_config(f, ["model.lora.r=4"])  # a key the file writes keeps its line


def test_an_empty_init_from_is_refused_not_taken_for_a_fresh_start(tmp_path):
    """`model.init_from=$ASR_FINAL` with the variable unset (or `init_from: ''` in a file) trained the stage from a
    random adapter without a word, exit 0: refused as an empty output_dir is; null still starts fresh."""
    from llm_srt.train.config import load_config

    smt = "configs/embedded/smt.yaml"
    said = (r"model.init_from is empty \(an unset shell variable\?\); give the previous stage's model folder, or write "
            r"model.init_from=null to start from a fresh adapter$")
    for empty in ("", "  "):
        with pytest.raises(ConfigError, match=rf"^{smt} \(with overrides\): {said}"):
            load_config(smt, [f"model.init_from={empty}", "max_steps=2"])
    f = tmp_path / "stage.yaml"
    f.write_text("max_steps: 2\nmodel:\n  init_from: ''\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}:3: {said}"):
        load_config(f)
    assert load_config(smt, ["model.init_from=null"]).model.init_from is None
    assert load_config(smt, ["model.init_from=runs/asr/final"]).model.init_from == "runs/asr/final"


def test_an_empty_override_of_a_field_without_null_is_refused_as_empty_and_an_empty_dev_is_refused():
    """The empty text is given to an optional text field alone (whose own check refuses it): `stage=` was accepted
    as "" once every text field took it, and `data.dev=$DEV` unset meant no dev set without a word. Any other field
    refuses an empty value as empty (test_config_empty_override.py)."""
    from llm_srt.train.config import load_config

    for key in ("stage", "model.encoder", "output_dir"):
        with pytest.raises(ConfigError, match=rf"^override '{key}=': {key} is empty \(an unset shell variable\?\)"):
            load_config(None, [f"{key}="])
    with pytest.raises(ConfigError, match=r"data.dev is empty \(an unset shell variable\?\); give the dev manifest, "
                                          r"or write data.dev=null to train without a dev set"):
        load_config(None, ["data.dev="])
    assert load_config(None, ["data.dev=null"]).data.dev is None


def test_a_key_under_a_null_section_sets_it_as_under_an_empty_one(tmp_path):
    """`lora: null` in the file, then model.lora.r=16: "override 'model.lora.r': 'lora' is not a mapping", with no
    way out said; it is model.lora={r: 16}. A key under a value that is no section names the fix."""
    from llm_srt.train.config import load_config

    f = tmp_path / "l.yaml"
    f.write_text("model:\n  lora: null\n")
    lora = load_config(f, ["model.lora.r=16"]).model.lora
    assert lora == load_config(f, ["model.lora={r: 16}"]).model.lora and lora.r == 16
    with pytest.raises(ConfigError, match=r"^override 'data.tasks.srt': data.tasks is None, not a mapping of keys; "
                                          r"give data.tasks whole, e.g. data.tasks=\{srt: \.\.\.\}$"):
        load_config(f, ["data.tasks=null", "data.tasks.srt=1"])


def test_a_file_name_holding_a_parenthesis_keeps_the_line_after_the_name(tmp_path):
    """`asr (copy).yaml`: "odd dir/asr:2 (copy).yaml: unknown key", the line put at the name's first " (" (meant
    for " (with overrides)")."""
    from llm_srt.train.config import load_config

    f = tmp_path / "odd dir" / "asr (copy).yaml"
    f.parent.mkdir()
    f.write_text("stage: asr\nmax_step: 3\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}:2: unknown key 'max_step'"):
        load_config(f)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(f))}:2 \(with overrides\): unknown key 'max_step'"):
        load_config(f, ["seed=1"])


def test_a_train_yaml_naming_no_stage_is_named_by_its_file(tmp_path):
    """`llm-srt train smt_more.yaml` without `stage:` ran as TrainConfig's default 'asr': every line, its stop line
    included, said "[asr]" whatever it trained. Such a YAML's stage is its file's name, as a curriculum's is; one the
    YAML or an override names keeps it (no file: the default)."""
    from llm_srt.train.config import TrainConfig, load_config

    unnamed, named = tmp_path / "smt_more.yaml", tmp_path / "mine.yaml"
    unnamed.write_text("max_steps: 3\n")
    named.write_text("stage: srt\nmax_steps: 3\n")
    assert load_config(str(unnamed)).stage == "smt_more"
    assert load_config(unnamed, ["max_steps=4"]).stage == "smt_more"
    assert load_config(str(unnamed), [" stage = baseline"]).stage == "baseline"
    assert load_config(str(named)).stage == load_config(str(named), ["max_steps=4"]).stage == "srt"
    assert load_config(None).stage == TrainConfig().stage == "asr"
