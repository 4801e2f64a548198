"""`ssr-deploy data synth`."""

from __future__ import annotations

from pathlib import Path

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import quiet_option
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.settings import SIZE


@main.group()
def data() -> None:
    """Datasets: write synthetic street scenes in the Cityscapes layout."""


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write leftImg8bit/ and gtFine/ into.")
@click.option("--n", type=click.IntRange(min=1, max=1_000_000), default=100, show_default=True,
              help="Scenes (80% train, 20% val).")
@click.option("--size", type=SIZE, default="256x512", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--video", type=click.Path(dir_okay=False), help="Also render a moving scene.")
@click.option("--frames", type=click.IntRange(min=1, max=100_000), default=90,
              show_default=True, help="Frames of the --video.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out folder (once the new "
              "scenes are complete).")
@quiet_option
def data_synth(out, n, size, seed, video, frames, overwrite) -> None:
    """Procedural street scenes labelled with Cityscapes ids, deterministic by seed.

    \b
    Example:
      ssr-deploy data synth --out data/synth --n 200 --size 256x512 --video drive.mp4
      ssr-deploy eval --weights best.pt --data cityscapes:data/synth
    """
    from ssr_deploy.data import write_cityscapes_layout
    from ssr_deploy.data.synthetic import render_video
    from ssr_deploy.io import check_disk, check_outputs_spare_inputs
    from ssr_deploy.media import VideoOutput
    from ssr_deploy.progress import progress
    from ssr_deploy.runs import output_folder

    if video and Path(video).suffix.lower() not in VideoOutput.FOURCC:
        raise SsrDeployError(f"--video {video}: give a video file "
                             f"({', '.join(VideoOutput.FOURCC)})")

    if video and Path(out).resolve() in Path(video).resolve().parents:
        raise SsrDeployError(f"--video {video} is inside --out {out}, which is replaced whole; "
                             "write the video elsewhere")
    check_outputs_spare_inputs([("--video", video)], [])
    if not Path(out).resolve().parent.is_dir():
        raise SsrDeployError(f"cannot write {out}: its parent folder does not exist")
    # PNGs of these scenes take under 2 bytes a pixel with their labels (measured: ~1.2)
    check_disk(Path(out).resolve().parent, 2.0 * n * size[0] * size[1], f"{n} scenes")
    with output_folder(out, overwrite) as building, \
            progress("scenes", n, "scene") as bar:
        counts = write_cityscapes_layout(building, n, size, seed, progress=lambda: bar.update(1))
    click.echo(f"wrote {counts['train']} train and {counts['val']} val scenes to {out} "
               "(Cityscapes layout: cityscapes:" + str(out) + ")")
    if video:
        render_video(video, frames, size, seed)
        click.echo(f"wrote {video} ({frames} frames)")
