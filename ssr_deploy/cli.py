"""The ``ssr-deploy`` command line: parses, calls the library, prints. Nothing else."""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

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


def _entries(model: str, backend: str | None, device: str | None, compare: str | None,
             size: tuple[int, int]) -> list[tuple[str, object]]:
    """MODEL with its backend, then each --compare entry: a backend name (optionally
    ``name:device``) applied to MODEL, or another model file."""
    from ssr_deploy.runtime.segmenter import Segmenter

    specs = [(model, backend, device)]
    for item in filter(None, (compare or "").split(",")):
        item = item.strip()
        if Path(item).is_file():
            specs.append((item, None, None))
        else:
            name, _, dev = item.partition(":")
            specs.append((model, name, dev or None))
    entries = []
    for path, name, dev in specs:
        seg = Segmenter.load(path, backend=name, device=dev, size=size)
        label = seg.backend.name + (f":{dev}" if dev else "")
        if path != model:
            label += f" ({Path(path).name})"
        entries.append((label, seg))
    return entries


@main.command()
@click.argument("model")
@click.option("--backend", help="onnxruntime, tensorrt or torch. [default: by file type]")
@click.option("--device", help="cpu, cuda, cuda:1 ... [default: the backend's]")
@click.option("--size", type=SIZE, default="512x1024", show_default=True,
              help="Model input size (for a .pt; exported files carry theirs).")
@click.option("--frame-size", type=SIZE, help="Frame size fed in (resized on the host). "
              "[default: the model's input size]")
@click.option("--batch", "batches", default="1", show_default=True,
              help="Comma-separated batch sizes, e.g. 1,4,8.")
@click.option("--iters", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--compare", help="Comma-separated backends (torch, onnxruntime:cuda) or model "
              "files to time side by side with MODEL.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write results, ratios and the machine to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a latency histogram PNG (with the paper's 175 FPS).")
def bench(model, backend, device, size, frame_size, batches, iters, warmup, compare, json_path,
          plot_path) -> None:
    """End-to-end FPS and latency (frames in, labels out) against the paper's 175 FPS.

    \b
    Examples:
      ssr-deploy bench model.engine --batch 1,8 --json bench.json --plot bench.png
      ssr-deploy bench runs/train/best.pt --compare onnxruntime --iters 30
    """
    from ssr_deploy.runtime import bench as b

    try:
        batch_list = [int(x) for x in batches.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{batches!r}: give batch sizes like 1,4,8",
                                 param_hint="--batch") from None
    if not batch_list or min(batch_list) < 1:
        raise click.BadParameter("batch sizes are at least 1", param_hint="--batch")
    for path in (json_path, plot_path):
        if path and not Path(path).resolve().parent.is_dir():
            raise SsrDeployError(f"cannot write {path}: its folder does not exist")
    entries = _entries(model, backend, device, compare, size)
    try:
        results = b.run(entries, batch_list, iters, warmup, frame_size, progress=True)
    finally:
        for _, seg in entries:
            seg.close()
    click.echo(b.format_results(results))
    if json_path:
        b.write_json(b.report(results, b.machine_info()), json_path)
        click.echo(f"wrote {json_path}")
    if plot_path:
        b.plot_histogram(results, plot_path)
        click.echo(f"wrote {plot_path}")


@main.command()
@click.argument("source")
@click.option("--model", required=True, help="A .engine, .onnx or .pt.")
@click.option("-o", "--output", "out", required=True,
              help="An .mp4/.avi file, or a folder for PNG frames.")
@click.option("--backend", help="onnxruntime, tensorrt or torch. [default: by file type]")
@click.option("--device", help="cpu, cuda ... [default: the backend's]")
@click.option("--size", type=SIZE, default="512x1024", show_default=True,
              help="Model input size (for a .pt).")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="Overlay opacity.")
@click.option("--letterbox", is_flag=True, help="Keep the aspect ratio (pad, do not stretch).")
@click.option("--draw-fps", is_flag=True, help="Draw the live FPS on the frames.")
@click.option("--show", is_flag=True, help="Show a window (needs a display); q or Esc quits.")
def video(source, model, out, backend, device, size, max_frames, alpha, letterbox, draw_fps,
          show) -> None:
    """Segment a video file, camera index or image folder in real time.

    Decode, inference and overlay+encode run on three threads with bounded queues. Ctrl-C
    stops cleanly and leaves a playable file.

    \b
    Examples:
      ssr-deploy video drive.mp4 --model model.engine -o drive_seg.mp4 --draw-fps
      ssr-deploy video 0 --model model.onnx -o cam.mp4 --show
      ssr-deploy video leftImg8bit/val/frankfurt --model model.onnx -o preds/
    """
    from tqdm import tqdm

    from ssr_deploy.runtime.segmenter import Segmenter
    from ssr_deploy.runtime.video import open_source, run_video

    if show:
        import os

        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SsrDeployError("--show needs a display (none is set); drop --show and watch "
                                 "the output file")
    _, _, total = open_source(source, max_frames)
    with Segmenter.load(model, backend=backend, device=device, letterbox=letterbox,
                        size=size) as seg, tqdm(total=total, unit="frame", disable=None) as bar:

        def on_frame(done: int, fps: float) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(fps=f"{fps:.1f}")

        stats = run_video(seg, source, out, max_frames, alpha, draw_fps, show, on_frame=on_frame)
    note = " (interrupted: the file is complete up to there)" if stats.interrupted else ""
    click.echo(f"wrote {stats.output}: {stats.frames} frames in {stats.seconds:.1f} s, "
               f"{stats.fps:.1f} FPS{note}")


@main.command("profile")
@click.argument("model")
@click.option("--backend", help="onnxruntime, tensorrt or torch. [default: by file type]")
@click.option("--size", type=SIZE, default="512x1024", show_default=True,
              help="Input size (for a .pt).")
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--trace", type=click.Path(dir_okay=False), help="Write a Chrome trace JSON.")
@click.option("--json", "as_json", is_flag=True)
def profile_cmd(model, backend, size, iters, top, trace, as_json) -> None:
    """Per-layer times mapped to genotype layers (onnxruntime profiler, TensorRT IProfiler,
    torch module hooks), slowest first.

    \b
    Examples:
      ssr-deploy profile model.onnx --trace ort_trace.json
      ssr-deploy profile model.engine --top 20
    """
    from ssr_deploy.runtime.profile import format_profile, profile

    result = profile(model, backend, iters, trace, size)
    click.echo(json.dumps(result, indent=2) if as_json else format_profile(result, top))


@main.group()
def data() -> None:
    """Datasets: write synthetic street scenes in the Cityscapes layout."""


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write leftImg8bit/ and gtFine/ into.")
@click.option("--n", type=click.IntRange(min=1), default=100, show_default=True,
              help="Scenes (80% train, 20% val).")
@click.option("--size", type=SIZE, default="256x512", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--video", type=click.Path(dir_okay=False), help="Also render a moving scene.")
@click.option("--frames", type=click.IntRange(min=1), default=90, show_default=True,
              help="Frames of the --video.")
def data_synth(out, n, size, seed, video, frames) -> None:
    """Procedural street scenes labelled with Cityscapes ids, deterministic by seed.

    \b
    Example:
      ssr-deploy data synth --out data/synth --n 200 --size 256x512 --video drive.mp4
      ssr-deploy eval --weights best.pt --data cityscapes:data/synth
    """
    from tqdm import tqdm

    from ssr_deploy.data import write_cityscapes_layout
    from ssr_deploy.data.synthetic import render_video

    if not Path(out).resolve().parent.is_dir():
        raise SsrDeployError(f"cannot write {out}: its parent folder does not exist")
    with tqdm(total=n, desc="scenes", disable=None) as bar:
        counts = write_cityscapes_layout(out, n, size, seed, progress=lambda: bar.update(1))
    click.echo(f"wrote {counts['train']} train and {counts['val']} val scenes to {out} "
               "(Cityscapes layout: cityscapes:" + str(out) + ")")
    if video:
        render_video(video, frames, size, seed)
        click.echo(f"wrote {video} ({frames} frames)")


@main.command()
@click.option("--genotype", required=True, help="Zoo name or genotype JSON.")
@click.option("--data", "source", required=True,
              help="cityscapes:DIR, folder:DIR or synthetic[:N].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Run folder: last.pt, best.pt, log.jsonl, curves.png.")
@click.option("--size", type=SIZE, default="512x1024", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True)
@click.option("--weight-decay", type=float, default=1e-4, show_default=True)
@click.option("--preset", type=click.Choice(["paper", "modern"]), default="paper",
              show_default=True, help="paper: resize, flip, 0-2 px shift; modern: scale "
              "0.5-2, crop, flip, colour jitter.")
@click.option("--class-weights", type=click.Choice(["enet", "none"]), default="enet",
              show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda (AMP on cuda).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--weights", help="Start from this checkpoint's weights (same genotype).")
@click.option("--resume", is_flag=True, help="Continue OUT/last.pt exactly.")
def train(genotype, source, out, size, epochs, batch, lr, weight_decay, preset, class_weights,
          workers, device, seed, weights, resume) -> None:
    """Retrain a genotype, the paper's recipe by default.

    Multi-GPU: torchrun --nproc_per_node 8 -m ssr_deploy train ... (DDP).

    \b
    Examples:
      ssr-deploy train --genotype ssr-cityscapes --data cityscapes:/data/cityscapes \\
          --out runs/ssr --device cuda
      ssr-deploy train --genotype ssr-cityscapes --data synthetic:200 --out runs/synth \\
          --size 128x256 --epochs 5 --batch 4
    """
    from ssr_deploy.data import open_dataset
    from ssr_deploy.genotype import Genotype
    from ssr_deploy.model.checkpoint import load_weights, read_checkpoint
    from ssr_deploy.model.net import build_model
    from ssr_deploy.train.trainer import TrainConfig, Trainer

    g = Genotype.load(genotype)
    g.check_input_size(*size)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SsrDeployError("--device cuda: no CUDA GPU is visible here; use --device cpu")
    last = Path(out) / "last.pt"
    if resume and not last.is_file():
        raise SsrDeployError(f"--resume: {last} does not exist; run without --resume first")
    if not resume and last.is_file():
        raise SsrDeployError(f"{out} already holds a run (last.pt); add --resume to continue "
                             "it, or choose another --out")
    train_set, val_set = open_dataset(source, "train", size), open_dataset(source, "val", size)
    net = build_model(g, len(train_set.classes))
    if weights:
        state = read_checkpoint(weights)
        if state.get("genotype_hash") != g.hash:
            raise SsrDeployError(f"{weights} was trained for another genotype than {g.name}; "
                                 "pass matching --genotype and --weights")
        load_weights(net, state["state_dict"], weights)
    config = TrainConfig(size=size, epochs=epochs, batch=batch, lr=lr, weight_decay=weight_decay,
                         preset=preset, class_weights=class_weights, workers=workers,
                         seed=seed, device=device)
    trainer = Trainer(net, train_set, val_set, out, config)
    if resume:
        trainer.resume(last)
    final = trainer.fit()
    if final:
        click.echo(f"epoch {final['epoch']}: loss {final['loss']:.4f}, val mIoU "
                   f"{100 * final['val_miou']:.2f}, best {100 * trainer.best:.2f}; wrote "
                   f"{out}/last.pt, best.pt, log.jsonl, curves.png")


@main.command("eval")
@click.option("--weights", required=True, help="A checkpoint (.pt).")
@click.option("--data", "source", required=True,
              help="cityscapes:DIR, folder:DIR or synthetic[:N].")
@click.option("--split", default="val", show_default=True)
@click.option("--size", type=SIZE, default="512x1024", show_default=True,
              help="Network input size (labels are scored at their own size).")
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--save-preds", type=click.Path(file_okay=False),
              help="Write labelId PNGs for the official Cityscapes evaluation.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(weights, source, split, size, flip, save_preds, device, as_json) -> None:
    """Per-class IoU, mIoU and pixel accuracy of a checkpoint on a dataset.

    \b
    Example:
      ssr-deploy eval --weights runs/train/best.pt --data cityscapes:/data/cityscapes --flip
    """
    from ssr_deploy.data import open_dataset
    from ssr_deploy.model.checkpoint import load_model
    from ssr_deploy.train.evaluate import evaluate, format_result

    net = load_model(weights)
    net.genotype.check_input_size(*size)
    dataset = open_dataset(source, split, size)
    if len(dataset.classes) != net.num_classes:
        raise SsrDeployError(f"{weights} predicts {net.num_classes} classes, the data has "
                             f"{len(dataset.classes)}")
    result = evaluate(net, dataset, size, flip, save_preds, device, progress=not as_json)
    click.echo(json.dumps(result, indent=2) if as_json else format_result(result))


if __name__ == "__main__":
    main()
