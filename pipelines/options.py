"""Each setting declared once: a config dataclass field carries its default, help and flag.

A field declared with :func:`option` (or any field whose metadata has a
``help``, as :class:`~riverflink.operators.limits.Limits` does without
importing this module) is a setting:

* its **flag** is ``--`` + the field name with dashes, unless ``flag`` says otherwise;
* its **TOML key** (``riverflink --config``) is the flag without its dashes;
* its **default** is the field's default in the command's config class
  (``TrainConfig``, ``ServeConfig``, ``DemoConfig``), nested configs included
  (``FlinkConfig``, ``Topics``, ``Limits``, ``KafkaSettings``).

:func:`add_options` derives a command's flags from its config class,
:func:`from_args` builds the config back from parsed flags, and
:func:`to_argv` turns a config into the argument list that reproduces it
(what ``demo`` and the benches hand to ``riverflink train`` / ``serve``).

>>> from dataclasses import dataclass, field
>>> @dataclass(frozen=True)
... class Small:
...     replicas: int = option(4, "replica keys")
...     sync_every: int | None = option(100, "events between syncs (0: never)", none_as=0)
>>> p = argparse.ArgumentParser()
>>> add_options(p, Small)
>>> from_args(Small, p.parse_args(["--sync-every", "0"]))
Small(replicas=4, sync_every=None)
>>> to_argv(Small(replicas=8))
['--replicas', '8']
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Iterator

_UNSET = object()


@dataclass(frozen=True)
class Option:
    help: str
    flag: str | None = None
    choices: tuple | None = None
    metavar: str | None = None
    #: the default comes from this environment variable when it is set
    env: str | None = None
    #: the flag value that stands for ``None`` in the config (``--sync-every 0``: never)
    none_as: Any = _UNSET
    #: a boolean field set to False by a bare flag (``--no-create-topics``)
    negate: bool = False
    #: turns the flag's text into the field's value (default: the field's type)
    parse: Any = None

    @classmethod
    def of(cls, f: dataclasses.Field) -> "Option | None":
        meta = f.metadata
        if "option" in meta:
            return meta["option"]
        if "help" in meta:
            return cls(meta["help"])
        return None


def option(default: Any = _UNSET, help: str = "", *, default_factory: Any = _UNSET, **kw: Any) -> Any:
    """A dataclass field that is also a command-line flag and a TOML key (see the module docstring)."""
    meta = {"option": Option(help, **kw)}
    if default_factory is not _UNSET:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested(default_factory: Any, only: tuple[str, ...] | None = None) -> Any:
    """A nested config whose settings are flags of the same command (``only``: just these fields)."""
    return dataclasses.field(default_factory=default_factory, metadata={"nested": only or True})


@dataclass(frozen=True)
class Setting:
    """One flag of a command: where it lives in the config and its default there."""

    path: tuple[str, ...]
    option: Option
    default: Any
    type: Any

    @property
    def flag(self) -> str:
        return self.option.flag or "--" + self.path[-1].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def cli_default(self) -> Any:
        if self.option.env and os.environ.get(self.option.env):
            return os.environ[self.option.env]
        if self.default is None and self.option.none_as is not _UNSET:
            return self.option.none_as
        return self.default


def settings(cls: type, defaults: Any = None) -> Iterator[Setting]:
    """Every setting of config class ``cls`` (defaults from ``defaults``, an instance, when given)."""
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        if "nested" in f.metadata:
            only = f.metadata["nested"]
            for s in settings(type(value), value):
                if only is True or s.path[0] in only:
                    yield dataclasses.replace(s, path=(f.name, *s.path))
            continue
        opt = Option.of(f)
        if opt is not None:
            yield Setting((f.name,), opt, value, f.type)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _kind(s: Setting) -> Any:
    if isinstance(s.default, bool) or "bool" in str(s.type):
        return bool
    for t in (int, float):
        if isinstance(s.default, t) or str(s.type).startswith(t.__name__):
            return t
    return str


def add_options(parser: argparse.ArgumentParser, cls: type, only: tuple[str, ...] | None = None) -> None:
    """Add the flags of config class ``cls`` to ``parser`` (``only``: the settings of these fields)."""
    for s in settings(cls):
        if only is not None and s.path[0] not in only:
            continue
        kind, opt, default = _kind(s), s.option, s.cli_default()
        if kind is bool:
            parser.add_argument(s.flag, action="store_true", default=False, help=opt.help)
            continue
        shown = "" if default in (None, "") or "(default" in opt.help else f" (default: {default})"
        parser.add_argument(s.flag, type=opt.parse or kind, default=default, choices=opt.choices, metavar=opt.metavar,
                            help=(opt.help + shown).replace("%", "%%"))


def _config_value(s: Setting, value: Any) -> Any:
    if s.option.negate:
        return not value
    if s.option.none_as is not _UNSET and value == s.option.none_as:
        return None
    return value


def from_args(cls: type, args: argparse.Namespace, **given: Any) -> Any:
    """The config of class ``cls`` that the parsed flags ``args`` describe; ``given`` fields win."""
    values: dict = {}
    for s in settings(cls):
        if hasattr(args, s.dest):
            node = values
            for part in s.path[:-1]:
                node = node.setdefault(part, {})
            node[s.path[-1]] = _config_value(s, getattr(args, s.dest))
    return _build(cls, values, given)


def _build(cls: type, values: dict, given: dict, defaults: Any = None) -> Any:
    """``cls`` from setting values; a class with a ``named`` constructor (``Topics``) derives the rest itself."""
    kwargs = dict(given)
    for f in dataclasses.fields(cls):
        if f.name in kwargs:
            continue
        if f.name in values:
            inner = _field_default(f) if "nested" in f.metadata else None
            kwargs[f.name] = _build(type(inner), values[f.name], {}, inner) if inner is not None else values[f.name]
        elif defaults is not None and f.init:
            kwargs[f.name] = getattr(defaults, f.name)
    return getattr(cls, "named", cls)(**kwargs)


def to_argv(cfg: Any) -> list[str]:
    """The flags that make a command build ``cfg``: every setting that differs from its default."""
    out: list[str] = []
    for s in settings(type(cfg)):
        value = cfg
        for part in s.path:
            value = getattr(value, part)
        if value == s.default:
            continue
        if s.option.negate:
            out += [s.flag] if not value else []
        elif isinstance(value, bool):
            out += [s.flag] if value else []
        elif value is None:
            out += [s.flag, str(s.option.none_as)] if s.option.none_as is not _UNSET else []
        else:
            out += [s.flag, str(value)]
    return out
