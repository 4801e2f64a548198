"""`ssr-deploy export onnx | engine | check | triton`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ssr_deploy.cli.base import SIZE, main, stage_bar


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


@export.command("engine")
@click.argument("onnx_path", metavar="MODEL.onnx")
@click.option("-o", "--output-path", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the engine (a .json sidecar is written beside it).")
@click.option("--fp16/--fp32", "fp16", default=True, show_default=True,
              help="Allow FP16 kernels (default) or build pure FP32.")
@click.option("--int8", is_flag=True, help="INT8 with entropy calibration (needs --calib).")
@click.option("--calib", "calib_dir", type=click.Path(), help="Folder of calibration images.")
@click.option("--calib-n", type=click.IntRange(min=1), default=500, show_default=True,
              help="Calibration images to use.")
@click.option("--calib-cache", type=click.Path(dir_okay=False),
              help="Calibration cache file. [default: ENGINE.calib-cache]")
@click.option("--min", "min_shape", metavar="BxHxW", help="Profile minimum (within the ONNX).")
@click.option("--opt", "opt_shape", metavar="BxHxW", help="Profile optimum.")
@click.option("--max", "max_shape", metavar="BxHxW", help="Profile maximum.")
@click.option("--workspace", type=float, default=4.0, show_default=True, help="GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="Timing cache file, reused and updated: rebuilds take seconds.")
@click.option("--opt-level", type=int, default=3, show_default=True, help="0 to 5.")
@click.option("--fp32-layers", "fp32_layers", multiple=True, metavar="PATTERN",
              help="Pin layers whose name matches (fnmatch) to FP32; repeatable.")
def export_engine_cmd(onnx_path, out, fp16, int8, calib_dir, calib_n, calib_cache, min_shape,
                      opt_shape, max_shape, workspace, timing_cache, opt_level,
                      fp32_layers) -> None:
    """Build a TensorRT engine from an exported ONNX (TensorRT >= 10 and a GPU).

    \b
    Examples:
      ssr-deploy export engine model.onnx -o model.engine
      ssr-deploy export engine model.onnx -o model-int8.engine --int8 --calib frames/
      ssr-deploy export engine dyn.onnx -o dyn.engine --min 1x512x1024 --opt 4x512x1024 \\
          --max 8x1024x2048 --timing-cache trt.cache
    """
    from ssr_deploy.export.tensorrt import STAGES, EngineOptions, build_engine

    precision = "int8" if int8 else ("fp16" if fp16 else "fp32")
    options = EngineOptions(precision=precision, calib_dir=calib_dir, calib_n=calib_n,
                            calib_cache=calib_cache, min_shape=min_shape, opt_shape=opt_shape,
                            max_shape=max_shape, workspace_gib=workspace,
                            timing_cache=timing_cache, opt_level=opt_level,
                            fp32_layers=tuple(fp32_layers))
    with stage_bar(STAGES) as progress:
        meta = build_engine(onnx_path, out, options, progress=progress)
    gpu = meta["tensorrt"]["gpu"]
    size_mb = Path(out).stat().st_size / 1e6
    click.echo(f"wrote {out} ({size_mb:.1f} MB, {precision}, TensorRT "
               f"{meta['tensorrt']['version']}, {gpu['name']} sm_"
               f"{gpu['compute_capability'].replace('.', '')}) in {meta['build_seconds']:.1f} s")


@export.command("check")
@click.argument("model")
@click.option("--against", "reference", required=True, help="The reference (FP32 ONNX).")
@click.option("--data", type=click.Path(), help="Folder of images. [default: street-like "
              "synthetic frames]")
@click.option("-n", "--frames", "n", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def export_check_cmd(model, reference, data, n, as_json) -> None:
    """Label agreement and mIoU of MODEL's labels against a reference model's.

    \b
    Example:
      ssr-deploy export check model.engine --against model.onnx --data frames/
    """
    from ssr_deploy.export.check import compare, format_comparison

    result = compare(model, reference, data, n, progress=not as_json)
    click.echo(json.dumps(result, indent=2) if as_json else format_comparison(result))


@export.command("triton")
@click.argument("model")
@click.option("--repo", required=True, type=click.Path(file_okay=False),
              help="Model repository folder (created if missing).")
@click.option("--name", default="ssrnet", show_default=True)
@click.option("--max-batch", type=click.IntRange(min=0), default=8, show_default=True,
              help="Triton's max_batch_size; 0 turns batching off.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--cpu", is_flag=True, help="Serve an .onnx on CPU instances.")
def export_triton_cmd(model, repo, name, max_batch, instances, cpu) -> None:
    """Write a Triton Inference Server model repository for an .onnx or engine.

    \b
    Example:
      ssr-deploy export triton model.engine --repo models/ --max-batch 8 --instances 2
      docker run --gpus all -p8000:8000 -v $PWD/models:/models \\
          nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver --model-repository=/models
    """
    from ssr_deploy.export.triton import write_repository

    config = write_repository(model, repo, name, max_batch, instances, cpu=cpu)
    click.echo(f"wrote {config.parent}/ (config.pbtxt and 1/{Path(model).name})")
