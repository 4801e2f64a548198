"""The ``ssr-deploy`` command line: parses, calls the library, prints. Nothing else."""

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


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


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


class Group(click.Group):
    """Turns SsrDeployError into one line on stderr and exit status 1, no traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SsrDeployError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ssr-deploy")
def main() -> None:
    """Search, retrain, export and run SSR real-time segmentation networks.

    \b
    ssr-deploy info ssr-cityscapes        the paper's network: params, MACs, layers
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


@main.group()
def export() -> None:
    """Export to ONNX, TensorRT engines and Triton model repositories.

    \b
    ssr-deploy export onnx runs/train/best.pt -o model.onnx --input uint8-nhwc-bgr --output labels
    ssr-deploy export engine model.onnx -o model.engine --fp16
    ssr-deploy export check model.engine --against model.onnx
    ssr-deploy export triton model.engine --repo triton/
    """


@export.command("onnx")
@click.argument("source")
@click.option("-o", "--output-path", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .onnx (a .json sidecar is written beside it).")
@click.option("--weights", help="Checkpoint whose weights to use, when SOURCE is a genotype.")
@click.option("--random-init", is_flag=True, help="Export untrained weights (for speed work).")
@click.option("--size", type=SIZE, default="512x1024", show_default=True,
              help="Input size (the optimum when --dynamic-size).")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Batch size symbolic, 1 to --max-batch.")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--dynamic-size", is_flag=True, help="Height and width symbolic.")
@click.option("--min-size", type=SIZE, help="Smallest size with --dynamic-size. [default: "
              "half of --size]")
@click.option("--max-size", type=SIZE, help="Largest size with --dynamic-size. [default: "
              "twice --size]")
@click.option("--opset", type=int, default=18, show_default=True)
@click.option("--input", "input_format", default="float-nchw", show_default=True,
              type=click.Choice(["float-nchw", "uint8-nhwc-bgr", "uint8-nhwc-rgb"]),
              help="uint8 variants fold cast, scale, mean/std and layout into the graph.")
@click.option("--output", "output_format", default="logits", show_default=True,
              type=click.Choice(["logits", "labels"]), help="labels: argmax in the graph.")
@click.option("--label-dtype", default="uint8", show_default=True,
              type=click.Choice(["uint8", "int32"]))
@click.option("--simplify/--no-simplify", default=True, show_default=True,
              help="Simplify the graph with onnxslim.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification report as JSON.")
def export_onnx_cmd(source, out, weights, random_init, size, batch, dynamic_batch, max_batch,
                    dynamic_size, min_size, max_size, opset, input_format, output_format,
                    label_dtype, simplify, as_json) -> None:
    """Export SOURCE (a checkpoint, or a genotype with --weights / --random-init) to ONNX,
    verified against PyTorch with onnxruntime.

    \b
    Examples:
      ssr-deploy export onnx runs/train/best.pt -o model.onnx
      ssr-deploy export onnx ssr-cityscapes --random-init -o model.onnx \\
          --input uint8-nhwc-bgr --output labels --dynamic-batch
    """
    from ssr_deploy.export.graph import IOFormat
    from ssr_deploy.export.onnx import (
        STAGES,
        OnnxOptions,
        export_onnx,
        format_report,
        load_source,
        summary_line,
    )

    io = IOFormat(input_format, output_format, label_dtype)
    options = OnnxOptions(size=size, batch=batch, dynamic_batch=dynamic_batch,
                          max_batch=max_batch, dynamic_size=dynamic_size, min_size=min_size,
                          max_size=max_size, opset=opset, io=io, simplify=simplify)
    net = load_source(source, weights, random_init)
    with stage_bar(STAGES, enabled=not as_json) as progress:
        result = export_onnx(net, out, options, progress=progress)
    if as_json:
        click.echo(json.dumps({"path": str(result.path), "sidecar": str(result.sidecar),
                               "seconds": result.seconds, "verification": result.report},
                              indent=2))
        return
    click.echo(format_report(result.report))
    click.echo(summary_line(result))


if __name__ == "__main__":
    main()
