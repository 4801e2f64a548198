"""`ssr-deploy bench | profile | video`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import RunModel, model_size, quiet_option
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.limits import MAX_BATCH
from ssr_deploy.settings import SIZE, Number, options


def open_segmenter(path: str, backend: str | None, device: str | None,
                   size: tuple[int, int] | None, letterbox: bool = False,
                   precision: str | None = None):
    """A Segmenter for ``path``: a checkpoint asked to run in another backend goes through
    its exported ONNX (cached by content, see export.cache); ``size`` is for checkpoints;
    ``precision``: the float precision for a backend that chooses one at run time (OpenVINO).
    What the backend says about how it runs here is printed."""
    from ssr_deploy.backends import BY_SUFFIX, backend_for, takes_option
    from ssr_deploy.runtime.segmenter import Segmenter

    options = {}
    if precision:
        name = backend_for(path, backend)
        if not takes_option(name, "precision"):
            raise SsrDeployError(f"--precision {precision} is a runtime precision of the "
                                 f"openvino backend; {name} runs the precision its graph has "
                                 "(export the precision you want)")
        options["precision"] = precision
    if BY_SUFFIX.get(Path(path).suffix.lower()) == "torch":
        size = model_size(path, size)
        if backend in (None, "torch"):
            seg = Segmenter.load(path, "torch", device, letterbox, size=size)
            return seg
        from ssr_deploy.export.cache import onnx_for_checkpoint

        path = str(onnx_for_checkpoint(path, size))
    seg = Segmenter.load(path, backend, device, letterbox, **options)
    for note in seg.backend.notes:
        click.echo(f"note: {note}", err=True)
    return seg


def _entries(model: str, backend: str | None, device: str | None, compare: str | None,
             size: tuple[int, int] | None, precision: str | None = None
             ) -> list[tuple[str, object]]:
    """MODEL with its backend, then each --compare entry: a backend name (optionally
    ``name:device``) applied to MODEL, or another model file."""

    specs = [(model, backend, device)]
    for item in filter(None, (compare or "").split(",")):
        item = item.strip()
        if Path(item).is_file():
            specs.append((item, None, None))
        else:
            name, _, dev = item.partition(":")
            specs.append((model, name, dev or None))
    entries = []
    for k, (path, name, dev) in enumerate(specs):
        seg = open_segmenter(path, name, dev, size, precision=precision if k == 0 else None)
        label = seg.backend.name + (f":{dev}" if dev else "")
        if path != model:
            label += f" ({Path(path).name})"
        entries.append((label, seg))
    return entries


@main.command()
@click.argument("model")
@options(RunModel)
@click.option("--frame-size", type=SIZE, help="Frame size fed in (resized on the host). "
              "[default: the model's input size]")
@click.option("--batch", "batches", default="1", show_default=True,
              help="Comma-separated batch sizes, e.g. 1,4,8.")
@click.option("--iters", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--compare", help="Comma-separated backends (torch, openvino, onnxruntime:cuda) "
              "or model files to time side by side with MODEL.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write results, ratios and the machine to this JSON file.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Write a latency histogram PNG (with the paper's 175 FPS).")
@quiet_option
def bench(model, backend, device, size, frame_size, batches, iters, warmup, precision, compare,
          json_path, plot_path) -> None:
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
    if not batch_list or min(batch_list) < 1 or max(batch_list) > MAX_BATCH:
        raise click.BadParameter(f"batch sizes are 1 to {MAX_BATCH}", param_hint="--batch")
    from ssr_deploy.io import check_outputs_spare_inputs

    check_outputs_spare_inputs([("--json", json_path), ("--plot", plot_path)],
                               [model, *(c for c in (compare or "").split(",")
                                         if Path(c.strip()).is_file())])
    from ssr_deploy.io import check_output_path

    for path in filter(None, (json_path, plot_path)):  # before minutes of measuring
        check_output_path(Path(path))
    if plot_path:
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:
            raise ImportError("--plot draws with matplotlib", name="matplotlib")
    entries = _entries(model, backend, device, compare, size, precision)
    try:
        for label, seg in entries:
            b.check_batches(label, seg, batch_list, frame_size)
        results = b.run(entries, batch_list, iters, warmup, frame_size, progress=True)
    finally:
        for _, seg in entries:
            seg.close()
    click.echo(b.format_results(results))
    b.write_outputs(results, json_path, plot_path)
    for path in filter(None, (json_path, plot_path)):
        click.echo(f"wrote {path}")


@main.command()
@click.argument("source")
@click.option("--model", required=True, help="A .engine, .onnx, .xml (OpenVINO IR) or .pt.")
@click.option("-o", "--output", "out", required=True,
              help="An .mp4/.avi file, or a folder for PNG frames (named as a folder "
              "source's images).")
@options(RunModel)
@click.option("--max-frames", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--alpha", type=Number(0, 1), default=0.5, show_default=True,
              help="Overlay opacity.")
@click.option("--letterbox", is_flag=True, help="Keep the aspect ratio (pad, do not stretch).")
@click.option("--draw-fps", is_flag=True, help="Draw the live FPS on the frames.")
@click.option("--show", is_flag=True, help="Show a window (needs a display); q or Esc quits.")
@click.option("--reconnects", type=click.IntRange(0, 100), default=5, show_default=True,
              help="A stream that drops is opened again this many times in a row, with a "
              "growing pause (0.5, 1, 2 ... s).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty PNG folder -o (once the "
              "new frames are complete).")
@quiet_option
def video(source, model, out, backend, device, size, max_frames, alpha, precision, letterbox,
          draw_fps, show, reconnects, overwrite) -> None:
    """Segment a video file, image folder, camera or network stream in real time.

    SOURCE: a video file, a folder of images, a camera index (0, 1 ...) or a stream URL
    (rtsp://, http(s)://, rtmp://, udp://, srt:// ... as OpenCV's FFmpeg opens them).
    Decode, inference and overlay+encode run on three threads with bounded queues. From a
    camera or a live stream the newest frame is segmented and frames inference cannot keep up
    with are dropped (counted in the summary), so the output stays live. Ctrl-C stops cleanly
    and leaves a playable file.

    \b
    Examples:
      ssr-deploy video drive.mp4 --model model.onnx -o drive_seg.mp4 --draw-fps
      ssr-deploy video rtsp://192.168.1.20:554/stream1 --model model.xml -o cam.mp4
      ssr-deploy video 0 --model model.onnx -o cam.mp4 --show
      ssr-deploy video leftImg8bit/val/frankfurt --model model.onnx -o preds/
    """
    from ssr_deploy.progress import progress
    from ssr_deploy.runtime.sources import open_source
    from ssr_deploy.runtime.video import run_video

    if show:
        import os

        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise SsrDeployError("--show needs a display (none is set); drop --show and watch "
                                 "the output file")
    from ssr_deploy.io import check_outputs_spare_inputs
    from ssr_deploy.runtime.sources import is_stream

    check_outputs_spare_inputs([("-o", out)], [model] + ([] if is_stream(source) else [source]))
    say = lambda line: click.echo(f"note: {line}", err=True)  # noqa: E731
    with open_segmenter(model, backend, device, size, letterbox, precision) as seg:
        src = open_source(source, max_frames, reconnects, say)
        with progress("video", total=src.expected, unit="frame") as bar:

            def on_frame(done: int, fps: float) -> None:
                bar.update(done - bar.n, fps=f"{fps:.1f}")

            stats = run_video(seg, src, out, max_frames, alpha, draw_fps, show,
                              on_frame=on_frame, overwrite=overwrite)
    note = " (interrupted: the file is complete up to there)" if stats.interrupted else ""
    if not stats.interrupted and stats.expected and stats.frames < stats.expected:
        note = (f" (the source ended early: its header gives {stats.expected} frames; it may "
                "be truncated)")
    live = ""
    if src.live:
        live = (f"; {stats.dropped} frames dropped to stay live (inference was slower than "
                f"the source)" if stats.dropped else "; no frame dropped")
        live += f", {stats.reconnects} reconnects" if stats.reconnects else ""
    click.echo(f"wrote {stats.output}: {stats.frames} frames in {stats.seconds:.1f} s, "
               f"{stats.fps:.1f} FPS{note}{live}")


@main.command("profile")
@click.argument("model")
@options(RunModel)
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--top", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--trace", type=click.Path(dir_okay=False), help="Write a Chrome trace JSON.")
@click.option("--json", "as_json", is_flag=True)
@quiet_option
def profile_cmd(model, backend, size, iters, top, trace, device, precision, as_json) -> None:
    """Per-layer times mapped to genotype layers, slowest first: onnxruntime's profiler,
    OpenVINO's performance counters, TensorRT's IProfiler, or torch.profiler (device time of
    the kernels each module launches on a GPU, op time on the CPU, host time beside it, and
    the top kernels and ops).

    \b
    Examples:
      ssr-deploy profile model.onnx --trace ort_trace.json
      ssr-deploy profile model.xml --top 20                 # an OpenVINO IR
      ssr-deploy profile model.engine --top 20
      ssr-deploy profile best.pt --backend torch --device cuda --trace torch_trace.json
    """
    from ssr_deploy.io import check_outputs_spare_inputs
    from ssr_deploy.runtime.profile import format_profile, profile

    check_outputs_spare_inputs([("--trace", trace)], [model])
    result = profile(model, backend, iters, trace, model_size(model, size), device, precision)
    click.echo(json.dumps(result, indent=2) if as_json else format_profile(result, top))
