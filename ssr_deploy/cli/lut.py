"""`ssr-deploy lut build`: a latency table of the search space on this device."""

from __future__ import annotations

import sys

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import quiet_option
from ssr_deploy.latency.options import LutOptions
from ssr_deploy.settings import config_from, options


@main.group()
def lut() -> None:
    """Latency tables: what each part of a network of the space takes on this device.

    \b
    ssr-deploy lut build --backend onnxruntime --size 512x1024 -o lut.json
    ssr-deploy search --data DATA --out runs/search --lut lut.json --target-ms 250
    ssr-deploy info runs/search/genotype.json --lut lut.json
    """


@lut.command()
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The table (JSON). An unfinished one from the same command is continued.")
@options(LutOptions)
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="Search space JSON (as `search --space`). [default: the paper's]")
@click.pass_context
@quiet_option
def build(ctx: click.Context, out: str, space_file: str | None, **settings) -> None:
    """Time every part of the space's networks through a runtime backend.

    Parts: the stem (with the fused uint8 input conversion), each stage's downsampler, every
    candidate block (op x dilation x resolution x widths) in its stage's shapes, and the head
    (with the fused argmax). Each is exported as `export onnx` exports a network and timed
    alone; then whole networks of the space (--calibrate) are exported as a user exports
    them and timed end to end, and how the parts make a network is fitted on them, so a
    prediction is a whole network's. The machine, backend and versions are recorded; a
    table is continued only on the same machine and settings.

    \b
    Examples:
      ssr-deploy lut build -o lut.json                            this CPU, onnxruntime
      ssr-deploy lut build --classes folder:data/fields -o lut.json     classes of a dataset
      ssr-deploy lut build --backend openvino --precision bf16 -o ov.json     OpenVINO, bf16
      ssr-deploy lut build --backend tensorrt --device cuda --precision fp16 -o trt.json
      ssr-deploy lut build --backend torch --device cuda --size 1024x2048 -o torch.json
    """
    from pathlib import Path

    from ssr_deploy.io import check_output_path
    from ssr_deploy.latency import build_lut
    from ssr_deploy.space import SearchSpace

    space = SearchSpace.load(space_file) if space_file else SearchSpace()
    options = config_from(LutOptions, ctx)
    options.validate(space)
    if not Path(out).exists():
        check_output_path(Path(out))
    try:
        table = build_lut(space, out, options)
    except KeyboardInterrupt:
        click.echo(f"interrupted: the parts measured so far are kept in {out}; run the same "
                   "command to finish it", err=True)
        sys.exit(130)
    if table.get("already"):
        click.echo(f"{out} is complete ({len(table['entries'])} parts measured in "
                   f"{table['seconds']:.0f} s); nothing to do: delete it to measure again")
        return
    check = table.get("check", {})
    error = (f"; interpolation vs {check['points']} direct measurements: mean "
             f"{100 * check['mean_rel_error']:.1f}%, max {100 * check['max_rel_error']:.1f}%"
             if check.get("points") else "")
    fit = (table.get("calibration") or {}).get("fit")
    calibration = (f"; calibrated on {len(table['calibration']['networks'])} whole networks "
                   f"(fit {100 * fit['mean_rel_error']:.1f}% mean error"
                   + (f", {100 * fit['leave_one_out_mean_rel_error']:.1f}% on one left out"
                      if fit.get("leave_one_out_mean_rel_error") is not None else "") + ")"
                   if fit else "")
    o = options
    click.echo(f"wrote {out}: {len(table['entries'])} parts, {o.backend} {o.device} "
               f"{o.precision} at {o.size[0]}x{o.size[1]}, {table['seconds']:.0f} s of "
               f"measuring{error}{calibration}")
    unsteady, counted = (table.get("calibration") or {}).get("unsteady"), len(
        (table.get("calibration") or {}).get("networks", [])) - 1
    if unsteady and 3 * unsteady > counted:
        click.echo(f"warning: the machine changed speed while {unsteady} of the {counted} "
                   "calibration networks were timed (fewer steady measurements than passes; "
                   "they count less in the fit): its predictions may be off by more than the "
                   "fit says; build it again when the machine is quieter", err=True)
    from ssr_deploy.latency.table import LatencyTable
    from ssr_deploy.search.budget import space_range

    fastest, slowest = space_range(LatencyTable.load(out))
    click.echo(f"the space's networks take {fastest:.1f} to {slowest:.1f} ms here: give "
               f"search --target-ms in that range (with --classes {o.num_classes})")

