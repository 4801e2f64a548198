"""`ssr-deploy demo`."""

from __future__ import annotations

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import quiet_option


@main.command()
@click.option("--out", default="ssr-demo", show_default=True, type=click.Path(file_okay=False),
              help="Folder for every artefact and report.md (a re-run reuses finished stages).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--quick", is_flag=True, help="Tiny sizes: about a minute (what CI runs).")
@quiet_option
def demo(out, device, quick) -> None:
    """The whole product on synthetic data: scenes -> SSR search -> retraining -> verified
    ONNX -> fp16/int8 ONNX and OpenVINO bf16/int8 IRs, each verified against fp32 -> every
    CPU path timed beside torch -> the video segmented by the fastest verified one ->
    report.md (+ a TensorRT engine where TensorRT and a GPU exist). Minutes on a 2-core
    CPU: from 3 to over 8, by the machine (its core speed, and what else runs on it).

    \b
    Example:
      ssr-deploy demo --out ssr-demo && cat ssr-demo/report.md
    """
    from ssr_deploy.app.demo import Demo

    figures = Demo(out, device, quick, progress=lambda text: click.echo(text, err=True)).run()
    se, be = figures["search"], figures["bench"]
    fastest = (f"fastest verified CPU path {be['fastest']} ({be['precision'][be['fastest']]}) "
               f"{be['fps'][be['fastest']]:.1f} FPS = {be['speedup']:.2f}x onnxruntime fp32"
               if "fastest" in be else f"onnxruntime {be['fps']['onnxruntime']:.1f} FPS")
    click.echo(f"search: op options {se['options_first']['op']} -> {se['options_last']['op']}; "
               f"train: val mIoU {100 * figures['train']['val_miou']:.1f}; {fastest}; torch "
               f"{be['fps']['torch']:.1f} FPS; video {figures['video']['frames']} frames")
    click.echo(f"wrote {out}/report.md (and genotype.json, model.onnx, bench.json, bench.png, "
               "search.png, samples/, overlay.mp4)")
