"""What commands share in reading their options: options that apply only with another,
``--quiet``, and a bar over a command's stages (whether one was given: ``settings.given``)."""

from __future__ import annotations

import contextlib

import click

from ssr_deploy.settings import given


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
