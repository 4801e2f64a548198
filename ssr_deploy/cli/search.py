"""`ssr-deploy search`."""

from __future__ import annotations

import click

from ssr_deploy.cli.group import main
from ssr_deploy.cli.options import quiet_option
from ssr_deploy.cli.resume import check_run_folder, describe_settings, resume_settings
from ssr_deploy.errors import UsageError
from ssr_deploy.search.config import SearchConfig
from ssr_deploy.settings import config_from, options, parameters

RESUMED = ("data", "size", "epochs", "batch", "tau", "arch_lr", "seed")


@main.command()
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="genotype.json, discrete.pt, search_log.jsonl, search.png, search.pt.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="Search space JSON. [default: the paper's]")
@options(SearchConfig)
@click.option("--resume", is_flag=True, help="Continue OUT/search.pt exactly, with its "
              "settings.")
@click.option("--override", is_flag=True, help="With --resume: use the settings given here "
              "where they differ from the run's.")
@click.pass_context
@quiet_option
def search(ctx, out, space_file, resume, override, **settings) -> None:
    """SSR search: supernet + SSR loss + progressive shrinking -> a discrete genotype.

    \b
    Examples:
      ssr-deploy search --data cityscapes:/data/cityscapes --out runs/search --device cuda
      ssr-deploy search --data synthetic:64 --size 64x128 --epochs 6 --shrink-every 5 \\
          --out runs/tiny
      ssr-deploy search --data cityscapes:/data/cityscapes --out runs/fast \\
          --lut lut.json --target-ms 8      (lut.json: `ssr-deploy lut build` on the device)
      torchrun --nproc_per_node 8 -m ssr_deploy search --data cityscapes:/data/cityscapes \\
          --out runs/search --device cuda --batch 8   (one search on 8 GPUs: --batch is global)
      ssr-deploy train --init-from-search runs/search --data cityscapes:/data/cityscapes ...
    """
    from ssr_deploy.data import open_dataset
    from ssr_deploy.distributed import split_batch, world_size
    from ssr_deploy.search.config import check_config
    from ssr_deploy.search.searcher import Searcher
    from ssr_deploy.space import SearchSpace

    check_run_folder(out, resume, "search.pt")
    space = SearchSpace.load(space_file) if space_file else SearchSpace()
    config = config_from(SearchConfig, ctx)
    if resume:
        from ssr_deploy.search.run_folder import saved_config

        config, changes = resume_settings(ctx, config, saved_config(out),
                                          parameters(SearchConfig), override)
    try:
        config = check_config(config, space)  # refusals before any work
    except UsageError as e:  # options that do not go together: click's usage error
        raise click.UsageError(str(e)) from None
    size = config.size
    share = split_batch(config.batch, world_size())  # torchrun: each process's part
    dataset = open_dataset(config.data, "train", size)
    from ssr_deploy.train.trainer import check_training_memory

    check_training_memory(space.stem_channels, None, share, size, config.device,
                          maps=160)  # the supernet keeps every candidate's maps
    searcher = Searcher(space, dataset, out, config)
    if resume:
        searcher.resume()
        if searcher.rank == 0:
            click.echo(f"resuming {out} after epoch {searcher.epoch}/{config.epochs}: "
                       + describe_settings(config, RESUMED) + (
                           f"; changed: {'; '.join(changes)}" if changes else ""), err=True)
    for note in searcher.notes if searcher.rank == 0 else ():
        click.echo(f"note: {note}", err=True)
    result = searcher.run()
    if searcher.rank != 0:  # rank 0 speaks for the job
        return
    g = result["genotype"]
    click.echo(_ending(result, config.cost_band))
    from ssr_deploy.model.complexity import count_macs

    cost = searcher.measure.line(searcher.found_cost(g), searcher.target)
    click.echo(f"depth {' + '.join(str(s.depth) for s in g.stages)}; {cost}; whole "
               f"network {count_macs(g, size)[0] / 1e9:.3f} GMACs at {size[0]}x{size[1]}; "
               f"wrote {out}/genotype.json, discrete.pt and config.json")
    if found := result.get("measured"):
        click.echo(f"measured on {searcher.measure.table.describe()} here: {found['ms']:.2f} ms "
                   f"at the table's speed ({found['raw_ms']:.2f} ms as run, the machine at "
                   f"{1 / found['machine_speed']:.2f}x its speed in the table), "
                   f"{found['error']:+.1%} from the target; {len(found['rounds'])} networks "
                   f"timed to land (landing.json)")


def _ending(result: dict, band: float) -> str:
    """How the search ended, in one line."""
    forced = result["forced"]
    if result["ended"] == "converged":
        return "converged: every decision has one option"
    if result["ended"] == "settled":
        return (f"settled: every decision has one option, {forced['decisions']} of them "
                f"settled by the rising tau, losing {forced['mass']:.2f} of their probability "
                "on average")
    how = ("by argmax" if result["ended"] == "argmax" else
           f"to the most probable network within {band:.0%} of the target (the argmax was "
           "not)")
    return (f"stopped after {result['epochs']} epochs and discretised {how}; probability "
            f"mass discarded per decision: {result['discarded_mass']}")
