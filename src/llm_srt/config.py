"""Typed configs from YAML + `key=value` overrides (torchtune / litgpt style).

A config is a tree of dataclasses; the dataclass fields are the schema. Unknown keys and wrong types are errors
that name the file and the dotted key. A dataclass may list keys it no longer takes in a class attribute
`MOVED: ClassVar[dict[str, str]]` (old key -> what to write instead); using one is an error that says so.
Code composes configs with `dataclasses.replace`; `key=value` strings are for people on the command line.

Checked at load, before anything is built: YAML aliases and repeated keys are refused (an alias bomb, a second
`optim:` silently replacing the first), every float must be finite, and a field may declare its range next to it:
`lr: float = field(default=1e-4, metadata=bounds(gt=0))` (for a list, tuple or mapping, each item). In text, ${NAME}
is an environment variable and other shell forms ($NAME, ${NAME:-x}) are refused; a float field refuses a 0x / 0o /
0b integer. An unknown key names the closest known one. Errors are one line: values in them are shortened (`short`),
never formatted whole.
"""

import dataclasses
import difflib
import math
import os
import re
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")

MAX_CONFIG_BYTES = 1 << 20  # a config is a page of settings; a bigger file is a mistake (or a bomb)
MAX_DEPTH = 100  # lists and mappings nested deeper are refused (a config is a few levels deep)


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field: bounds (None = open) and an optional note on what to write."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """None if `value` is inside, else 'must be ...'."""
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        tests = (("ge", ">=", value >= self.ge if self.ge is not None else True),
                 ("gt", ">", value > self.gt if self.gt is not None else True),
                 ("le", "<=", value <= self.le if self.le is not None else True),
                 ("lt", "<", value < self.lt if self.lt is not None else True))
        if all(ok for *_, ok in tests):
            return None
        parts = [f"{op} {_number(getattr(self, name))}" for name, op, _ in tests if getattr(self, name) is not None]
        return "must be " + " and ".join(parts) + (f" ({self.note})" if self.note else "")


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def bounds(ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           note: str = "") -> dict:
    """Field metadata declaring a numeric range: `field(default=1, metadata=bounds(ge=1))`."""
    return {"range": Range(ge, gt, le, lt, note)}


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxlevel = \
    60, 60, 6, 6, 4, 3


def short(value: Any) -> str:
    """repr(value) bounded in size (a huge or deeply nested value is cut, never formatted whole)."""
    return _SHORT.repr(value)


class _Refused(yaml.YAMLError):
    """YAML this project does not read, at a place in the file."""

    def __init__(self, mark, message: str):
        super().__init__(message)
        self.mark, self.message = mark, message


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses aliases (`*name`: 600 bytes of nested aliases expand to gigabytes),
    repeated keys in a mapping (the last would silently win) and nodes nested deeper than MAX_DEPTH (RecursionError,
    counted as the composer descends, whatever the tag: the parser's own recursion would stop deep input only at the
    interpreter's recursion limit, which another library may have raised in this process; torch.compile sets it to
    2,000)."""

    depth = 0  # nodes being composed, outermost first

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(event.start_mark, f"YAML aliases (*{short(event.anchor)[1:-1]}) are not accepted in a "
                           "config; write the value out")
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise RecursionError(f"nested deeper than {MAX_DEPTH}")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: PyYAML's own error follows
                continue
            if first is not key_node.start_mark:
                raise _Refused(key_node.start_mark, f"key {short(key)} appears twice in one mapping (first on line "
                               f"{first.line + 1}); the second would silently replace the first: keep one")
        return super().construct_mapping(node, deep)


# YAML 1.1's sexagesimal numbers (`1:30` is 90, `1:30.5` 90.5) and leading-zero octals (`010` is 8) read a time or a
# zero-padded number as another number without a word: `save_every=1:30` saved every 90 steps. Without them such text
# stays a string, which an integer field refuses by name (YAML 1.2 has neither form; its `0o10` reads as 8). A prefix
# takes a digit (`0o_` was a ValueError traceback).
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
StrictLoader.yaml_implicit_resolvers = {first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
                                        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
StrictLoader.add_implicit_resolver(_INT, re.compile(r"^(?:[-+]?0b[0-1][0-1_]*|[-+]?(?:0|[1-9][0-9_]*)"
                                                    r"|[-+]?0x[0-9a-fA-F][0-9a-fA-F_]*|[-+]?0o[0-7][0-7_]*)$"),
                                   list("-+0123456789"))
StrictLoader.add_implicit_resolver(_FLOAT, re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?"
                                                      r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)"
                                                      r"|\.(?:nan|NaN|NAN))$"), list("-+0123456789."))


class _RadixInt(int):
    """An int YAML read from 0x / 0o / 0b text. A float field refuses it (`optim.lr=0x1` was 1.0); an int field
    takes it as a plain int."""


def _construct_int(loader: StrictLoader, node: yaml.ScalarNode) -> int:
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    digits = str(node.value).replace("_", "").lstrip("+-").lower()
    return _RadixInt(value) if digits.startswith(("0x", "0o", "0b")) else value


StrictLoader.add_constructor(_INT, _construct_int)


def parse_yaml(text: str) -> Any:
    """YAML text through `StrictLoader` (RecursionError when nested deeper than MAX_DEPTH)."""
    return yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass)


def split_items(items: list[str]) -> tuple[list[str], list[str]]:
    """A command line's CONFIG_OR_OVERRIDE items -> (configs, key=value overrides). A config is a path that exists
    or a name ending in .yaml/.yml (a sweep folder may be named `lr=1e-4`); anything else must be key=value."""
    configs, overrides = [], []
    for item in items:
        if not item.strip():  # Path("") is the current folder, which exists: taken for a config folder
            raise ConfigError("an empty argument (an unset shell variable in quotes?): give a config file or folder, "
                              "or key=value")
        if Path(item).exists() or item.endswith((".yaml", ".yml")):
            configs.append(item)
        elif "=" in item:
            overrides.append(item)
        else:
            raise ConfigError(f"{short(item)} is neither a config file (no such file or folder) nor a key=value "
                              "override (write it as key=value, without spaces around =)")
    return configs, overrides


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from a YAML file, then apply `a.b=value` overrides (values parsed as YAML)."""
    data: dict = {}
    lines: dict[str, int] = {}  # each key written in the file -> its line (`_key_lines`)
    where = str(path) if path else "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            what = "not a regular file" if p.exists() else "no such config file"
            raise ConfigError(f"{p}: {what}")
        try:
            if p.stat().st_size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{p}: {p.stat().st_size} bytes; a config is at most {MAX_CONFIG_BYTES >> 10} KiB "
                                  "(is it really a config?)")
            text = p.read_text(encoding="utf-8")
            data = parse_yaml(text) or {}
            lines = _key_lines(text)
        except _Refused as e:
            raise ConfigError(f"{p}:{e.mark.line + 1}: {e.message}") from None
        except RecursionError:
            raise ConfigError(f"{p}: nested too deeply to be a config") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark else ""
            raise ConfigError(f"{p}{line}: not valid YAML ({_problem(e)})") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{p}: not UTF-8 text (byte {e.start + 1}); is it really a YAML config?") from None
        except OSError as e:
            raise ConfigError(f"{p}: cannot read the config ({e.strerror or e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {short(item)}: write overrides as key=value, e.g. optim.lr=1e-5")
        if _has_empty_entry(value):
            raise ConfigError(f"override {short(item)}: an entry of the list is empty (an unset shell variable?); "
                              "set the variable, or leave the entry and its comma out")
        try:
            parsed = parse_yaml(value) if value.strip() else None
        except _Refused as e:
            raise ConfigError(f"override {short(item)}: {e.message}") from None
        except RecursionError:
            raise ConfigError(f"override {short(item)}: nested too deeply") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {short(item)}: the value is not valid YAML ({_problem(e)}); "
                              "quote it or fix the brackets") from None
        if not value.strip() and _takes_text(tp := _type_at(cls, key.strip())) and type(None) in _members(tp):
            parsed = value  # "model.init_from=$UNSET": the empty text, which the field's own checks refuse (as a
            #   YAML '' is), not null, which an optional field takes as "none" without a word; null is written null
        elif not value.strip() and _in_schema(cls, key.strip()):  # "max_steps=$UNSET" said "must be int, got None";
            #   model.lora= dropped the LoRA without a word (a key no field has is named unknown, as before)
            none = f", or write {key.strip()}=null for none" if type(None) in _members(tp) else ""
            raise ConfigError(f"override {short(item)}: {key.strip()} is empty (an unset shell variable?); give it a "
                              f"value{none}")
        elif isinstance(parsed, str) and "#" in value and not value.lstrip().startswith(("'", '"')):
            parsed = value.strip()  # "output_dir=runs/demo #1": a '#' on a command line is no YAML comment
        elif not isinstance(parsed, (str, list, dict, type(None))) and _takes_text(_type_at(cls, key.strip())):
            parsed = value.strip()  # "stage=no", "output_dir=2024-01-01": YAML 1.1 would give False, a date
        _assign(data, key.strip(), parsed, cls)
        parts = key.strip().split(".")
        above = [a for a in (".".join(parts[:i]) for i in range(1, len(parts))) if a not in lines]  # model.lora of
        #   model.lora.alpha=0 where the file writes no lora: its error named the line of model:, not the override
        for k in [k for k in lines if re.match(rf"{re.escape(key.strip())}(?:$|[.\[])", k)] + [key.strip(), *above]:
            lines[k] = 0  # from the command line (a mapping's keys may merge): no line of the file, nor above it
    source = where
    if overrides:
        where = f"{where} (with overrides)"
    try:
        return from_dict(cls, data, where)
    except ConfigError as e:
        raise _at_line(e, where, lines, source) from None


def _has_empty_entry(value: str) -> bool:
    """Whether a flow list in an override's value has an empty entry, `[a, ]`, `[, a]` or `[a, , b]` (quoted text
    aside): `data.train=[$CV, $FLEURS]` with FLEURS unset reaches us as `[/cv/train.jsonl, ]`, which YAML reads as a
    list of one (a corpus dropped without a word); the other two are YAML syntax errors that name no variable."""
    opened, last, quote, i = [], "", "", 0  # last: the previous character outside quotes and blanks
    while i < len(value):
        c = value[i]
        if quote:  # inside '...' ('' is a quote) or "..." (\ escapes)
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote and value[i + 1:i + 2] == "'" == quote:
                i += 1
            elif c == quote:
                quote, last = "", c
        elif c.isspace():
            pass
        elif c in "'\"" and last in ("", "[", "{", ",", ":"):  # a quote starts a string only where a value starts
            quote = c
        elif c in "[{" and (opened or not last):  # outside a list or mapping, `[` is part of a plain text
            opened.append(c)
            last = c
        elif c in "]}" and opened:
            if opened.pop() == "[" and last == ",":
                return True
            last = c
        elif c == "," and opened and opened[-1] == "[" and last in ("[", ","):
            return True
        else:
            last = c
        i += 1
    return False


def _key_lines(text: str) -> dict[str, int]:
    """Each dotted key of a YAML config, and each list item (`key[i]`) -> the line (1-based) it is written on."""
    lines: dict[str, int] = {}

    def walk(node: yaml.Node, key: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{key}.{k.value}" if key else str(k.value)
                lines.setdefault(name, k.start_mark.line + 1)
                walk(v, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines.setdefault(f"{key}[{i}]", v.start_mark.line + 1)
                walk(v, f"{key}[{i}]")

    node = yaml.compose(text, Loader=StrictLoader)  # noqa: S506  (a SafeLoader subclass; parsed once already)
    if node is not None:
        walk(node, "")
    return lines


def _at_line(e: ConfigError, where: str, lines: dict[str, int], source: str) -> ConfigError:
    """`e` with the line of the key it names first (`where: key ...`, `where: unknown key 'key'`, `where: a key of
    key ...`: a mapping's key that is no text, `{1: 80}`, at the mapping's line), as STYLE's errors say where: the
    line of the key itself or, for a key the file does not write (a sub-key of a flow mapping's default), of the
    nearest one above it; unchanged for a key an override set (`lines` holds 0 for it: the whole value came from the
    command line) or a message naming no key. `where` is `source` (the file) and what follows it (" (with
    overrides)"): the line goes right after the file's name, which may hold " (" itself."""
    text = str(e)
    m = re.match(rf"{re.escape(where)}: (?:unknown key |a key of )?'?([\w.\[\]-]+)", text)
    key = m.group(1) if m else ""
    while key and key not in lines:
        key = re.sub(r"(?:\.[^.\[]*|\[\d+\])$", "", key) if re.search(r"[.\[]", key) else ""
    if not lines.get(key):  # none, or an override's (0)
        return e
    return ConfigError(f"{source}:{lines[key]}{where[len(source):]}{text[len(where):]}")


def _type_at(cls: type, key: str) -> Any:
    """The type hint of dotted `key` in the dataclass tree `cls` (None where the key leads out of dataclasses)."""
    tp: Any = cls
    for part in key.split("."):
        tp = next((o for o in _members(tp) if dataclasses.is_dataclass(o)), None)
        if tp is None or part not in {f.name for f in dataclasses.fields(tp)}:
            return None
        tp = typing.get_type_hints(tp)[part]
    return tp


def _in_schema(cls: type, key: str) -> bool:
    """Whether dotted `key` names a field of the dataclass tree `cls`, or a key within one of its mapping fields
    (model.adapter_kwargs.num_queries, data.tasks.srt)."""
    tp: Any = cls
    for part in key.split("."):
        node = next((o for o in _members(tp) if dataclasses.is_dataclass(o)), None)
        if node is None:
            return any(o is dict or typing.get_origin(o) is dict for o in _members(tp))
        if part not in {f.name for f in dataclasses.fields(node)}:
            return False
        tp = typing.get_type_hints(node)[part]
    return True


def _takes_text(tp: Any) -> bool:
    """Whether a field of type `tp` takes a string and no other scalar (an override's raw text is then its value)."""
    options = _members(tp)
    return str in options and not any(o in (bool, int, float) for o in options)


def _members(tp: Any) -> tuple:
    """The types a hint allows: a union's members, else the hint itself."""
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def from_dict(cls: type[T], data: dict, where: str = "<config>", prefix: str = "") -> T:
    if data is None and prefix:  # `model:` with nothing under it
        raise ConfigError(f"{where}: {prefix.rstrip('.')} is empty; give its keys under it, or remove the line")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    moved = [k for k in unknown if k in getattr(cls, "MOVED", {})]
    if moved:
        raise ConfigError(f"{where}: '{prefix}{short(moved[0])[1:-1]}' is no longer a key here; {cls.MOVED[moved[0]]}")
    if unknown:
        said = _known(unknown[0], list(fields), prefix)
        raise ConfigError(f"{where}: unknown key '{prefix}{_key(unknown[0])}'; {said}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(hints[name], value, where, f"{prefix}{name}") for name, value in data.items()}
    for name, value in kwargs.items():
        check_range(fields[name], value, where, f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # raised by the dataclass's own checks (__post_init__): say which file
        raise e if str(e).startswith(where) else ConfigError(f"{where}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'}: {e}") from None


def check_bounds(obj: Any, where: str = "config", prefix: str = "") -> None:
    """Every range declared in a config dataclass (`bounds`) and in the sections it holds, on their current values:
    a config built by `dataclasses.replace` or a constructor skips `from_dict`'s checks (max_steps=0 was taken)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_bounds(value, where, f"{prefix}{f.name}.")
        elif value is not None:
            check_range(f, value, where, f"{prefix}{f.name}")


def check_range(f: dataclasses.Field, value: Any, where: str, key: str) -> None:
    """The range declared in `f`'s metadata (`bounds`), on the value or on each item of a list/tuple/mapping."""
    allowed = f.metadata.get("range")
    if allowed is None:
        return
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) \
        else [(None, value)]
    for k, v in items:
        problem = allowed.problem(v)
        if problem:
            name = key if k is None else f"{key}.{k}" if isinstance(value, dict) else f"{key}[{k}]"
            raise ConfigError(f"{where}: {name} {problem}, got {short(v)}")


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    """`value` (as YAML gives it) checked against the type hint `tp` and converted where YAML is loose (an int
    for a float, "1e-4" for a float, a list for a tuple); a ConfigError naming `key` in `where` otherwise.
    ${NAME} in a string for a field that takes text is expanded first, before a union's options are tried: an unset
    variable in `data.train` (a list or a string) was reported as "must be a list"."""
    if isinstance(value, str) and "$" in value and str in _members(tp):
        value = expand_variables(value, where, key)
    return _coerce(tp, value, where, key)


def _coerce(tp: Any, value: Any, where: str, key: str) -> Any:
    """`coerce` after ${NAME} expansion (a union's options see the expanded value, expanded once)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where, key)
            except ConfigError as e:
                errors.append(e)
        said = f"{where}: {key} must be "  # the value itself fits no option: name them all, not the first
        if len(errors) > 1 and all(str(e).startswith(said) for e in errors):
            wanted = " or ".join(dict.fromkeys(str(e)[len(said):].rsplit(", got ", 1)[0] for e in errors))
            raise ConfigError(f"{said}{wanted}, got {short(value)}")
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, f"{key}.")
    if tp is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {short(value)}")
        args = typing.get_args(tp) or (Any,)
        if origin is tuple and Ellipsis not in args:  # tuple[float, float]: a fixed number of items
            if len(value) != len(args):
                raise ConfigError(f"{where}: {key} must be a list of {len(args)} items, got {short(value)}")
            return tuple(coerce(t, v, where, f"{key}[{i}]") for i, (t, v) in enumerate(zip(args, value)))
        inner = args[0]
        items = [coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {short(value)}")
        key_type, inner = typing.get_args(tp) or (Any, Any)
        return {coerce(key_type, k, where, f"a key of {key}"): coerce(inner, v, where, f"{key}.{k}")
                for k, v in value.items()}
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {key} must be one of {list(typing.get_args(tp))}, got {short(value)}")
        return value
    if tp is float and isinstance(value, str):
        try:
            value = float(value)  # YAML 1.1 reads "1e-4" as a string
        except ValueError:
            pass
    if isinstance(value, _RadixInt):
        if tp is float:
            raise ConfigError(f"{where}: {key} must be a decimal number (e.g. 1e-4), got the hex, octal or binary "
                              f"integer {int(value)}")
        value = int(value)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int past the float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"{where}: {key} must be a finite number, got {short(value)}")
        return number
    if tp is str and isinstance(value, str) and value.startswith("~/"):
        value = os.path.expanduser(value)  # a path in the home folder (a literal ./~ folder was made: `rm -rf ~`...)
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {short(value)}")
    return value


def _known(key: Any, known: list[str], prefix: str) -> str:
    """What to write instead of the unknown `key`: the closest known key when one is close (`max_step` -> max_steps),
    else every known key."""
    close = difflib.get_close_matches(key, known, n=1) if isinstance(key, str) else []
    return f"did you mean '{prefix}{close[0]}'?" if close else f"known keys here: {', '.join(known)}"


def _key(k: Any) -> str:
    """A key for a message: a string as is (shortened), anything else as its repr."""
    return short(k)[1:-1] if isinstance(k, str) else short(k)


def _problem(e: yaml.YAMLError) -> str:
    """PyYAML's description of a syntax error, first line only (the rest points into the text)."""
    return (str(getattr(e, "problem", None) or e).splitlines() or ["syntax error"])[0]


_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|(\{[^}]*\}?|[A-Za-z_][A-Za-z0-9_]*))")  # ${NAME}, or a shell
#   form this module does not expand: $NAME, ${NAME:-default}, ${...}


def expand_variables(value: str, where: str, key: str) -> str:
    """Replace ${NAME} by the environment variable NAME (model folders differ per machine). An unset or empty one
    is an error: `WHISPER_LARGE_V3= llm-srt train ...` made the model folder the current directory. So is another
    shell form ($NAME, ${NAME:-default}): it stayed as text, and `output_dir: runs/${RUN:-x}` made a folder of that
    name. A `$` before anything but a letter, `_` or `{` is kept (there is no escape for a literal `$NAME`)."""
    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name is None:
            raise ConfigError(f"{where}: {key} holds {short(m.group(0))}, which is not expanded: only ${{NAME}} is "
                              "(no $NAME, no ${NAME:-default}); write ${NAME} or the value itself")
        if not os.environ.get(name):
            state = "is set but empty" if name in os.environ else "is not set"
            raise ConfigError(f"{where}: {key} uses ${{{name}}} but that environment variable {state}; "
                              f"export {name}=/path/to/the/folder or override {key}=...")
        return os.environ[name]
    return _VAR.sub(sub, value)


def _assign(data: dict, key: str, value: Any, cls: type) -> None:
    """`key=value` into `data`. A mapping given to a section (a dataclass: `model={init_from: X}`) sets its keys
    one by one, as `model.init_from=X` does: the section's other keys stay as the YAML has them (they went back to
    their defaults: the stage trained the default encoder and LLM). A mapping given to a mapping field
    (`data.tasks={srt: 1.0}`) is that field's whole value."""
    current: Any = data
    for part in key.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if isinstance(value, dict) and isinstance(current, dict) and _is_section(cls, key):
        for name, item in value.items():
            _assign(data, f"{key}.{name}", item, cls)
    else:
        _set_dotted(data, key, value, cls)


def _is_section(cls: type, key: str) -> bool:
    """Whether dotted `key` of `cls` is a section (a dataclass, maybe optional: `model.lora`)."""
    return any(dataclasses.is_dataclass(o) for o in _members(_type_at(cls, key)))


def _set_dotted(data: dict, key: str, value: Any, cls: type) -> None:
    """A section the config leaves null (`lora: null`) takes a key as an empty one would: `model.lora.r=16` is
    `model.lora={r: 16}`, the section's other keys at their defaults."""
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        above = ".".join(parts[:i + 1])
        if node.get(part) is None and _is_section(cls, above):
            node[part] = {}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):  # data.tasks: null, then data.tasks.srt=1
            mapping = _is_section(cls, above) or dict in map(typing.get_origin, _members(_type_at(cls, above)))
            fix = f"give {above} whole, e.g. {above}={{{parts[i + 1]}: ...}}" if mapping else f"set {above} itself"
            raise ConfigError(f"override {short(key)}: {above} is {short(node)}, not a mapping of keys; {fix}")
    node[parts[-1]] = value
