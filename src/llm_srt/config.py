"""Typed configs from YAML + `key=value` overrides (torchtune / litgpt style).

A config is a tree of dataclasses; the dataclass fields are the schema. Unknown keys and wrong types are errors
that name the file and the dotted key. A dataclass may list keys it no longer takes in a class attribute
`MOVED: ClassVar[dict[str, str]]` (old key -> what to write instead); using one is an error that says so.
Code composes configs with `dataclasses.replace`; `key=value` strings are for people on the command line.
"""

import dataclasses
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build `cls` from a YAML file, then apply `a.b=value` overrides (values parsed as YAML)."""
    data: dict = {}
    where = str(path) if path else "<defaults>"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
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
            raise ConfigError(f"override {item!r}: write overrides as key=value, e.g. optim.lr=1e-5")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({_problem(e)}); "
                              "quote it or fix the brackets") from None
        if isinstance(parsed, str) and "#" in value and not value.lstrip().startswith(("'", '"')):
            parsed = value.strip()  # "output_dir=runs/demo #1": a '#' on a command line is no YAML comment
        _set_dotted(data, key.strip(), parsed)
        where = f"{where} (with overrides)"
    return from_dict(cls, data, where)


def from_dict(cls: type[T], data: dict, where: str = "<config>", prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    moved = [k for k in unknown if k in getattr(cls, "MOVED", {})]
    if moved:
        raise ConfigError(f"{where}: '{prefix}{moved[0]}' is no longer a key here; {cls.MOVED[moved[0]]}")
    if unknown:
        raise ConfigError(f"{where}: unknown key '{prefix}{unknown[0]}'; known keys here: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(hints[name], value, where, f"{prefix}{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:  # raised by the dataclass's own checks (__post_init__): say which file
        raise e if str(e).startswith(where) else ConfigError(f"{where}: {e}") from None
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'}: {e}") from None


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
    for a float, "1e-4" for a float, a list for a tuple); a ConfigError naming `key` in `where` otherwise."""
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
                return coerce(option, value, where, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, f"{key}.")
    if tp is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        args = typing.get_args(tp) or (Any,)
        if origin is tuple and Ellipsis not in args:  # tuple[float, float]: a fixed number of items
            if len(value) != len(args):
                raise ConfigError(f"{where}: {key} must be a list of {len(args)} items, got {value!r}")
            return tuple(coerce(t, v, where, f"{key}[{i}]") for i, (t, v) in enumerate(zip(args, value)))
        inner = args[0]
        items = [coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        _, inner = typing.get_args(tp) or (Any, Any)
        return {k: coerce(inner, v, where, f"{key}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {key} must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string
        except ValueError:
            pass
    if tp is str and isinstance(value, str) and "${" in value:
        value = _expand(value, where, key)
    if isinstance(tp, type) and not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {value!r}")
    return value


def _problem(e: yaml.YAMLError) -> str:
    """PyYAML's description of a syntax error, first line only (the rest points into the text)."""
    return (str(getattr(e, "problem", None) or e).splitlines() or ["syntax error"])[0]


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: str, where: str, key: str) -> str:
    """Replace ${NAME} by the environment variable NAME (model folders differ per machine)."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise ConfigError(f"{where}: {key} uses ${{{m.group(1)}}} but that environment variable is not set; "
                              f"export {m.group(1)}=/path/to/the/folder or override {key}=...")
        return os.environ[m.group(1)]
    return _VAR.sub(sub, value)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {key}: {part} is not a mapping")
    node[parts[-1]] = value
