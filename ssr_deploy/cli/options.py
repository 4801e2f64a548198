"""What commands share in reading their options: options that apply only with another,
``--quiet``, and a bar over a command's stages (whether one was given: ``settings.given``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import click

from ssr_deploy.settings import SIZE, given

#: the size a model runs at when neither it nor --size says
DEFAULT_SIZE = (512, 1024)


def size_option(applies: str = "a checkpoint or genotype") -> Callable:
    """``--size HxW`` wherever a model is given: by default the model's own (a checkpoint's
    training size; a zoo genotype: 512x1024; an exported file always keeps its own)."""
    return click.option("--size", type=SIZE, default=None,
                        help=f"Input size of {applies}. [default: the checkpoint's training "
                             "size; 512x1024 for a genotype]")


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
