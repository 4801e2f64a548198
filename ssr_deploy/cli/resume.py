"""Run folders of `train` and `search`: new or empty unless --resume continues the run in
it, and a resumed run's settings (its own, unless given and --override)."""

from __future__ import annotations

import click

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.settings import given


def resume_settings(ctx: click.Context, config, saved: dict, params: dict[str, str],
                    override: bool):
    """``config`` for a resumed run: every setting not given on the command line is the run's
    own (from ``saved``, the checkpoint's config); a given one that differs from the run's is
    refused unless ``override``. ``params`` maps config fields to their CLI parameters.
    Returns (config, the changed settings as text)."""
    import dataclasses

    from ssr_deploy.io import jsonable
    from ssr_deploy.settings import check_saved

    check_saved(type(config), saved, "the run's saved state")
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
