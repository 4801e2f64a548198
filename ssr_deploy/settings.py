"""Settings declared once. A run's config is a dataclass; each field a user may set carries
its command-line flag, type and help (``setting``), and the command's options are generated
from the fields (``options``), read back into the config (``config_from``) and mapped for
``--resume`` (``parameters``). Adding a search or train option is one field.

Fields that share a flag form one comma-separated option (``--loss-weights 100,30,15,15,1``
sets five weights). The value types (``SIZE``, ``POSITIVE``, ...) refuse NaN, inf and sizes
past ``limits.MAX_SIDE`` in one line."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from ssr_deploy.limits import MAX_SIDE


class Size(click.ParamType):
    """``HxW`` in pixels, e.g. ``512x1024``; each side 1 to MAX_SIDE."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(value))
        if not match or 0 in (h := int(match[1]), w := int(match[2])):
            self.fail(f"{value!r} is not a size; write HEIGHTxWIDTH, e.g. 512x1024", param, ctx)
        if max(h, w) > MAX_SIDE:
            self.fail(f"{value!r}: a side above {MAX_SIDE} pixels is not supported; give a size "
                      "like 512x1024 (frames are resized to it)", param, ctx)
        return h, w


class Number(click.ParamType):
    """A finite float within bounds (click.FloatRange lets NaN and inf through)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
        self.low, self.high, self.low_open, self.high_open = low, high, low_open, high_open

    def convert(self, value, param, ctx):
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        below = self.low is not None and (x < self.low or (self.low_open and x == self.low))
        above = self.high is not None and (x > self.high or (self.high_open and x == self.high))
        if not math.isfinite(x) or below or above:
            self.fail(f"{value!r} is not {self.rule()}", param, ctx)
        return x

    def rule(self) -> str:
        lo = "" if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        hi = "" if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        return "a finite number" + (f" {lo}" if lo else "") + (" and" if lo and hi else "") + (
            f" {hi}" if hi else "")


class Ints(click.ParamType):
    """``n`` whole numbers from ``low`` up, comma-separated (``9,3,9``)."""

    def __init__(self, n: int, example: str, low: int = 1) -> None:
        self.n, self.example, self.low = n, example, low
        self.name = ",".join(["N"] * n)

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            parts = ()
        if len(parts) != self.n or min(parts) < self.low:
            self.fail(f"{value!r}: give {_COUNTS.get(self.n, self.n)} whole numbers of at "
                      f"least {self.low}, e.g. {self.example}", param, ctx)
        return parts


class Classes(click.ParamType):
    """Output classes: a number, or the genotype (zoo name or JSON) or dataset
    (``cityscapes:DIR``, ``folder:DIR``, ``synthetic``) to take them from."""

    name = "N|GENOTYPE|DATA"

    def convert(self, value, param, ctx):
        from ssr_deploy.errors import SsrDeployError

        if isinstance(value, int):
            return value
        value = str(value).strip()
        if value.isdigit():
            if not 1 <= int(value) <= 65536:
                self.fail(f"{value}: 1 to 65536 classes", param, ctx)
            return int(value)
        if value.partition(":")[0] in ("cityscapes", "folder", "synthetic"):
            from ssr_deploy.data.datasets import open_dataset

            return len(open_dataset(value, "train").classes)
        from ssr_deploy.genotype import Genotype

        try:
            return Genotype.load(value).num_classes
        except SsrDeployError as e:
            self.fail(f"{value!r} is not a number of classes, a genotype or a dataset ({e})",
                      param, ctx)


SIZE = Size()
CLASSES = Classes()
POSITIVE = Number(0, low_open=True)
NON_NEGATIVE = Number(0)
FRACTION = Number(0, 1, low_open=True, high_open=True)


@dataclass(frozen=True)
class Flag:
    """How a config field is given on the command line. ``type``: a click type (None: the
    default's own); ``shown``: the default as help shows it where the field's own default
    (None) is resolved later; ``part``: the field's name in a shared flag's list; ``kept``:
    a resumed run holds to the run's value (False: a setting of the machine, such as the
    device, free to change); ``multiple``: the flag may be given more than once, its values
    (tuples) joined."""

    name: str
    help: str = ""
    type: Any = None
    required: bool = False
    shown: str | None = None
    part: str | None = None
    kept: bool = True
    multiple: bool = False


def setting(default: Any, flag: str, help: str = "", **how: Any) -> Any:
    """A config field that ``flag`` sets: ``lr: float = setting(5e-4, "--lr", type=POSITIVE)``."""
    return dataclasses.field(default=default, metadata={"flag": Flag(flag, help, **how)})


#: ``--data`` wherever images are read for training, search or evaluation
DATA_HELP = "cityscapes:DIR, folder:DIR or synthetic[:N]."


def data_source() -> Any:
    """``--data``, required."""
    return setting("", "--data", DATA_HELP, required=True)


def input_size(default: tuple[int, int] = (512, 1024)) -> Any:
    """``--size HxW``: the network's input size."""
    return setting(default, "--size", type=SIZE)


def count(default: int, flag: str, help: str = "", low: int = 1) -> Any:
    """A whole number from ``low`` up (epochs, batch, steps)."""
    return setting(default, flag, help, type=click.IntRange(min=low))


def _flags(config: type) -> dict[str, list[dataclasses.Field]]:
    """Flag name -> the fields it sets, in the config's field order."""
    out: dict[str, list[dataclasses.Field]] = {}
    for f in dataclasses.fields(config):
        if "flag" in f.metadata:
            out.setdefault(f.metadata["flag"].name, []).append(f)
    return out


def _param(flag: str, fields: list[dataclasses.Field]) -> str:
    return fields[0].name if len(fields) == 1 else flag.lstrip("-").replace("-", "_")


def _shown(f: dataclasses.Field) -> str | None:
    """The default as help shows it; None or "": not shown."""
    flag = f.metadata["flag"]
    if flag.shown is not None or f.default is None or f.default == "":
        return flag.shown
    if isinstance(flag.type, Size):
        return "{}x{}".format(*f.default)
    if isinstance(f.default, tuple):
        return ",".join(map(str, f.default))
    return f"{f.default:g}" if isinstance(f.default, float) else str(f.default)


class _Parts(click.ParamType):
    """One flag for several fields: comma-separated values, each of the item type."""

    def __init__(self, item: click.ParamType, labels: list[str], example: str) -> None:
        self.item, self.labels, self.example = item, labels, example
        self.name = ",".join(labels)

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).split(",")
        try:
            if len(parts) != len(self.labels):
                raise ValueError
            return tuple(self.item.convert(v.strip(), None, None) for v in parts)
        except (ValueError, click.BadParameter):
            count = _COUNTS.get(len(self.labels), str(len(self.labels)))
            rule = (self.item.rule().replace("a finite number", f"{count} finite numbers")
                    if isinstance(self.item, Number) else f"{count} values")
            self.fail(f"{value!r}: give {rule}, separated by commas, e.g. {self.example}",
                      param, ctx)


_COUNTS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def options(config: type) -> Callable:
    """A decorator adding a click option for each flag of ``config``, in field order."""
    def decorate(command: Callable) -> Callable:
        for flag, fields in reversed(_flags(config).items()):
            first = fields[0].metadata["flag"]
            if len(fields) > 1:
                example = ",".join(_shown(f) for f in fields)
                labels = [f.metadata["flag"].part for f in fields]
                option = click.option(flag, _param(flag, fields), help=first.help,
                                      default=example, show_default=True,
                                      type=_Parts(first.type, labels, example))
            elif isinstance(fields[0].default, bool):  # an on/off switch, off by default
                option = click.option(flag, fields[0].name, is_flag=True, help=first.help)
            elif first.multiple:
                option = click.option(flag, fields[0].name, type=first.type, multiple=True,
                                      help=first.help)
            else:
                f, shown = fields[0], _shown(fields[0])
                option = click.option(
                    flag, f.name, type=first.type, required=first.required, help=first.help,
                    default=None if first.required else shown if shown else f.default,
                    show_default=bool(shown) and not first.required)
            command = option(command)
        return command
    return decorate


def given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not its default)."""
    source = ctx.get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT)


def config_from(config: type, ctx: click.Context, **fixed: Any) -> Any:
    """The config the command's parsed options give; a shared flag not given leaves its
    fields at their defaults; ``fixed``: fields the command sets itself."""
    kwargs: dict[str, Any] = {}
    for flag, fields in _flags(config).items():
        param = _param(flag, fields)
        value = ctx.params[param]
        if len(fields) == 1 and fields[0].metadata["flag"].multiple:
            kwargs[fields[0].name] = tuple(v for one in value for v in one)
        elif len(fields) == 1:
            kwargs[fields[0].name] = value
        elif given(ctx, param):
            kwargs.update({f.name: v for f, v in zip(fields, value, strict=True)})
    return config(**{**kwargs, **fixed})


def parameters(config: type) -> dict[str, str]:
    """Config field -> the click parameter that sets it, for the settings a resumed run
    holds to (``--resume``)."""
    return {f.name: _param(flag, fields) for flag, fields in _flags(config).items()
            for f in fields if f.metadata["flag"].kept}


def check_saved(config: type, saved: dict[str, Any], source: str) -> None:
    """Each setting a run saved (``source``'s config) as its flag would take it: an edited or
    damaged state (epochs NaN, batch -5, lr inf) is refused in one line, not run."""
    from ssr_deploy.errors import SsrDeployError

    for f in dataclasses.fields(config):
        flag = f.metadata.get("flag")
        value = saved.get(f.name)
        if flag is None or flag.type is None or value is None or (value == f.default):
            continue
        given = "{}x{}".format(*value) if isinstance(flag.type, Size) and isinstance(
            value, list | tuple) and len(value) == 2 else value
        try:
            if isinstance(given, bool) or (isinstance(flag.type, click.ParamType)
                                            and isinstance(given, list | tuple | dict)):
                raise click.BadParameter("not a single value")
            flag.type.convert(given, None, None)
        except (click.BadParameter, TypeError, ValueError):
            raise SsrDeployError(f"{source} holds {flag.name}{' ' + flag.part if flag.part else ''}"
                                 f" = {str(value)[:40]}, which the option refuses: the file was"
                                 " edited or damaged; start again with a new --out") from None


MAX_EPOCHS = 1_000_000  # no run has more: a saved epoch past it is an edited file


def check_counter(value: Any, name: str, high: int, source: str) -> int:
    """A run's saved counter (epoch, step): a whole number 0 to ``high``."""
    from ssr_deploy.errors import SsrDeployError

    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise SsrDeployError(f"{source} says {name} {str(value)[:24]}, not 0 to {high}: the file "
                             "was edited or damaged; start again with a new --out")
    return value

