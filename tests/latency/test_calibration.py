"""From parts to whole networks: the calibration a table is built with (its fit, the
reference-scaled times), applied the same way by the exact prediction, the supernet's
expected latency and the search's solver; a table from before calibration refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

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
            for _ in range(40)]
    measured = [float(np.dot(truth, r)) for r in rows]
    fitted = calibrate.fit(rows, measured)
    predicted = [float(np.dot(fitted, r)) for r in rows]
    assert np.max(np.abs(np.array(predicted) / measured - 1)) < 0.02
    assert max(abs(e) for e in calibrate.leave_one_out(rows, measured)) < 0.05
    # with no networks to tell otherwise, the prior: the plain sum of parts
    assert calibrate.fit([[1.0, 0, 0, 0, 0, 0, 0]], [1e-9]) == pytest.approx(
        list(calibrate.PRIOR), abs=1e-6)


def test_a_dozen_noisy_networks_are_pulled_towards_a_constant_and_one_scale(monkeypatch):
    """Where the parts' sum is far off (OpenVINO: 30-100%) but a constant and one factor
    explain most of it, twelve networks measured with 5% noise predict fresh networks without
    the bias a pull towards the plain sum leaves."""
    rng = np.random.default_rng(1)

    def draw(n):
        return [[1.0, *rng.uniform(2, 10, 4), rng.integers(2, 12), rng.uniform(1, 20)]
                for _ in range(n)]

    def truth(r):
        return 4.0 + 0.55 * sum(r[1:5])

    rows = draw(12)
    measured = [truth(r) * rng.normal(1, 0.05) for r in rows]
    fresh = draw(200)

    def errors(c):
        return np.array([np.dot(c, r) / truth(r) - 1 for r in fresh])

    ours = errors(calibrate.fit(rows, measured))
    assert abs(ours.mean()) < 0.025 and np.median(np.abs(ours)) < 0.035
    two = calibrate.two_numbers(np.asarray(rows) / np.asarray(measured)[:, None])
    assert list(two[1:5]) == [two[1]] * 4 and list(two[5:]) == [0, 0]
    monkeypatch.setattr(calibrate, "two_numbers", lambda x: np.asarray(calibrate.PRIOR))
    plain = errors(calibrate.fit(rows, measured))  # pulled towards the plain sum instead
    assert np.median(np.abs(ours)) < np.median(np.abs(plain))
    assert abs(ours.mean()) < abs(plain.mean())


def test_a_network_timed_during_a_burst_does_not_bend_the_fit(monkeypatch):
    """Twenty networks measured with 1% noise, two of them 25% slow (a burst of other work
    on a shared machine while they ran): their pull stops growing at 5%, so the fit
    predicts fresh networks closer than plain least squares, which carries them."""
    rng = np.random.default_rng(2)

    def draw(n):
        return [[1.0, *rng.uniform(2, 10, 4), rng.integers(2, 12), rng.uniform(1, 20)]
                for _ in range(n)]

    def truth(r):
        return 4.0 + 0.55 * sum(r[1:5]) + 0.2 * r[5]

    rows, fresh = draw(20), draw(200)
    measured = [truth(r) * rng.normal(1, 0.01) * (1.25 if k in (3, 11) else 1)
                for k, r in enumerate(rows)]

    def errors(c):
        e = np.abs([np.dot(c, r) / truth(r) - 1 for r in fresh])
        return np.median(e), e.max()

    robust = errors(calibrate.fit(rows, measured))
    monkeypatch.setattr(calibrate, "HUBER", 1e9)  # plain least squares
    plain = errors(calibrate.fit(rows, measured))
    assert robust[0] < 0.8 * plain[0] and robust[1] < 0.8 * plain[1]


def test_networks_timed_while_the_machine_changed_speed_count_less():
    """Four of twelve networks measured 15-25% off during bursts, with none of their passes
    steady: weighed by their steady share, the fit predicts fresh networks closer."""
    rng = np.random.default_rng(3)
    truth = np.array([6.0, 0.5, 0.6, 0.4, 0.45, 0.1, 0.02])
    rows = [[1.0, *rng.uniform(5, 30, 4), rng.integers(0, 14), rng.uniform(1, 40)]
            for _ in range(12)]
    fresh = [[1.0, *rng.uniform(5, 30, 4), rng.integers(0, 14), rng.uniform(1, 40)]
             for _ in range(40)]
    off = {2: 1.25, 5: 0.85, 7: 1.2, 9: 0.8}
    measured = [float(np.dot(truth, r)) * off.get(k, 1.0) * rng.normal(1, 0.01)
                for k, r in enumerate(rows)]
    steady = [0 if k in off else 2 for k in range(12)]

    def error(c):
        return np.median([abs(np.dot(c, r) / np.dot(truth, r) - 1) for r in fresh])

    trust = [calibrate.trust_of(n, 2) for n in steady]
    assert trust == [calibrate.MIN_TRUST if k in off else 1.0 for k in range(12)]
    assert error(calibrate.fit(rows, measured, trust)) < 0.6 * error(calibrate.fit(
        rows, measured))
    assert calibrate.trust_of(1, 2) == 0.5 and calibrate.trust_of(5, 2) == 1.0


def test_a_few_networks_give_two_numbers_that_never_predict_below_nothing():
    """Fewer networks than coefficients (a demo's coarse table) fit the constant and one
    scale alone; where those would need a negative constant the scale alone is fitted, so
    the space's fastest network is not predicted at 0 ms."""
    rows = [[1.0, 0.4, 0.3, 1.0 + k, 0.5, 4 + k, 2.0] for k in range(4)]
    # the time grows faster than the parts' sums: c0 + s sum would take a negative c0
    measured = [0.5 * (2.2 + k) - 0.8 for k in range(4)]
    c = np.asarray(calibrate.fit(rows, measured))
    assert c[0] == 0 and c[1] > 0 and list(c[1:5]) == [c[1]] * 4 and list(c[5:]) == [0, 0]
    assert np.dot(c, [1.0, 0.1, 0.1, 0, 0, 0, 0]) > 0


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


def test_parts_go_by_the_pacer_and_whole_networks_by_the_reference():
    """A burst of a few seconds: the pacer, timed every few parts, sees it where the
    reference network, every 80 parts, does not; networks keep the reference's scale."""
    ref, pace = calibrate.REFERENCE, calibrate.PACE + "stage0.d1.r1.8-8-8"
    timeline = [[ref, 10.0], [pace, 2.0], ["a", 1.0], [pace, 2.0], ["b", 2.0], [pace, 4.0],
                ["c", 2.0], [pace, 4.0], ["network/n", 30.0], [ref, 10.0]]
    times = calibrate.normalised(timeline)
    # "b": the burst began between the pacer's times around it: kept as measured
    assert {k: times[k] for k in "abc"} == {"a": 1.0, "b": 2.0, "c": 1.0}
    assert times["network/n"] == 30.0
    # a table from before the pacer: its parts by the reference, as before
    old = calibrate.normalised([[ref, 10.0], ["a", 2.0], [ref, 20.0], [ref, 20.0], ["c", 4.0],
                                [ref, 20.0]])
    assert old["a"] == 2.0 and old["c"] == 2.0


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
    path.write_text(json.dumps({"kind": "ssr-deploy latency table", "format": 2,
                                "complete": True, **table.meta, "entries": table.entries}))
    with pytest.raises(SsrDeployError, match="timed as parts are, not as `bench` runs them.* "
                                             "build it again"):
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


def test_whole_networks_are_timed_as_a_user_runs_them(tmp_path, monkeypatch):
    """The calibration's networks (the reference among them) are exported as `export onnx`
    writes them and timed through the Segmenter, as `bench` times them; the exports stay
    beside an unfinished table and go with the finished one."""
    from ssr_deploy.latency import networks as networks_module
    from ssr_deploy.latency.build import build_lut
    from ssr_deploy.runtime.segmenter import Segmenter
    from tests.latency.test_latency import OPTIONS

    path, opened = tmp_path / "lut.json", []
    real_load = Segmenter.load

    def load(file, **run):
        opened.append((Path(file).name, run))
        return real_load(file, **run)

    monkeypatch.setattr(Segmenter, "load", staticmethod(load))
    real_time = networks_module.NetworkClock.time

    def stop_at_the_last(self, genotype):
        if genotype.name == "calibration-1":
            assert (path.parent / "lut.json.networks" / "reference.onnx").exists()
            raise KeyboardInterrupt
        return real_time(self, genotype)

    monkeypatch.setattr(networks_module.NetworkClock, "time", stop_at_the_last)
    with pytest.raises(KeyboardInterrupt):
        build_lut(TINY, path, OPTIONS, progress=False)
    monkeypatch.setattr(networks_module.NetworkClock, "time", real_time)
    build_lut(TINY, path, OPTIONS, progress=False)
    names = {name for name, _ in opened}
    assert names == {"reference.onnx", "calibration-0.onnx", "calibration-1.onnx"}
    assert all(run == {"backend": "onnxruntime"} for _, run in opened)
    assert not (path.parent / "lut.json.networks").exists()
    data = json.loads(path.read_text())
    assert [n["name"] for n in data["calibration"]["networks"]] == [
        "reference", "calibration-0", "calibration-1"]
    assert "as a user exports and runs them" in data["method"]
