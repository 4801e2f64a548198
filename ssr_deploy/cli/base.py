"""The group, shared option types and helpers; `ssr-deploy info`."""

from __future__ import annotations

import contextlib
import json
import re
import sys

import click

from ssr_deploy.errors import SsrDeployError

PAPER_SIZES = ((512, 1024), (768, 1536), (1024, 2048))


class Size(click.ParamType):
    """``HxW`` in pixels, e.g. ``512x1024``."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(value))
        if not match or 0 in (h := int(match[1]), w := int(match[2])):
            self.fail(f"{value!r} is not a size; write HEIGHTxWIDTH, e.g. 512x1024", param, ctx)
        return h, w


SIZE = Size()


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
    """Turns SsrDeployError into one line on stderr and exit status 1, no traceback; so is
    a command that needs the [train] extra on a runtime-only install."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SsrDeployError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except ImportError as e:
            if (e.name or "").split(".")[0] not in TRAIN_EXTRA:
                raise
            click.echo(f"error: this command needs {e.name.split('.')[0]}, which a runtime-only "
                       "install leaves out: pip install torch (the build for your machine), "
                       "then pip install 'ssr-deploy[train]'", err=True)
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
@click.option("--classes", "num_classes", type=click.IntRange(min=1), default=None,
              help="Number of output classes. [default: the genotype's class list]")
@click.option("--list", "list_zoo", is_flag=True, help="List the built-in genotypes.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(genotype: str | None, sizes: tuple, num_classes: int | None, list_zoo: bool,
         as_json: bool) -> None:
    """Parameters, MACs per input size and a per-layer table of a genotype.

    GENOTYPE is a zoo name or a path to a genotype JSON file. MACs are
    multiply-accumulates (1 MAC = 2 FLOPs); the paper's "FLOPs" column counts MACs.

    \b
    Examples:
      ssr-deploy info ssr-cityscapes
      ssr-deploy info runs/search/genotype.json --size 1024x2048 --json
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
                                      progress=not as_json)
    click.echo(json.dumps(summary, indent=2) if as_json else report.format_summary(summary))
