"""YAML in, validated config objects out (and back to plain mappings); every error names the key, the bad
value and what is allowed, with a 'did you mean' for a misspelt key.

`load_config(path)` reads a YAML job config, `from_mapping(raw)` builds one from a plain mapping,
`load_run_config(run)` reads the config a run folder was made with.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from .errors import ConfigError, invalid
from .schema import JobConfig

__all__ = ["build", "from_mapping", "load_config", "load_run_config", "to_dict"]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as exc:
                errors.append(exc)
        others = [a for a in args if a is not type(None)]
        if len(others) == 1 and dataclasses.is_dataclass(others[0]) and isinstance(value, dict):
            raise errors[0]  # an optional section: its own message names the inner key and the fix
        raise invalid(key, value, f"expected {_type_name(tp)}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise invalid(key, value, f"allowed: {_type_name(tp)}")
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise invalid(key, value, f"expected {_type_name(tp)}")
        return tuple(_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise invalid(key, value, "expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise invalid(key, value, "expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise invalid(key, value, "expected a whole number")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):  # YAML 1.1 reads 1e-4 as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise invalid(key, value, "expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise invalid(key, value, "expected text")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def build(cls: type, mapping: Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys and wrong types by name."""
    where = prefix or "the config"
    if not isinstance(mapping, dict):
        raise invalid(prefix or "<top level>", mapping, f"{where} must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"config key '{full}' is not known; {hint}allowed keys: {', '.join(fields)}")
        kwargs[key] = _convert(hints[key], value, full)
    missing = [
        name for name, f in fields.items()
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"config key '{prefix + '.' if prefix else ''}{missing[0]}' is required but missing")
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        msg = str(exc)
        if prefix and msg.startswith("config key '") and not msg.startswith(f"config key '{prefix}"):
            msg = msg.replace("config key '", f"config key '{prefix}.", 1)
        raise ConfigError(msg) from None


def _sources(value: Any, key: str) -> list[dict[str, Any]]:
    """A split may be one source, a list of sources, or a bare path string."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise invalid(key, item, "a source is a path or a mapping with at least 'path'")
        out.append(item)
    return out


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first_line: int, second_line: int) -> None:
        super().__init__(key)
        self.key, self.first_line, self.second_line = key, first_line, second_line


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (plain YAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges are YAML's own way of reusing a section
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _StrictLoader.construct_mapping)


def load_config(path: str | Path) -> JobConfig:
    """Read and validate a YAML job config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass the path to a YAML job config")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
                          f"offset {exc.start}); save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as dup:
        raise ConfigError(
            f"{path}: key {dup.key!r} is written twice in one section (line {dup.first_line} and line "
            f"{dup.second_line}); YAML would silently keep only the second. Merge the two into one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        tabs = " (YAML indents with spaces, never tabs)" if "'\\t'" in problem else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{at}: {problem}{tabs}; fix it there") from None
    return from_mapping(raw, config_path=str(path))


def from_mapping(raw: Any, config_path: str | None = None) -> JobConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"the config must be a mapping of keys to values, got {type(raw).__name__}")
    raw = dict(raw)
    if isinstance(raw.get("data"), dict):
        data = dict(raw["data"])
        for split in ("train", "eval", "test"):
            if split in data:
                data[split] = _sources(data[split], f"data.{split}")
        raw["data"] = data
    augment = (raw.get("distill") or {}).get("augment") if isinstance(raw.get("distill"), dict) else None
    if isinstance(augment, dict) and "unlabelled" in augment and augment["unlabelled"] is not None:
        raw["distill"] = {**raw["distill"], "augment": {**augment, "unlabelled": _sources(
            augment["unlabelled"], "distill.augment.unlabelled")}}
    task = raw.get("task")
    if isinstance(task, dict) and isinstance(task.get("labels"), list):
        # YAML reads `labels: [0, 1]` as numbers; a label is a name, compared with the data's text
        raw["task"] = {**task, "labels": [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                                          for v in task["labels"]]}
    if config_path is not None:
        raw["config_path"] = config_path
    return build(JobConfig, raw)


def to_dict(obj: Any) -> Any:
    """Plain, JSON-ready form of a config object (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_run_config(run: str | Path) -> JobConfig:
    """The resolved config of a run directory (runs/<name>/config.json), or a YAML job config."""
    path = Path(run)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        return load_config(path)
    resolved = path / "config.json"
    if not resolved.is_file():
        raise ConfigError(f"{str(run)!r} is not a run directory (no config.json); give runs/<name> or the job's "
                          "YAML config")
    raw = json.loads(resolved.read_text())
    return from_mapping(raw, config_path=raw.pop("config_path", None))
