"""`ssr-deploy export onnx | engine | check | triton`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import ModelSize, model_size, quiet_option, refuse_without, stage_bar
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.settings import POSITIVE, SIZE, options
from ssr_deploy.spec import IR_PRECISIONS, ONNX_PRECISIONS, ModelSpec


@main.group()
def export() -> None:
    """Export to ONNX, TensorRT engines and Triton model repositories.

    \b
    ssr-deploy export onnx runs/train/best.pt -o model.onnx --input uint8-nhwc-bgr --output labels
    ssr-deploy export onnx runs/train/best.pt -o model.int8.onnx --precision int8 --calib frames/
    ssr-deploy export engine model.onnx -o model.engine            # fp16 by default
    ssr-deploy export openvino model.onnx -o model.xml --precision int8 --calib frames/
    ssr-deploy export check model.engine --against model.onnx
    ssr-deploy export triton model.engine --repo triton/
    """


def precision_options(f):
    """The options that turn an fp32 graph into fp16 or int8 (export onnx and engine)."""
    options = [
        click.option("--fp32-layers", "fp32_layers", multiple=True, metavar="PATTERN",
                     help="Keep genotype modules matching PATTERN (fnmatch on the module names "
                     "nodes carry, e.g. 'head.psp', 'stages.1.*') in fp32; repeatable."),
        click.option("--calib", "calib_dir", type=click.Path(),
                     help="int8: folder of calibration images (the training set's kind)."),
        click.option("--calib-n", type=click.IntRange(min=1), default=100, show_default=True,
                     help="int8: calibration images to use (spread over the folder)."),
        click.option("--calib-method", default="entropy", show_default=True,
                     type=click.Choice(["entropy", "percentile", "minmax"])),
        click.option("--calib-cache", type=click.Path(file_okay=False),
                     help="int8: folder of calibration caches, keyed by the fp32 ONNX and the "
                     "images. [default: ~/.cache/ssr-deploy/calibration]"),
        click.option("--min-agreement", type=click.FloatRange(0, 1, min_open=True),
                     help="Fail (write nothing) below this label agreement with fp32. "
                     "[default: 0.999 fp16, 0.995 int8 and bf16]"),
        click.option("--fallback", type=click.Choice(["none", "auto"]), default="none",
                     show_default=True,
                     help="int8: auto measures each module's sensitivity and keeps the most "
                     "sensitive out of int8 (fp16 for TensorRT, fp32 for the CPU), one at a "
                     "time, until --min-agreement holds; the sidecar records which."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@export.command("onnx")
@click.argument("source")
@click.option("-o", "--output-path", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the .onnx (a .json sidecar is written beside it).")
@click.option("--weights", help="Checkpoint whose weights to use, when SOURCE is a genotype.")
@click.option("--random-init", is_flag=True, help="Export untrained weights (for speed work).")
@options(ModelSize)
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="Batch size symbolic, 1 to --max-batch.")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--dynamic-size", is_flag=True, help="Height and width symbolic (--size the "
              "optimum).")
@click.option("--min-size", type=SIZE, help="Smallest size with --dynamic-size. [default: "
              "half of --size]")
@click.option("--max-size", type=SIZE, help="Largest size with --dynamic-size. [default: "
              "twice --size]")
@click.option("--opset", type=click.IntRange(17), default=18, show_default=True)
@click.option("--input", "input_format", default="float-nchw", show_default=True,
              type=click.Choice(["float-nchw", "uint8-nhwc-bgr", "uint8-nhwc-rgb"]),
              help="uint8 variants fold cast, scale, mean/std and layout into the graph.")
@click.option("--output", "output_format", default="logits", show_default=True,
              type=click.Choice(["logits", "labels"]), help="labels: argmax in the graph.")
@click.option("--label-dtype", type=click.Choice(["uint8", "int32"]),
              help="With --output labels. [default: uint8; int32 past 256 classes]")
@click.option("--simplify/--no-simplify", default=True, show_default=True,
              help="Simplify the graph with onnxslim.")
@click.option("--precision", default="fp32", show_default=True,
              type=click.Choice(ONNX_PRECISIONS),
              help="fp16/int8: also write the converted graph, verified against fp32.")
@click.option("--int8-target", default="tensorrt", show_default=True,
              type=click.Choice(["tensorrt", "cpu"]),
              help="tensorrt: symmetric int8 Q/DQ for TensorRT; cpu: uint8 activations, "
              "fastest in onnxruntime on CPUs without VNNI.")
@precision_options
@click.option("--data", type=click.Path(), help="fp16/int8: also verify on these images.")
@click.option("--json", "as_json", is_flag=True, help="Print the verification report as JSON.")
@click.pass_context
@quiet_option
def export_onnx_cmd(ctx, source, out, weights, random_init, size, batch, dynamic_batch, max_batch,
                    dynamic_size, min_size, max_size, opset, input_format, output_format,
                    label_dtype, simplify, precision, int8_target, fp32_layers, calib_dir,
                    calib_n, calib_method, calib_cache, min_agreement, fallback, data,
                    as_json) -> None:
    """Export SOURCE (a checkpoint, or a genotype with --weights / --random-init) to ONNX,
    verified against PyTorch with onnxruntime. With --precision fp16 or int8 the fp32 graph
    is written too (model.int8.onnx -> model.onnx, model.onnx -> model.fp32.onnx) and the
    converted one, at OUT, is verified
    against it on street-like frames (and --data images): below --min-agreement nothing is
    written.

    \b
    Examples:
      ssr-deploy export onnx runs/train/best.pt -o model.onnx
      ssr-deploy export onnx ssr-cityscapes --random-init -o model.onnx \\
          --input uint8-nhwc-bgr --output labels --dynamic-batch
      ssr-deploy export onnx runs/train/best.pt -o model.fp16.onnx --precision fp16
      ssr-deploy export onnx runs/train/best.pt -o model.int8.onnx --precision int8 \\
          --calib data/leftImg8bit/train --calib-method entropy
    """
    from ssr_deploy.export.onnx import (
        STAGES,
        OnnxOptions,
        export_onnx,
        format_report,
        load_source,
        qat_record_of,
        summary_line,
    )
    from ssr_deploy.export.precision import PrecisionOptions
    from ssr_deploy.spec import IOFormat

    refuse_without(ctx, {"max_batch": ("--dynamic-batch", dynamic_batch),
                         "min_size": ("--dynamic-size", dynamic_size),
                         "max_size": ("--dynamic-size", dynamic_size),
                         "label_dtype": ("--output labels", output_format == "labels")})
    from ssr_deploy.export.onnx import fp32_path_for
    from ssr_deploy.io import check_outputs_spare_inputs

    outputs = [("-o", out)]
    if precision != "fp32":
        outputs.append(("-o (its fp32 graph)", fp32_path_for(out, precision)))
    check_outputs_spare_inputs(outputs, [source, weights])
    net = load_source(source, weights, random_init)
    size = model_size(weights or source, size)
    qat = qat_record_of(source)
    if qat and precision != "int8":
        click.echo(f"note: {source} was fine-tuned for int8 (QAT); --precision {precision} "
                   "exports its float weights without the learned ranges (add --precision "
                   "int8 for the graph it was trained for)", err=True)
    label_dtype = label_dtype or ("int32" if net.num_classes > 256 else "uint8")
    io = IOFormat(input_format, output_format, label_dtype)
    options = OnnxOptions(size=size, batch=batch, dynamic_batch=dynamic_batch,
                          max_batch=max_batch, dynamic_size=dynamic_size, min_size=min_size,
                          max_size=max_size, opset=opset, io=io, simplify=simplify)
    converted = None
    if precision != "fp32":
        converted = PrecisionOptions(
            precision=precision, fp32_layers=fp32_layers, calib_dir=calib_dir, calib_n=calib_n,
            calib_method=calib_method, calib_cache=calib_cache, int8_target=int8_target,
            data=data, min_agreement=min_agreement, fallback=fallback,
            qat=qat if precision == "int8" else None)
    elif fp32_layers or calib_dir or data or min_agreement or fallback != "none":
        raise SsrDeployError("--fp32-layers, --calib, --data, --min-agreement and --fallback "
                             "apply to --precision fp16 or int8; add --precision or drop them")
    stages = STAGES + tuple(f"{stage} {precision}" for stage in ("convert", "verify", "write")
                            if converted)
    with stage_bar(stages, enabled=not as_json) as progress:
        result = export_onnx(net, out, options, progress=progress, precision=converted)
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
@click.option("--precision", type=click.Choice(ONNX_PRECISIONS),
              help="The engine's precision. An fp32 ONNX is converted first (and verified); "
              "an fp16/int8 ONNX builds as it is. [default: fp16, or the ONNX's own]")
@precision_options
@click.option("--min", "min_shape", metavar="BxHxW", help="Profile minimum (within the ONNX).")
@click.option("--opt", "opt_shape", metavar="BxHxW", help="Profile optimum.")
@click.option("--max", "max_shape", metavar="BxHxW", help="Profile maximum.")
@click.option("--workspace", type=POSITIVE, default=4.0, show_default=True, help="GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False),
              help="Full TensorRT: timing cache file, reused and updated: rebuilds take seconds.")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True,
              help="TensorRT's builder optimisation level.")
@click.option("--builder", type=click.Choice(["tensorrt", "tensorrt-rtx"]),
              help="tensorrt: full TensorRT, on the GPU that will run the engine; tensorrt-rtx: "
              "TensorRT-RTX, on any machine (no GPU needed), for RTX GPUs. [default: tensorrt "
              "where it is installed, else tensorrt-rtx]")
@click.option("--compute-capability", "compute_capabilities", metavar="CC[,CC...]",
              help="tensorrt-rtx: the GPUs the engine runs on, e.g. 7.5,8.6,8.9,12.0. "
              "[default: TensorRT-RTX's own: 8.6, 8.9, 12.0] Turing "
              "(7.5, RTX 20xx), 8.0 and 12.1 must be named; Hopper (9.0) is not an RTX target.")
@quiet_option
def export_engine_cmd(onnx_path, out, precision, fp32_layers, calib_dir, calib_n, calib_method,
                      calib_cache, min_agreement, fallback, min_shape, opt_shape, max_shape,
                      workspace,
                      timing_cache, opt_level, builder, compute_capabilities) -> None:
    """Build a strongly typed TensorRT engine: with full TensorRT (>= 10.3) on the GPU that
    will run it, or with TensorRT-RTX (>= 1.7) on any machine for RTX GPUs. The precision is
    the ONNX's, converted and verified on the CPU first when --precision asks for another.

    \b
    Examples:
      ssr-deploy export engine model.onnx -o model.engine               # fp16
      ssr-deploy export engine model.onnx -o model-int8.engine --precision int8 --calib frames/
      ssr-deploy export engine model.int8.onnx -o model-int8.engine     # already int8
      ssr-deploy export engine dyn.onnx -o dyn.engine --min 1x512x1024 --opt 4x512x1024 \\
          --max 8x1024x2048 --timing-cache trt.cache
      ssr-deploy export engine model.onnx -o model.engine --builder tensorrt-rtx \\
          --compute-capability 7.5,8.6,8.9,12.0                         # no GPU needed
    """
    from ssr_deploy.export.tensorrt import STAGES, EngineOptions, build_engine
    from ssr_deploy.io import check_outputs_spare_inputs

    check_outputs_spare_inputs([("-o", out), ("--timing-cache", timing_cache)], [onnx_path])
    if timing_cache and Path(timing_cache).resolve() == Path(out).resolve():
        raise SsrDeployError("--timing-cache and -o are the same file; give the cache its own")

    options = EngineOptions(precision=precision, calib_dir=calib_dir, calib_n=calib_n,
                            calib_method=calib_method, calib_cache=calib_cache,
                            fp32_layers=tuple(fp32_layers), min_agreement=min_agreement,
                            fallback=fallback,
                            min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape,
                            workspace_gib=workspace, timing_cache=timing_cache,
                            opt_level=opt_level, builder=builder,
                            compute_capabilities=compute_capabilities)
    with stage_bar(STAGES) as progress:
        meta = build_engine(onnx_path, out, options, progress=progress)
    click.echo(engine_summary(out, ModelSpec.from_dict(meta)))


def engine_summary(path: str | Path, spec: ModelSpec) -> str:
    """``wrote m.engine (8.5 MB, fp16, TensorRT-RTX 1.7.1.116, for sm_86/89/120) in 0.4 s``"""
    from ssr_deploy.backends.tensorrt.library import NAMES, engine_targets, sm

    built = spec.engine
    size_mb = Path(path).stat().st_size / 1e6
    check = spec.precision_check
    agreement = f", {100 * check.label_agreement:.2f}% labels as fp32" if check else ""
    if built.builder == "tensorrt-rtx":
        targets = "/".join(cc.replace(".", "") for cc in engine_targets(built))
        where = f"for sm_{targets}: RTX GPUs"
    else:
        where = f"{built.gpu.name} {sm(built.gpu.compute_capability)}"
    return (f"wrote {path} ({size_mb:.1f} MB, {spec.precision}{agreement}, "
            f"{NAMES[built.builder]} {built.version}, {where}) in {spec.build_seconds:.1f} s")


@export.command("openvino")
@click.argument("source", metavar="MODEL")
@click.option("-o", "--output-path", "out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the IR's .xml (its .bin and a .json sidecar go beside it).")
@click.option("--precision", type=click.Choice(IR_PRECISIONS), default="fp32",
              show_default=True, help="bf16: computed in bf16 (CPUs with avx512_bf16 or AMX); "
              "int8: int8 convolutions, the rest in bf16 where the CPU has it, else fp32.")
@precision_options
@click.option("--int8-form", type=click.Choice(["s8", "u8", "u8-7bit"]),
              help="int8: the form to make (s8: signed activations, TensorRT's; u8: unsigned "
              "activations; u8-7bit: u8 with 7-bit weights). [default: each form this CPU "
              "runs correctly is verified and timed here, the fastest kept]")
@click.option("--data", type=click.Path(), help="Also verify on these images.")
@options(ModelSize)
@click.option("--json", "as_json", is_flag=True, help="Print the verification as JSON.")
@quiet_option
def export_openvino_cmd(source, out, precision, fp32_layers, calib_dir, calib_n, calib_method,
                        calib_cache, min_agreement, fallback, int8_form, data, size,
                        as_json) -> None:
    """Write an OpenVINO IR of MODEL (an fp32 .onnx we exported, or a checkpoint), verified
    against the fp32 graph by running the IR in OpenVINO on this CPU at its precision; below
    --min-agreement nothing is written. The precision is recorded in the sidecar and is what
    the IR runs at (OpenVINO's silent bf16 default is never used). int8 comes in the form
    this CPU runs correctly and fastest: each candidate form is verified and timed here, and
    the sidecar records the form, this CPU and every form tried.

    \b
    Examples:
      ssr-deploy export openvino model.onnx -o model.xml --precision bf16
      ssr-deploy export openvino model.onnx -o model-int8.xml --precision int8 \\
          --calib frames/ --fallback auto --min-agreement 0.995
      ssr-deploy bench model-int8.xml --compare model.onnx
    """
    from ssr_deploy.export.openvino import STAGES, IROptions, export_openvino, summary_line
    from ssr_deploy.export.precision_check import format_check

    options = IROptions(precision=precision, calib_dir=calib_dir, calib_n=calib_n,
                        calib_method=calib_method, calib_cache=calib_cache,
                        fp32_layers=tuple(fp32_layers), fallback=fallback,
                        min_agreement=min_agreement, data=data,
                        size=model_size(source, size), int8_form=int8_form)
    with stage_bar(STAGES, enabled=not as_json) as progress:
        result = export_openvino(source, out, options, progress)
    if as_json:
        click.echo(json.dumps({"path": str(result.path), "sidecar": str(result.sidecar),
                               "seconds": result.seconds, "verification": result.report},
                              indent=2, default=str))
        return
    click.echo(format_check(result.report))
    click.echo(summary_line(result))


@export.command("check")
@click.argument("model")
@click.option("--against", "reference", required=True, help="The reference (FP32 ONNX).")
@click.option("--data", type=click.Path(), help="Folder of images. [default: street-like "
              "synthetic frames]")
@click.option("-n", "--frames", "n", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@quiet_option
def export_check_cmd(model, reference, data, n, as_json) -> None:
    """Label agreement and mIoU of MODEL's labels against a reference model's.

    \b
    Example:
      ssr-deploy export check model.engine --against model.onnx --data frames/
    """
    from ssr_deploy.runtime.compare import compare, format_comparison

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
@click.option("--server-tensorrt", metavar="VERSION",
              help="The TensorRT version of the Triton server (its release notes name it, e.g. "
                   "10.3.0 for 24.08): an engine built by another is refused.")
def export_triton_cmd(model, repo, name, max_batch, instances, cpu, server_tensorrt) -> None:
    """Write a Triton Inference Server model repository for an .onnx or engine.

    \b
    Example:
      ssr-deploy export triton model.engine --repo models/ --max-batch 8 --instances 2
      docker run --gpus all -p8000:8000 -v $PWD/models:/models \\
          nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver --model-repository=/models
    """
    from ssr_deploy.export.triton import write_repository

    config = write_repository(model, repo, name, max_batch, instances, cpu=cpu,
                              server_tensorrt=server_tensorrt)
    is_engine = Path(model).suffix.lower() in (".engine", ".plan")
    served = "model.plan" if is_engine else "model.onnx"
    click.echo(f"wrote {config.parent}/ (config.pbtxt, 1/{served} and its sidecar)")
    if is_engine and not server_tensorrt:
        built = ModelSpec.load(model).engine
        click.echo(f"note: {served} loads only in a Triton whose TensorRT is "
                   f"{built.version if built and built.version else 'the one that built it'} "
                   "(--server-tensorrt checks it)", err=True)
