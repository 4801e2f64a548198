"""`ssr-deploy lut build`: a latency table of the search space on this device."""

from __future__ import annotations

import sys

import click

from ssr_deploy.backends import BACKENDS
from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import quiet_option
from ssr_deploy.settings import SIZE


@main.group()
def lut() -> None:
    """Latency tables: what each part of a network of the space takes on this device.

    \b
    ssr-deploy lut build --backend onnxruntime --size 512x1024 -o lut.json
    ssr-deploy search --data DATA --out runs/search --lut lut.json --target-ms 250
    ssr-deploy info runs/search/genotype.json --lut lut.json
    """


def classes_of(value: str) -> int:
    """``--classes``: a number, a genotype's classes or a dataset's."""
    from ssr_deploy.errors import SsrDeployError

    value = value.strip()
    if value.isdigit():
        if not 1 <= int(value) <= 65536:
            raise click.BadParameter(f"{value}: 1 to 65536 classes", param_hint="--classes")
        return int(value)
    if value.partition(":")[0] in ("cityscapes", "folder", "synthetic"):
        from ssr_deploy.data.datasets import open_dataset

        return len(open_dataset(value, "train").classes)
    from ssr_deploy.genotype import Genotype

    try:
        return Genotype.load(value).num_classes
    except SsrDeployError as e:
        raise click.BadParameter(f"{value!r} is not a number of classes, a genotype or a "
                                 f"dataset ({e})", param_hint="--classes") from None


@lut.command()
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False),
              help="The table (JSON). An unfinished one from the same command is continued.")
@click.option("--backend", type=click.Choice(BACKENDS),
              default="onnxruntime", show_default=True,
              help="The runtime backend to time through (as `bench` runs it).")
@click.option("--device", default="cpu", show_default=True,
              help="cpu, or cuda / cuda:N (tensorrt always; torch and onnxruntime-gpu).")
@click.option("--size", type=SIZE, default="512x1024", show_default=True,
              help="The input size the network will run at.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]),
              default="fp32", show_default=True,
              help="fp16: tensorrt (the fp16 ONNX), torch on cuda; bf16: openvino on CPUs with "
              "bf16; int8: onnxruntime, openvino, tensorrt (each part quantized as their int8 "
              "export quantizes a network).")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="Search space JSON (as `search --space`). [default: the paper's]")
@click.option("--classes", "classes", default="19", show_default=True,
              help="Output classes of the networks to be searched: a number, or the genotype "
                   "(zoo name or JSON) or dataset (cityscapes:DIR, folder:DIR) to take them "
                   "from.")
@click.option("--width-grid", default="9,3,9", show_default=True,
              help="Widths measured per block's in, mid and out width (the rest "
                   "interpolated); 9 = every option of the paper's space.")
@click.option("--every-dilation", is_flag=True,
              help="Measure every dilation on the width grid (default: the first dilation; "
                   "the others at the widest widths, as a ratio).")
@click.option("--repeats", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed runs per part (the median is kept), after 2 warm-up runs.")
@click.option("--passes", type=click.IntRange(min=1), default=2, show_default=True,
              help="Times each part is measured, in alternating order; the least median is "
                   "kept (a burst of other work during one pass does not stay).")
@click.option("--check", "check_points", type=click.IntRange(min=0), default=8,
              show_default=True, help="Random off-grid blocks measured to report the "
                                      "interpolation's error.")
@click.option("--calibrate", type=click.IntRange(0, 64), default=12, show_default=True,
              help="Whole networks of the space measured end to end during the build, to "
                   "calibrate the sum of parts on (0: the plain sum).")
@click.option("--int8-form", type=click.Choice(["s8", "u8", "u8-7bit"]),
              help="openvino --precision int8: the form. [default: the one `export openvino` "
                   "tries first on this CPU]")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="onnxruntime / openvino inference threads. [default: the library's]")
@quiet_option
def build(out: str, backend: str, device: str, size: tuple, batch: int, precision: str,
          space_file: str | None, classes: str, width_grid: str, every_dilation: bool,
          repeats: int, passes: int, check_points: int, calibrate: int, int8_form: str | None,
          threads: int | None) -> None:
    """Time every part of the space's networks through a runtime backend.

    Parts: the stem (with the fused uint8 input conversion), each stage's downsampler, every
    candidate block (op x dilation x resolution x widths) in its stage's shapes, and the head
    (with the fused argmax). Each is exported as `export onnx` exports a network and timed
    alone; a network's predicted latency is the sum of its parts. The machine, backend and
    versions are recorded; a table is continued only on the same machine and settings.

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
    from ssr_deploy.latency import LutOptions, build_lut
    from ssr_deploy.space import SearchSpace

    try:
        grid = tuple(int(v) for v in width_grid.split(","))
    except ValueError:
        raise click.BadParameter(f"{width_grid!r}: give three whole numbers, e.g. 9,3,9",
                                 param_hint="--width-grid") from None
    space = SearchSpace.load(space_file) if space_file else SearchSpace()
    num_classes = classes_of(classes)
    options = LutOptions(backend=backend, device=device, size=tuple(size), batch=batch,
                         num_classes=num_classes, precision=precision, width_grid=grid,
                         every_dilation=every_dilation, repeats=repeats, passes=passes,
                         check_points=check_points, threads=threads, calibrate=calibrate,
                         int8_form=int8_form)
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
    click.echo(f"wrote {out}: {len(table['entries'])} parts, {backend} {device} "
               f"{precision} at {size[0]}x{size[1]}, {table['seconds']:.0f} s of "
               f"measuring{error}{calibration}")
    from ssr_deploy.latency.table import LatencyTable
    from ssr_deploy.search.budget import space_range

    fastest, slowest = space_range(LatencyTable.load(out))
    click.echo(f"the space's networks take {fastest:.1f} to {slowest:.1f} ms here: give "
               f"search --target-ms in that range (with --classes {num_classes})")

