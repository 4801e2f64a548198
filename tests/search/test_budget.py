"""The cost constraint's discrete side: tables that cost networks as the search measures
them, exact cheapest/dearest networks of a shrunk space, the most probable network in the
band (the anchor), and shrinking that never removes it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ssr_deploy.search.budget import Budget, Pick, argmax, bounds, latency_tables, macs_tables
from ssr_deploy.search.cost import expected_macs, genotype_cost
from ssr_deploy.search.supernet import SuperNet, decode
from ssr_deploy.space import SearchSpace, StageSpace
from tests.latency.test_latency import multilinear, synthetic_table

MICRO = SearchSpace(stem_channels=8, stages=(StageSpace(4, 16, 2, 0.0), StageSpace(8, 24, 2, 0.0)),
                    dilations=(1, 2), width_choices=2)
SIZE = (32, 64)


def _random_state(net: SuperNet, seed: int, keep: float = 0.5):
    """Random architecture weights and masks (every decision keeps at least one option)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for alpha in net.arch_parameters():
            alpha.copy_(torch.randn(alpha.shape, generator=g) * 2)
        for valid in (net.op_valid, net.mid_valid, net.out_valid):
            valid.copy_(torch.rand(valid.shape, generator=g) < keep)
            valid[..., 1] = True
    masks = tuple(m.numpy() for m in (net.op_valid, net.mid_valid, net.out_valid))
    logp = tuple(p.detach().clamp_min(1e-30).log().double().numpy() for p in net.probs())
    return masks, logp


@pytest.mark.parametrize("measure", ["backbone", "network"])
def test_the_tables_cost_a_network_as_the_search_measures_it(measure):
    space = SearchSpace()
    net, tables = SuperNet(space, 19), macs_tables(space, (64, 128), measure, 19)
    for seed in range(4):
        masks, logp = _random_state(net, seed)
        assert argmax(tables, masks, logp).cost == genotype_cost(decode(net), (64, 128),
                                                                 measure)
    full = float(expected_macs(SuperNet(space, 19), (64, 128), True, measure))
    everything = tuple(np.ones_like(m) for m in masks)
    assert bounds(tables, everything)[1] == pytest.approx(full)


def test_latency_tables_cost_a_network_as_the_table_predicts_it():
    space = SearchSpace()
    table = synthetic_table(space, multilinear, grid=3)
    net, tables = SuperNet(space, 19), latency_tables(table)
    for seed in range(3):
        masks, logp = _random_state(net, seed)
        predicted = table.predict(decode(net, classes=None))["latency_ms"]
        assert argmax(tables, masks, logp).cost == pytest.approx(predicted, rel=1e-9)


def _every_network(space, masks):
    """Each network of a masked space as per-layer choices (brute force)."""
    op_valid, mid_valid, out_valid = masks
    per_layer = []
    for li in range(op_valid.shape[0]):
        options = [None] if op_valid[li, 0] else []
        options += [(i, m, o) for i in range(1, op_valid.shape[1]) if op_valid[li, i]
                    for m in np.flatnonzero(mid_valid[li, i])
                    for o in np.flatnonzero(out_valid[li, i])]
        per_layer.append(options)
    return [list(c) for c in itertools.product(*per_layer)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cheapest_dearest_and_pick_are_exact_on_a_space_small_enough_to_enumerate(seed):
    net, tables = SuperNet(MICRO, 5), macs_tables(MICRO, SIZE, "network", 5)
    masks, logp = _random_state(net, seed, keep=0.6)
    costs = sorted(tables.cost(c) for c in _every_network(MICRO, masks))
    target = costs[len(costs) // 3]
    budget = Budget(tables, target, 0.03)
    assert bounds(tables, masks) == (pytest.approx(costs[0]), pytest.approx(costs[-1]))
    pick = budget.pick(masks, logp)
    assert budget.low <= pick.cost <= budget.high
    assert pick.cost == pytest.approx(tables.cost(pick.choices))
    op, mid, out = budget.masks_of(pick, masks)
    assert (op.sum(-1) == 1).all() and (op <= masks[0]).all()


def test_the_anchor_stays_in_the_band_where_the_cheapest_and_dearest_straddle_a_gap():
    """Cheapest below the band and dearest above it do not make a network in it: with two
    layers left whose options jump in cost, the band can fall in a gap. The anchor is a
    network, so it is in the band exactly when one exists; a known anchor is kept where the
    Lagrangian search alone would miss it."""
    net, tables = SuperNet(MICRO, 5), macs_tables(MICRO, SIZE, "backbone", 5)
    _, logp = _random_state(net, 4)
    op, mid, out = (np.zeros(m.shape, dtype=bool) for m in (net.op_valid, net.mid_valid,
                                                               net.out_valid))
    op[:, 0] = op[:, 1] = True  # skip or a full-resolution block, at its widest, per layer
    mid[:, 1, 0] = out[:, 1, 0] = True
    masks = op, mid, out
    costs = sorted({round(tables.cost(c)) for c in _every_network(MICRO, masks)})
    gaps = [(b - a) / a for a, b in zip(costs, costs[1:], strict=False)]
    i = int(np.argmax(gaps))
    assert gaps[i] > 0.1, gaps  # a gap wider than the band
    in_gap = Budget(tables, (costs[i] + costs[i + 1]) / 2, 0.03)
    cheapest, dearest = bounds(tables, masks)
    assert cheapest < in_gap.low and dearest > in_gap.high  # what an interval test accepts
    assert not in_gap.inside(in_gap.pick(masks, logp))  # and no network is in the band
    for target in costs[::3]:
        budget = Budget(tables, target, 0.03)
        pick = budget.pick(masks, logp)
        assert budget.inside(pick) and budget.allows(masks, pick)
        least = min((c for c in _every_network(MICRO, masks)
                     if budget.inside(Pick(c, tables.cost(c), 0.0))),
                    key=lambda c: _score(c, logp))  # the least probable network in the band
        known = Pick(least, tables.cost(least), 0.0)
        assert budget.pick(masks, logp, known).score >= pick.score  # known is a candidate


def _score(choices, logp):
    from ssr_deploy.search.budget import _score

    return _score(choices, logp, 0)
