"""A search's settings, each declared once (its flag, type, default and help), and the
checks that refuse what cannot run before any work. Imports no torch: the CLI builds its
options from here."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from ssr_deploy.data.weights import CHOICES
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.settings import (
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    Number,
    count,
    data_source,
    input_size,
    setting,
)

#: a loss weight: 1e308 was taken and overflowed the objective to inf deep in the supernet
LOSS_WEIGHT = Number(0, 1e6)

if TYPE_CHECKING:
    from ssr_deploy.space import SearchSpace

#: the cost weight of a latency target with the constraint off: with the authors' 1 the CE
#: outvotes it (measured: benchmarks/latency_lut.py, README)
LATENCY_COST_WEIGHT = 200.0
#: the fraction of the epochs settling takes with the constraint held (benchmarks/search_target.py)
SETTLE = 0.2

_LOSS_HELP = ("Weights of the arch objective's terms. With --lut and --cost-constraint off the "
              f"cost's default is {LATENCY_COST_WEIGHT:g} (1 lets the CE outvote a latency "
              "target; search.config.LATENCY_COST_WEIGHT).")


@dataclass
class SearchConfig:
    data: str = data_source()
    size: tuple[int, int] = input_size()
    epochs: int = count(200, "--epochs")
    warmup_epochs: int = count(0, "--warmup", "Epochs of weight steps only, before arch steps "
                               "and shrinking.", low=0)
    batch: int = count(6, "--batch", "The global batch (split over the processes under "
                       "torchrun).")
    tau: float = setting(0.1, "--tau", "Shrinking removes options <= tau x their decision's "
                         "max.", type=FRACTION)
    #: None: SETTLE with the constraint held, 0 (the authors') without
    settle: float | None = setting(
        None, "--settle", "Over this last fraction of the epochs tau rises to 1, so the search "
        "ends with one option per decision, the anchor's with the cost held (0: never, the "
        "authors'). [default: 0.2 with --cost-constraint dual, 0 with off]",
        type=Number(0, 1, high_open=True))
    shrink_every: int = count(0, "--shrink-every", "Shrink every N steps (0: after each "
                              "epoch).", low=0)
    target_ratio: float = setting(0.6, "--target-ratio", "Target cost as a fraction of the "
                                  "largest network in the space.", type=Number(0, 1, low_open=True))
    target_gmacs: float | None = setting(None, "--target-gmacs", "Target cost in GMACs, in the "
                                         "--cost measure (overrides the ratio).", type=POSITIVE)
    lut: str = setting("", "--lut", "A latency table (`ssr-deploy lut build`): the cost becomes "
                       "the expected latency on its device.", type=click.Path(dir_okay=False))
    target_ms: float | None = setting(None, "--target-ms", "With --lut: the target latency in "
                                      "ms on the table's device. [default: --target-ratio of the "
                                      "slowest network's]", type=POSITIVE)
    cost: str = setting("backbone", "--cost", "What the cost counts: backbone = stem, "
                        "downsamplers, searched layers + a 1x1 classifier (the authors'); "
                        "network = with the head.", type=click.Choice(["backbone", "network"]))
    cost_constraint: str = setting(
        "dual", "--cost-constraint", "dual: the target is a constraint: a multiplier on the "
        "cost that grows while the cost is off target (dual ascent), shrinking that never "
        "removes the most probable network in the band (the anchor), and settling that ends "
        "on it; off: the fixed cost weight alone, no settling (the authors'; with --lut weight "
        "200 unless --loss-weights says otherwise).", type=click.Choice(["dual", "off"]))
    cost_band: float = setting(0.03, "--cost-band", "With --cost-constraint dual: the found "
                               "network's cost lies within target x (1 +- this).",
                               type=Number(0, 0.5, low_open=True, high_open=True))
    land: str = setting("auto", "--land", "With --lut and the cost held: at the first "
                        "shrinking step and where settling begins, time the network the search "
                        "is heading for on the table's path on this machine (exported and run "
                        "as a user runs it, at the table's speed) and move the aim by what it "
                        "measured, so the network found runs in --target-ms as measured (up "
                        "to 4 networks timed; the found one is timed at the end: "
                        "landing.json). auto: where this machine and libraries are the "
                        "table's.",
                        type=click.Choice(["auto", "on", "off"]))
    dual_lr: float = setting(5.0, "--dual-lr", "With --cost-constraint dual: the multiplier's "
                             "step per unit of relative violation, each arch step.",
                             type=POSITIVE)
    class_weights: str = setting("auto", "--class-weights", "Of the CE in both steps; as for "
                                 "train (auto: paper on cityscapes: data, erfnet otherwise).",
                                 type=click.Choice(CHOICES))
    arch_data: str = setting("full", "--arch-data", "full: weight and arch batches both from "
                             "the whole set, one arch step per weight step (the authors'); "
                             "split: halves, 50/50.", type=click.Choice(["full", "split"]))
    weight_clip: float = setting(0.0, "--weight-clip", "Max norm of the weight gradients; 0: not "
                                 "clipped (the authors').", type=NON_NEGATIVE)
    ssr_width_mean: str = setting("all", "--ssr-width-mean", "The SSR width terms average over "
                                  "every (layer, op) row, removed ones as 0 (the authors'), or "
                                  "over the surviving rows only.",
                                  type=click.Choice(["all", "surviving"]))
    w_ce: float = setting(100.0, "--loss-weights", _LOSS_HELP, type=LOSS_WEIGHT, part="CE")
    w_ssr_op: float = setting(30.0, "--loss-weights", type=LOSS_WEIGHT, part="OP")
    w_ssr_out: float = setting(15.0, "--loss-weights", type=LOSS_WEIGHT, part="OUT")
    w_ssr_mid: float = setting(15.0, "--loss-weights", type=LOSS_WEIGHT, part="MID")
    #: None: 1 (the authors'), LATENCY_COST_WEIGHT for --lut with the constraint off
    w_cost: float | None = setting(None, "--loss-weights", type=LOSS_WEIGHT, part="COST",
                                   shown="1")
    arch_lr: float = setting(2e-3, "--arch-lr", "Adam lr of the architecture weights (raise it "
                             "for short searches).", type=POSITIVE)
    normalisation: str = setting("sigmoid", "--normalisation",
                                 type=click.Choice(["sigmoid", "softmax"]))
    device: str = setting("cpu", "--device", kept=False)
    save_every: float = setting(60.0, "--save-every", "Seconds between writes of search.pt "
                                "(the state --resume continues, 3x the supernet's weights): "
                                "short epochs are saved together; an interrupted search "
                                "writes its last finished epoch first. 0: every epoch.",
                                type=NON_NEGATIVE, kept=False)
    seed: int = setting(0, "--seed", type=int)
    weight_lr: float = 3e-4
    weight_decay: float = 1e-4
    arch_decay: float = 1e-3
    arch_clip: float = 5.0  # max norm of the arch gradients
    workers: int = 0


def check_config(config: SearchConfig, space: SearchSpace) -> SearchConfig:
    """Refuse what cannot run, before any work; resolve what depends on other settings
    (the cost weight). Returns the resolved config."""
    for name, value, allowed in (("arch_data", config.arch_data, ("full", "split")),
                                  ("ssr_width_mean", config.ssr_width_mean,
                                   ("all", "surviving")),
                                  ("cost_constraint", config.cost_constraint,
                                   ("dual", "off"))):
        if value not in allowed:
            raise SsrDeployError(f"{name} {value!r}: use one of {', '.join(allowed)}")
    if config.w_ce <= 0:
        raise UsageError("--loss-weights: the CE weight must be above 0 (it is what the "
                         "search learns from)")
    if config.settle is None:
        config = dataclasses.replace(config, settle=SETTLE if config.cost_constraint == "dual"
                                     else 0.0)
    if not 0 <= config.settle < 1:
        raise SsrDeployError(f"settle {config.settle}: use a fraction of the epochs in [0, 1) "
                             "(0.2: tau rises to 1 over the last fifth; 0: never)")
    if not 0 < config.cost_band < 0.5:
        raise SsrDeployError(f"cost band {config.cost_band}: use a fraction of the target "
                             "between 0 and 0.5 (e.g. 0.03)")
    if config.target_ms and not config.lut:
        raise UsageError("--target-ms needs --lut (a latency table from `ssr-deploy lut "
                         "build` on the target device)")
    if config.land == "on" and not config.lut:
        raise UsageError("--land on needs --lut: a search lands on milliseconds measured on "
                         "the table's path")
    if config.lut and config.target_gmacs:
        raise UsageError("--target-gmacs and --lut: the cost is either MACs or latency; "
                         "give --target-ms with --lut")
    multiple = space.stages[-1].stride * 2
    h, w = config.size
    if h % multiple or w % multiple:
        raise SsrDeployError(f"--size {h}x{w}: the search needs multiples of {multiple} "
                             "(half-resolution ops at the last stage)")
    if config.w_cost is None:
        latency_off = config.lut and config.cost_constraint == "off"
        config = dataclasses.replace(config, w_cost=LATENCY_COST_WEIGHT if latency_off else 1.0)
    return config
