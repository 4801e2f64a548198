"""The group, shared option types and helpers; `ssr-deploy info`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys

import click

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.limits import MAX_SIDE

PAPER_SIZES = ((512, 1024), (768, 1536), (1024, 2048))


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


SIZE = Size()


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


POSITIVE = Number(0, low_open=True)
NON_NEGATIVE = Number(0)
FRACTION = Number(0, 1, low_open=True, high_open=True)


def given(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` was given on the command line (not its default)."""
    source = ctx.get_parameter_source(name)
    return source not in (None, click.core.ParameterSource.DEFAULT)


def refuse_without(ctx: click.Context, pairs: dict[str, tuple[str, bool]]) -> None:
    """Refuse options that only apply with another: ``{"max_batch": ("--dynamic-batch",
    dynamic_batch)}`` -> an error if --max-batch is given while --dynamic-batch is off."""
    for name, (needed, on) in pairs.items():
        if given(ctx, name) and not on:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} applies with {needed} only; add {needed} or drop "
                                   f"{flag}")


@contextlib.contextmanager
def stage_bar(stages: tuple[str, ...], enabled: bool = True):
    """A tqdm bar over named stages (on a terminal only); yields ``progress(stage)``."""
    from tqdm import tqdm

    bar = tqdm(total=len(stages), disable=None if enabled else True, leave=False,
               bar_format="{desc:<10} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
    seen = []

    def progress(stage: str) -> None:
        if seen:
            bar.update(1)
        seen.append(stage)
        bar.set_description(stage)

    try:
        yield progress
    finally:
        bar.close()


TRAIN_EXTRA = {"torch", "onnxscript", "onnxslim"}


class Group(click.Group):
    """Turns SsrDeployError, OSError (the path and what its errno means) and MemoryError into
    one line on stderr and exit status 1, no traceback; so is a command that needs the
    [train] extra on a runtime-only install."""

    def invoke(self, ctx):
        import signal
        import threading

        hosted = []  # hooks an embedding host (a test runner) had: given back at the end
        if threading.current_thread() is threading.main_thread():
            global _CLI_PID
            _CLI_PID = os.getpid()
            signal.signal(signal.SIGTERM, _terminate)  # as Ctrl-C: the same clean-up paths
            for module, name, ours in ((sys, "unraisablehook", _unraisable),
                                       (threading, "excepthook", _thread_error)):
                if getattr(module, name) is not getattr(module, f"__{name}__"):
                    hosted.append((module, name, getattr(module, name)))
                setattr(module, name, ours)  # kept to the process's end where it is ours
        try:
            return super().invoke(ctx)
        except SsrDeployError as e:
            _fail(str(e))
        except OSError as e:
            from ssr_deploy.io import describe_os_error

            _fail(describe_os_error(e, "read or write"))
        except MemoryError:
            _fail("out of memory; use a smaller --size, --batch or model, or free memory")
        except KeyboardInterrupt as e:
            stopped = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
            click.echo(f"{stopped}: files finished before are kept, none is half-written "
                       "(train/search: --resume continues)", err=True)
            sys.exit(143 if isinstance(e, Terminated) else 130)
        except ImportError as e:
            if (e.name or "").split(".")[0] not in TRAIN_EXTRA:
                raise
            click.echo(f"error: this command needs {e.name.split('.')[0]}, which a runtime-only "
                       "install leaves out: pip install torch (the build for your machine), "
                       "then pip install 'ssr-deploy[train]'", err=True)
            sys.exit(1)
        finally:
            for module, name, theirs in hosted:
                setattr(module, name, theirs)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so a killed run cleans up as an interrupted one."""


_CLI_PID = None  # the process whose SIGTERM means "stop the run"
_STOPPING = False  # a SIGTERM arrived: the run is stopping


def _terminate(signum, frame) -> None:
    """Raise Terminated where the run is; should it land where Python swallows exceptions (a
    finalizer), a watchdog still ends the process in one line after 20 s (every write is
    atomic, so nothing is half-written; a left lock is taken over by the next run). A forked
    child (a DataLoader worker, which its loader stops with SIGTERM) inherits this handler:
    there SIGTERM keeps its default meaning, no traceback, no second message."""
    import signal
    import threading

    global _STOPPING
    if os.getpid() != _CLI_PID:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    _STOPPING = True

    def give_up() -> None:
        click.echo("terminated (SIGTERM): files finished before are kept, none is "
                   "half-written (train/search: --resume continues)", err=True)
        os._exit(143)

    watchdog = threading.Timer(20.0, give_up)
    watchdog.daemon = True
    watchdog.start()
    raise Terminated()


def _unraisable(info) -> None:
    """An interrupt that landed where Python cannot raise it (a finalizer; the fork hooks
    a DataLoader's workers run): deliver it again a moment later, from a thread, so that it
    lands in the run's own code. Once the run is stopping, the errors of objects the
    interrupt left half-built (a DataLoader iterator stopped while starting its workers
    fails in its ``__del__``) are its echo, not news: dropped. Anything else as Python
    reports it."""
    import signal
    import threading

    if isinstance(info.exc_value, KeyboardInterrupt):
        again = signal.SIGTERM if isinstance(info.exc_value, Terminated) else signal.SIGINT
        threading.Timer(0.05, os.kill, (os.getpid(), again)).start()
        return
    if not _STOPPING:
        sys.__unraisablehook__(info)


def _thread_error(args) -> None:
    """A thread's uncaught error, as Python reports it, unless the run is stopping (then a
    thread that loses what the main thread tore down is the interrupt's echo)."""
    import threading

    if not _STOPPING:
        threading.__excepthook__(args)


def _fail(text: str) -> None:
    click.echo(f"error: {' '.join(text.split())}", err=True)
    sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssr-deploy")
def main() -> None:
    """Search, retrain, export and run SSR real-time segmentation networks.

    \b
    ssr-deploy info ssr-cityscapes                        params, MACs, layers
    ssr-deploy train --genotype ssr-cityscapes --data cityscapes:DIR --out runs/ssr
    ssr-deploy eval --weights runs/ssr/best.pt --data cityscapes:DIR
    ssr-deploy export onnx runs/ssr/best.pt -o model.onnx --input uint8-nhwc-bgr --output labels
    ssr-deploy export engine model.onnx -o model.engine
    ssr-deploy bench model.engine --batch 1,8 --json bench.json
    ssr-deploy video drive.mp4 --model model.engine -o drive_seg.mp4
    """


@main.command()
@click.argument("genotype", required=False)
@click.option("--size", "sizes", type=SIZE, multiple=True,
              help="Input size to count MACs at; repeatable. [default: 512x1024, 768x1536, "
                   "1024x2048]")
@click.option("--classes", "num_classes", type=click.IntRange(1, 65536), default=None,
              help="Number of output classes. [default: the genotype's class list]")
@click.option("--list", "list_zoo", is_flag=True, help="List the built-in genotypes.")
@click.option("--lut", "lut_path", type=click.Path(dir_okay=False),
              help="A latency table (`ssr-deploy lut build`): predict the latency on its "
                   "device, per layer.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(genotype: str | None, sizes: tuple, num_classes: int | None, list_zoo: bool,
         lut_path: str | None, as_json: bool) -> None:
    """Parameters, MACs per input size and a per-layer table of a genotype.

    GENOTYPE is a zoo name or a path to a genotype JSON file. MACs are
    multiply-accumulates (1 MAC = 2 FLOPs); the paper's "FLOPs" column counts MACs.

    \b
    Examples:
      ssr-deploy info ssr-cityscapes
      ssr-deploy info runs/search/genotype.json --size 1024x2048 --json
      ssr-deploy info runs/search/genotype.json --lut lut.json
      ssr-deploy info --list
    """
    from ssr_deploy import report

    if list_zoo:
        rows = report.zoo_summary()
        click.echo(json.dumps(rows, indent=2) if as_json else report.format_zoo(rows))
        return
    if genotype is None:
        raise click.UsageError("give a GENOTYPE (a zoo name or a JSON path), or --list")
    summary = report.genotype_summary(genotype, sizes or PAPER_SIZES, num_classes,
                                      progress=not as_json, lut=lut_path)
    click.echo(json.dumps(summary, indent=2) if as_json else report.format_summary(summary))


def resume_settings(ctx: click.Context, config, saved: dict, params: dict[str, str],
                    override: bool):
    """``config`` for a resumed run: every setting not given on the command line is the run's
    own (from ``saved``, the checkpoint's config); a given one that differs from the run's is
    refused unless ``override``. ``params`` maps config fields to their CLI parameters.
    Returns (config, the changed settings as text)."""
    import dataclasses

    from ssr_deploy.io import jsonable

    taken, conflicts = {}, {}
    for field, param in params.items():
        if field not in saved:
            continue
        old, new = saved[field], jsonable(getattr(config, field))
        if old == new:
            continue
        if given(ctx, param):
            conflicts.setdefault(param, []).append((field, new, old))
        else:
            taken[field] = tuple(old) if isinstance(old, list) else old
    flags = {p.name: max(p.opts, key=len) for p in ctx.command.params}
    changes = [f"{flags.get(p, p)} " + ", ".join(
        f"{_setting(n)} (the run used {_setting(o)})" for _, n, o in rows)
        for p, rows in conflicts.items()]
    if changes and not override:
        raise click.UsageError(f"--resume continues a run with its own settings, and "
                               f"{'; '.join(changes)}: drop the option to continue as it ran, "
                               "or add --override to change it from here on")
    return dataclasses.replace(config, **taken), changes


def _setting(value) -> str:
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def describe_settings(config, fields: tuple[str, ...]) -> str:
    return ", ".join(f"{f.replace('_', ' ')} {_setting(getattr(config, f))}" for f in fields)


def check_run_folder(out: str, resume: bool, checkpoint: str) -> None:
    """A run folder (train/search --out) must be new or empty unless --resume continues the
    run in it: outputs of two runs never mix."""
    from pathlib import Path

    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise click.UsageError(f"--out {out} is a file; give a folder path")
    state = folder / checkpoint
    if resume:
        if not state.is_file():
            raise SsrDeployError(f"--resume: {state} does not exist; run without --resume "
                                 "first")
        return
    # config.json alone: a run that stopped before its first epoch was saved
    if folder.is_dir() and any(p for p in folder.iterdir()
                               if not p.name.startswith(".") and p.name != "config.json"):
        what = f"a run ({checkpoint})" if state.is_file() else "files"
        raise SsrDeployError(f"{out} already holds {what}; add --resume to continue it, or "
                             "choose another --out")
