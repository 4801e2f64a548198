"""`ssr-deploy info`."""

from __future__ import annotations

import json

import click

from ssr_deploy.cli.group import main
from ssr_deploy.settings import SIZE

PAPER_SIZES = ((512, 1024), (768, 1536), (1024, 2048))


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
    from ssr_deploy.app import report

    if list_zoo:
        rows = report.zoo_summary()
        click.echo(json.dumps(rows, indent=2) if as_json else report.format_zoo(rows))
        return
    if genotype is None:
        raise click.UsageError("give a GENOTYPE (a zoo name or a JSON path), or --list")
    summary = report.genotype_summary(genotype, sizes or PAPER_SIZES, num_classes,
                                      progress=not as_json, lut=lut_path)
    click.echo(json.dumps(summary, indent=2) if as_json else report.format_summary(summary))
