"""`ssr-deploy search`."""

from __future__ import annotations

import click

from ssr_deploy.cli.base import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SIZE,
    Number,
    check_run_folder,
    describe_settings,
    given,
    main,
    resume_settings,
)
from ssr_deploy.data.weights import CHOICES
from ssr_deploy.errors import UsageError

#: config field -> CLI parameter, for --resume
SEARCH_PARAMS = {"size": "size", "epochs": "epochs", "warmup_epochs": "warmup", "batch": "batch",
                 "tau": "tau", "settle": "settle", "shrink_every": "shrink_every",
                 "target_ratio": "target_ratio",
                 "target_gmacs": "target_gmacs", "w_ce": "loss_weights",
                 "w_ssr_op": "loss_weights", "w_ssr_out": "loss_weights",
                 "w_ssr_mid": "loss_weights", "w_cost": "loss_weights", "arch_lr": "arch_lr",
                 "normalisation": "normalisation", "seed": "seed", "data": "source",
                 "class_weights": "class_weights", "arch_data": "arch_data",
                 "weight_clip": "weight_clip", "ssr_width_mean": "ssr_width_mean",
                 "cost": "cost", "lut": "lut", "target_ms": "target_ms",
                 "cost_constraint": "cost_constraint", "dual_lr": "dual_lr",
                 "cost_band": "cost_band"}
RESUMED = ("data", "size", "epochs", "batch", "tau", "arch_lr", "seed")


@main.command()
@click.option("--data", "source", required=True,
              help="cityscapes:DIR, folder:DIR or synthetic[:N].")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="genotype.json, discrete.pt, search_log.jsonl, search.png, search.pt.")
@click.option("--space", "space_file", type=click.Path(dir_okay=False),
              help="Search space JSON. [default: the paper's]")
@click.option("--size", type=SIZE, default="512x1024", show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=0, show_default=True,
              help="Epochs of weight steps only, before arch steps and shrinking.")
@click.option("--batch", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--tau", type=FRACTION, default=0.1, show_default=True,
              help="Shrinking removes options <= tau x their decision's max.")
@click.option("--settle", type=Number(0, 1, high_open=True),
              help="Over this last fraction of the epochs tau rises to 1, so the search ends "
              "with one option per decision, the anchor's with the cost held (0: never, the "
              "authors'). [default: 0.2 with --cost-constraint dual, 0 with off]")
@click.option("--shrink-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Shrink every N steps (0: after each epoch).")
@click.option("--target-ratio", type=Number(0, 1, low_open=True), default=0.6, show_default=True,
              help="Target cost as a fraction of the largest network in the space.")
@click.option("--target-gmacs", type=POSITIVE, help="Target cost in GMACs, in the --cost "
              "measure (overrides the ratio).")
@click.option("--lut", type=click.Path(dir_okay=False), default="",
              help="A latency table (`ssr-deploy lut build`): the cost becomes the expected "
                   "latency on its device.")
@click.option("--target-ms", type=POSITIVE, help="With --lut: the target latency in ms on the "
              "table's device. [default: --target-ratio of the slowest network's]")
@click.option("--cost", type=click.Choice(["backbone", "network"]), default="backbone",
              show_default=True, help="What the cost counts: backbone = stem, downsamplers, "
              "searched layers + a 1x1 classifier (the authors'); network = with the head.")
@click.option("--cost-constraint", type=click.Choice(["dual", "off"]), default="dual",
              show_default=True,
              help="dual: the target is a constraint: a multiplier on the cost that grows while "
              "the cost is off target (dual ascent), shrinking that never removes the most "
              "probable network in the band (the anchor), and settling that ends on it; "
              "off: the fixed cost weight alone, no settling (the authors'; with --lut weight "
              "200 unless --loss-weights says otherwise).")
@click.option("--cost-band", type=Number(0, 0.5, low_open=True, high_open=True), default=0.03,
              show_default=True, help="With --cost-constraint dual: the found network's cost "
              "lies within target x (1 +- this).")
@click.option("--dual-lr", type=POSITIVE, default=5.0, show_default=True,
              help="With --cost-constraint dual: the multiplier's step per unit of relative "
              "violation, each arch step.")
@click.option("--class-weights", type=click.Choice(CHOICES), default="auto", show_default=True,
              help="Of the CE in both steps; as for train (auto: paper on cityscapes: data, "
              "erfnet otherwise).")
@click.option("--arch-data", type=click.Choice(["full", "split"]), default="full",
              show_default=True, help="full: weight and arch batches both from the whole "
              "set, one arch step per weight step (the authors'); split: halves, 50/50.")
@click.option("--weight-clip", type=NON_NEGATIVE, default=0.0, show_default=True,
              help="Max norm of the weight gradients; 0: not clipped (the authors').")
@click.option("--ssr-width-mean", type=click.Choice(["all", "surviving"]), default="all",
              show_default=True, help="The SSR width terms average over every (layer, op) "
              "row, removed ones as 0 (the authors'), or over the surviving rows only.")
@click.option("--loss-weights", default="100,30,15,15,1", show_default=True,
              metavar="CE,OP,OUT,MID,COST", help="Weights of the arch objective's terms. "
              "With --lut and --cost-constraint off the cost's default is 200 (1 lets the "
              "CE outvote a latency target; search.searcher.LATENCY_COST_WEIGHT).")
@click.option("--arch-lr", type=POSITIVE, default=2e-3, show_default=True,
              help="Adam lr of the architecture weights (raise it for short searches).")
@click.option("--normalisation", type=click.Choice(["sigmoid", "softmax"]), default="sigmoid",
              show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue OUT/search.pt exactly, with its "
              "settings.")
@click.option("--override", is_flag=True, help="With --resume: use the settings given here "
              "where they differ from the run's.")
@click.pass_context
def search(ctx, source, out, space_file, size, epochs, warmup, batch, tau, settle, shrink_every,
           target_ratio, target_gmacs, lut, target_ms, cost, cost_constraint, dual_lr,
           cost_band, class_weights, arch_data, weight_clip, ssr_width_mean, loss_weights, arch_lr,
           normalisation, device, seed, resume, override) -> None:
    """SSR search: supernet + SSR loss + progressive shrinking -> a discrete genotype.

    \b
    Examples:
      ssr-deploy search --data cityscapes:/data/cityscapes --out runs/search --device cuda
      ssr-deploy search --data synthetic:64 --size 64x128 --epochs 6 --shrink-every 5 \\
          --out runs/tiny
      ssr-deploy search --data cityscapes:/data/cityscapes --out runs/fast \\
          --lut lut.json --target-ms 8      (lut.json: `ssr-deploy lut build` on the device)
      ssr-deploy train --init-from-search runs/search --data cityscapes:/data/cityscapes ...
    """
    from ssr_deploy.data import open_dataset
    from ssr_deploy.search.searcher import SearchConfig, Searcher, check_config
    from ssr_deploy.search.space import SearchSpace

    try:
        w_ce, w_op, w_out, w_mid, w_cost = (NON_NEGATIVE.convert(v, None, None)
                                            for v in loss_weights.split(","))
    except (ValueError, click.BadParameter):
        raise click.BadParameter(f"{loss_weights!r}: give five finite numbers >= 0, e.g. "
                                 "100,30,15,15,1", param_hint="--loss-weights") from None
    if not resume and w_ce == 0:
        raise click.BadParameter("the CE weight must be above 0 (it is what the search "
                                 "learns from)", param_hint="--loss-weights")
    if not given(ctx, "loss_weights"):
        w_cost = None  # the measure's and the constraint's own (SearchConfig.w_cost)
    check_run_folder(out, resume, "search.pt")
    space = SearchSpace.load(space_file) if space_file else SearchSpace()
    config = SearchConfig(size=size, epochs=epochs, warmup_epochs=warmup, batch=batch, tau=tau,
                          settle=settle, shrink_every=shrink_every, target_ratio=target_ratio,
                          target_gmacs=target_gmacs, lut=lut, target_ms=target_ms,
                          arch_lr=arch_lr, w_ce=w_ce,
                          w_ssr_op=w_op, w_ssr_out=w_out, w_ssr_mid=w_mid, w_cost=w_cost,
                          normalisation=normalisation, device=device, seed=seed, data=source,
                          cost=cost, class_weights=class_weights, arch_data=arch_data,
                          weight_clip=weight_clip, ssr_width_mean=ssr_width_mean,
                          cost_constraint=cost_constraint, dual_lr=dual_lr,
                          cost_band=cost_band)
    if resume:
        from ssr_deploy.search.searcher import saved_config

        config, changes = resume_settings(ctx, config, saved_config(out), SEARCH_PARAMS,
                                          override)
        size = config.size
    try:
        config = check_config(config, space)  # refusals before any work
    except UsageError as e:  # options that do not go together: click's usage error
        raise click.UsageError(str(e)) from None
    dataset = open_dataset(config.data, "train", size)
    from ssr_deploy.train.trainer import check_training_memory

    check_training_memory(space.stem_channels, None, config.batch, size, config.device,
                          maps=160)  # the supernet keeps every candidate's maps
    searcher = Searcher(space, dataset, out, config)
    if resume:
        searcher.resume()
        click.echo(f"resuming {out} after epoch {searcher.epoch}/{config.epochs}: "
                   + describe_settings(config, RESUMED) + (
                       f"; changed: {'; '.join(changes)}" if changes else ""), err=True)
    result = searcher.run()
    g = result["genotype"]
    click.echo(_ending(result, config.cost_band))
    from ssr_deploy.model.complexity import count_macs

    cost = searcher.measure.line(searcher.found_cost(g), searcher.target)
    click.echo(f"depth {' + '.join(str(s.depth) for s in g.stages)}; {cost}; whole "
               f"network {count_macs(g, size)[0] / 1e9:.3f} GMACs at {size[0]}x{size[1]}; "
               f"wrote {out}/genotype.json, discrete.pt and config.json")


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
