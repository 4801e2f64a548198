"""From parts to whole networks: the calibration a table is built with (its fit, the
reference-scaled times), applied the same way by the exact prediction, the supernet's
expected latency and the search's solver; a table from before calibration refused."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.latency import calibrate
from ssr_deploy.latency.table import LatencyTable
from ssr_deploy.search.budget import latency_tables, space_range
from tests.latency.test_latency import TINY, multilinear, synthetic_table


def test_the_fit_recovers_how_parts_make_a_network():
    rng = np.random.default_rng(0)
    truth = np.array([3.0, 1.1, 0.9, 0.7, 0.8, 0.4, 0.05])
    rows = [[1.0, *rng.uniform(2, 10, 4), rng.integers(2, 12), rng.uniform(1, 20)]
            for _ in range(16)]
    measured = [float(np.dot(truth, r)) for r in rows]
    fitted = calibrate.fit(rows, measured)
    predicted = [float(np.dot(fitted, r)) for r in rows]
    assert np.max(np.abs(np.array(predicted) / measured - 1)) < 0.02
    assert max(abs(e) for e in calibrate.leave_one_out(rows, measured)) < 0.05
    # with no networks to tell otherwise, the prior: the plain sum of parts
    assert calibrate.fit([[1.0, 0, 0, 0, 0, 0, 0]], [1e-9]) == pytest.approx(
        list(calibrate.PRIOR), abs=1e-6)


def test_a_slow_stretch_of_the_machine_is_scaled_out():
    """Scaled only where the references on both sides say the machine was slow: a part
    measured where the load began or ended between two references keeps its time (the
    least over passes deals with it), so nothing is scaled below a fast machine's time."""
    ref = calibrate.REFERENCE
    timeline = [[ref, 10.0], ["a", 1.0], [ref, 20.0], ["c", 4.0], [ref, 20.0], [ref, 10.0],
                ["d", 1.0]]
    times = calibrate.normalised(timeline)
    assert times == {ref: 10.0, "a": 1.0, "c": 2.0, "d": 1.0}
    # the load ended between the references around "e": measured fast, kept as measured
    assert calibrate.normalised([[ref, 10.0], [ref, 20.0], ["e", 1.0], [ref, 10.0]])["e"] == 1.0
    assert calibrate.normalised([["a", 3.0]]) == {"a": 3.0}


def _calibrated(coefficients) -> LatencyTable:
    table = synthetic_table(TINY, multilinear)
    table.meta["calibration"] = {"coefficients": list(coefficients)}
    return table


def test_prediction_expectation_and_solver_apply_one_calibration():
    """The calibrated total is each module's calibrated share plus the fixed cost; the
    one-hot supernet's expected latency and the search solver's cost are that total."""
    from ssr_deploy.search.budget import solve
    from tests.latency.test_latency import one_hot_supernet

    coefficients = [2.5, 1.2, 0.8, 0.9, 0.6, 0.3, 0.02]
    table = _calibrated(coefficients)
    plain = synthetic_table(TINY, multilinear)
    for seed in range(3):
        genotype = TINY.sample(random.Random(seed))
        predicted = table.predict(genotype)
        assert predicted["latency_ms"] == pytest.approx(sum(predicted["parts"].values()))
        assert predicted["parts"]["overhead"] == 2.5
        assert predicted["parts_ms"] == pytest.approx(plain.predict(genotype)["parts_ms"])
        assert predicted["latency_ms"] != pytest.approx(predicted["parts_ms"])
        net = one_hot_supernet(TINY, genotype)
        assert float(table.expected_ms(net).detach()) == pytest.approx(predicted["latency_ms"])
        masks = tuple(m.cpu().numpy() for m in (net.op_valid, net.mid_valid, net.out_valid))
        assert solve(latency_tables(table), masks).cost == pytest.approx(
            predicted["latency_ms"])
    fastest, slowest = space_range(table)
    assert 0 < fastest < slowest


def test_a_table_from_before_calibration_is_refused_saying_why(tmp_path):
    table = synthetic_table(TINY, multilinear)
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"kind": "ssr-deploy latency table", "format": 1,
                                "complete": True, **table.meta, "entries": table.entries}))
    with pytest.raises(SsrDeployError, match="built before tables were calibrated on whole "
                                             "networks .* build it again"):
        LatencyTable.load(path)
    bad = _calibrated([1.0, float("nan"), 1, 1, 1, 0, 0])
    with pytest.raises(SsrDeployError, match="calibration.coefficients"):
        bad.coefficients  # noqa: B018


def test_calibration_networks_spread_over_the_space_and_start_with_the_reference():
    networks = calibrate.genotypes(TINY, 19, 6, seed=0)
    assert networks[0].name == "reference" and len(networks) == 6
    depths = [sum(not layer.is_skip for st in g.stages for layer in st.layers)
              for g in networks[1:]]
    assert depths[-1] > depths[0]  # shallow to deep
    assert calibrate.genotypes(TINY, 19, 0, seed=0) == []
