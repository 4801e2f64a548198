"""What commands share in reading their options: the options of every command that takes a
model (declared once, as ``settings`` fields), options that apply only with another,
``--quiet``, and a bar over a command's stages (whether one was given: ``settings.given``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import click

from ssr_deploy.backends import BACKENDS
from ssr_deploy.settings import SIZE, given, setting
from ssr_deploy.spec import HINT_PRECISIONS

#: the size a model runs at when neither it nor --size says
DEFAULT_SIZE = (512, 1024)


@dataclass(frozen=True)
class ModelSize:
    """``--size`` wherever a model is given (``eval``, ``export onnx``, ``export openvino``
    and every command that runs one): by default the model's own, resolved by
    ``model_size``."""

    size: tuple[int, int] | None = setting(
        None, "--size", "Input size of a checkpoint or genotype (an exported model keeps its "
        "own). [default: the checkpoint's training size; 512x1024 for a genotype]", type=SIZE)


@dataclass(frozen=True)
class RunModel(ModelSize):
    """What every command that runs a model takes (``bench``, ``profile``, ``video``,
    ``serve``), declared once."""

    backend: str | None = setting(None, "--backend", "The runtime backend. [default: by the "
                                  "model's file type]", type=click.Choice(BACKENDS))
    device: str | None = setting(None, "--device", "cpu, cuda or cuda:N. [default: the "
                                 "backend's]")
    precision: str | None = setting(None, "--precision", "openvino: compute in fp32 or bf16. "
                                    "[default: the precision the IR was verified at; fp32 for "
                                    "an ONNX]", type=click.Choice(HINT_PRECISIONS))


def model_size(model: str | None, size: tuple[int, int] | None) -> tuple[int, int]:
    """``--size`` as given, else what ``model`` was trained at (a ``.pt`` whose run recorded
    its size), else 512x1024."""
    if size is not None:
        return tuple(size)
    if model and str(model).lower().endswith((".pt", ".pth")):
        from pathlib import Path

        if Path(model).is_file():
            from ssr_deploy.model.checkpoint import read_checkpoint

            trained = (read_checkpoint(model).get("config") or {}).get("size")
            if (isinstance(trained, list | tuple) and len(trained) == 2
                    and all(isinstance(v, int) and 0 < v <= 16384 for v in trained)):
                return tuple(trained)
    return DEFAULT_SIZE


def refuse_without(ctx: click.Context, pairs: dict[str, tuple[str, bool]]) -> None:
    """Refuse options that only apply with another: ``{"max_batch": ("--dynamic-batch",
    dynamic_batch)}`` -> an error if --max-batch is given while --dynamic-batch is off."""
    for name, (needed, on) in pairs.items():
        if given(ctx, name) and not on:
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} applies with {needed} only; add {needed} or drop "
                                   f"{flag}")


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    from ssr_deploy.progress import set_quiet

    set_quiet(value)
    return value


#: ``--quiet`` on every long job: no progress bar and no progress lines (results still print)
quiet_option = click.option("--quiet", "-q", is_flag=True, expose_value=False, is_eager=True,
                            callback=_set_quiet, help="No progress bar or progress lines.")


@contextlib.contextmanager
def stage_bar(stages: tuple[str, ...], enabled: bool = True, what: str = "export"):
    """Progress over a command's named stages (a bar on a terminal, lines elsewhere); yields
    ``progress(stage)``, called as each stage starts."""
    from ssr_deploy.progress import Progress

    bar = Progress(what, len(stages), "stage", enabled=enabled)
    seen = []

    def progress(stage: str) -> None:
        if seen:
            bar.update(1)
        seen.append(stage)
        bar.update(0, stage=stage)

    try:
        yield progress
    finally:
        bar.close()
