"""A search lands on its target as measured: it times the network it heads for on the
table's path and moves its aim by what it measured (``search.landing``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ssr_deploy import Genotype
from ssr_deploy.cli import main
from ssr_deploy.data import open_dataset
from ssr_deploy.errors import SsrDeployError
from ssr_deploy.search import searcher as searcher_module
from ssr_deploy.search.landing import Landing
from ssr_deploy.search.searcher import SearchConfig, Searcher
from ssr_deploy.search.supernet import SuperNet
from tests.latency.test_latency import OPTIONS, TINY, synthetic_file
from tests.nets import smallest_ms

SIZE = (32, 64)


class SlowerThanPredicted:
    """A device on which every network runs ``factor`` x the table's prediction."""

    def __init__(self, table, factor: float) -> None:
        self.table, self.factor, self.timed, self.removed = table, factor, [], False

    def time(self, genotype) -> dict[str, float]:
        self.timed.append(genotype.name)
        ms = self.factor * self.table.predict(genotype)["latency_ms"]
        return {"ms": ms, "raw_ms": 1.1 * ms, "machine_speed": 1.1, "spread": 0.0}

    def remove(self) -> None:
        self.removed = True


def _search(tmp_path, table_path, target, land="auto", out="run"):
    config = SearchConfig(size=SIZE, epochs=2, batch=4, lut=str(table_path), target_ms=target,
                          data="synthetic:8", land=land)
    return Searcher(TINY, open_dataset("synthetic:8", "train", SIZE), tmp_path / out, config)


def _middle(table) -> float:
    net = SuperNet(TINY, 19)
    return (smallest_ms(table, net) + float(table.expected_ms(net, full=True))) / 2


def test_a_search_moves_its_aim_by_what_it_measured_and_lands_on_the_target(
        tmp_path, monkeypatch):
    table = synthetic_file(tmp_path / "lut.json")
    target, device = _middle(table), SlowerThanPredicted(table, 1.2)

    def landing_for(config, measure, folder, world, op_list):
        return Landing(device, measure.table.space, op_list, measure.table.num_classes), None

    monkeypatch.setattr(searcher_module, "landing_for", landing_for)
    searcher = _search(tmp_path, tmp_path / "lut.json", target)
    result = searcher.run()
    found = json.loads((tmp_path / "run" / "landing.json").read_text())
    assert found == json.loads(json.dumps(result["measured"]))
    rounds = found["rounds"]
    # one network timed at the first shrinking step, one to three where settling begins
    assert [r["settling"] for r in rounds][:2] == [False, True] and len(rounds) <= 4
    assert device.removed
    # the first network it headed for was predicted on the target and ran 20% slower ...
    assert rounds[0]["aim_ms"] == pytest.approx(target)
    assert rounds[0]["ms"] / target - 1 > 0.1
    # ... so it aimed lower, and the network found runs on the target as measured
    predicted = table.predict(Genotype.load(tmp_path / "run" / "genotype.json"))["latency_ms"]
    assert found["predicted_ms"] == pytest.approx(predicted)
    assert found["ms"] == pytest.approx(1.2 * predicted)
    assert abs(found["error"]) <= 0.03 and predicted < 0.9 * target
    assert found["aim_ms"] == pytest.approx(searcher.aim) and searcher.aim < 0.9 * target
    # the aim holds the band, and a resumed search keeps it
    state = searcher.state_dict()
    resumed = _search(tmp_path, tmp_path / "lut.json", target, out="resumed")
    resumed.load_state_dict(state)
    assert resumed.aim == pytest.approx(searcher.aim) and resumed.budget.target == resumed.aim
    assert resumed.landing.rounds == rounds and resumed.landing.settled
    rows = [json.loads(line) for line in
            (tmp_path / "run" / "search_log.jsonl").read_text().splitlines()]
    assert rows[-1]["aim_ms"] == pytest.approx(searcher.aim)


class ByNetwork(SlowerThanPredicted):
    """A device on which each network runs its own factor x the table's prediction."""

    def __init__(self, table, factors: dict[str, float]) -> None:
        super().__init__(table, 1.0)
        self.factors = factors

    def time(self, genotype) -> dict[str, float]:
        self.factor = self.factors.get(genotype.name, 1.0)
        return super().time(genotype)


def test_a_search_ends_on_the_network_it_measured_nearest_the_target(tmp_path, monkeypatch):
    """The table errs by network, not by one factor: where the network a search ends on
    runs 20% over the target and one it timed on the way ran within the band, it ends on
    that one; where its own runs within the band, on its own."""
    from ssr_deploy.search.budget import Budget
    from ssr_deploy.search.landing import named

    table = synthetic_file(tmp_path / "lut.json")
    target = _middle(table)
    device = ByNetwork(table, {})
    monkeypatch.setattr(searcher_module, "landing_for", lambda config, measure, *_: (
        Landing(device, measure.table.space, [], measure.table.num_classes), None))
    monkeypatch.setattr(searcher_module, "WIDTHS", 0)  # other widths: the next test
    searcher = _search(tmp_path, tmp_path / "lut.json", target)
    with torch.no_grad():
        valid, logp = searcher._masks(), searcher_module._log(searcher.net.probs())
    searcher.landing.op_list = searcher.net.op_list
    on = Budget(searcher.tables, target, 0.02).pick(valid, logp)
    under = Budget(searcher.tables, 0.85 * target, 0.02).pick(valid, logp)
    assert under.choices != on.choices
    name_on, name_under = (named(searcher.landing.genotype(p.choices)).name
                           for p in (on, under))
    device.factors = {name_on: 1.2, name_under: target / under.cost}
    searcher.landing.record(target, under.cost, searcher.landing.genotype(under.choices),
                            True, under.choices)
    chosen = searcher._nearest_measured(on)  # times `on`: 20% over
    assert chosen.choices == under.choices and chosen.cost == pytest.approx(under.cost)
    assert [r["network"] for r in searcher.landing.rounds] == [name_under, name_on]
    device.factors[name_on] = target / on.cost  # its own on the target: kept
    searcher.landing.rounds.pop()
    assert searcher._nearest_measured(on).choices == on.choices
    # one whose op the shrinking removed (its weights gone from the supernet) is not taken
    device.factors[name_on] = 1.2
    searcher.landing.rounds.pop()
    li = next(i for i, (a, b) in enumerate(zip(on.choices, under.choices, strict=True))
              if b is not None and (a is None or a[0] != b[0]))
    del searcher.net.layers[li][str(under.choices[li][0])]
    assert searcher._nearest_measured(on).choices == on.choices


def test_where_the_found_network_misses_its_ops_are_timed_at_other_widths(tmp_path,
                                                                          monkeypatch):
    """Networks of the same layers and ops share the table's error: where the found one
    (predicted on the target) runs 10% over it, the one nearest its widths that the table
    puts 10% under is timed, runs on the target, and the search ends on it."""
    from ssr_deploy.search.budget import solve

    table = synthetic_file(tmp_path / "lut.json")
    device = SlowerThanPredicted(table, 1.1)
    monkeypatch.setattr(searcher_module, "landing_for", lambda config, measure, *_: (
        Landing(device, measure.table.space, [], measure.table.num_classes), None))
    searcher = _search(tmp_path, tmp_path / "lut.json", _middle(table))
    searcher.landing.op_list = searcher.net.op_list
    on = solve(searcher.tables, searcher._masks(), beta=-1.0)  # every layer at its widest
    searcher.target = target = on.cost
    chosen = searcher._nearest_measured(on)
    rounds = searcher.landing.rounds
    assert len(rounds) == 2 and rounds[0]["ms"] == pytest.approx(1.1 * target)
    assert [c[0] for c in chosen.choices] == [c[0] for c in on.choices]  # its ops
    assert chosen.choices != on.choices and chosen.choices == [
        tuple(c) for c in rounds[1]["choices"]]
    assert chosen.cost == pytest.approx(target / 1.1, rel=0.01)
    assert abs(rounds[1]["ms"] / target - 1) <= searcher.config.cost_band


def test_a_measurement_moves_the_aim_as_far_as_its_spread_allows():
    """The ratio the aim is corrected by weighs each measurement by its spread over passes
    against the table's own error: one taken on a busy machine barely moves it."""
    table = SlowerThanPredicted(None, 1.0)
    landing = Landing(table, TINY, [], 19, table_error=0.05)
    assert landing.ratio() == 1.0  # nothing timed: the table's word
    landing.rounds = [{"network": "a", "ms": 75.0, "predicted_ms": 100.0, "spread": 0.1}]
    noisy = landing.ratio()
    landing.rounds[0]["spread"] = 0.005  # a quiet machine: as close as it gets (1%)
    quiet = landing.ratio()
    assert 0.93 < noisy < 0.96 and 0.75 < quiet < 0.77  # a fifth of the way; nearly all
    landing.rounds.append({"network": "b", "ms": 115.0, "predicted_ms": 100.0,
                           "spread": 0.005})  # two as good: between them
    assert 0.92 < landing.ratio() < 0.94
    # a measurement with no steady pass (the machine's speed changed during every one)
    # counts no more than the table, however close its passes were
    landing.rounds = [{"network": "a", "ms": 75.0, "predicted_ms": 100.0, "spread": 0.005,
                       "steady": 0, "passes": 15}]
    assert landing.ratio() == pytest.approx(np.sqrt(0.75), rel=1e-6)
    # once settling has timed a network, the first step's (another kind of network) is out
    landing.rounds = [{"network": "a", "ms": 85.0, "predicted_ms": 100.0, "spread": 0.005,
                       "settling": False}]
    first = landing.ratio()
    landing.rounds.append({"network": "b", "ms": 105.0, "predicted_ms": 100.0,
                           "spread": 0.005, "settling": True})
    assert first < 0.9 and 1.0 < landing.ratio() < 1.05


def test_landing_times_networks_on_the_tables_path_here(tmp_path):
    """A table built on this machine: the network found is exported and run on its path,
    the reference network timed beside it; the exports go at the end."""
    from ssr_deploy.latency import build_lut
    from ssr_deploy.latency.table import LatencyTable

    path = tmp_path / "lut.json"
    build_lut(TINY, path, OPTIONS, progress=False)
    table = LatencyTable.load(path)
    space = tmp_path / "space.json"
    space.write_text(json.dumps(TINY.to_dict()))
    r = CliRunner().invoke(main, [
        "search", "--data", "synthetic:8", "--space", str(space), "--size", "32x64",
        "--epochs", "2", "--batch", "4",
        "--lut", str(path), "--target-ms", f"{_middle(table):.4f}", "--out",
        str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    found = json.loads((tmp_path / "run" / "landing.json").read_text())
    assert found["rounds"] and found["ms"] > 0 and found["raw_ms"] > 0
    # the median over passes of each time over the machine's speed then, the least raw time
    assert 0.5 < found["ms"] * found["machine_speed"] / found["raw_ms"] < 2
    assert "networks timed to land (landing.json)" in r.output
    assert not (tmp_path / "run" / "landing").exists()
    with torch.no_grad():  # the network found is the one predicted
        g = Genotype.load(tmp_path / "run" / "genotype.json")
    assert found["predicted_ms"] == pytest.approx(table.predict(g)["latency_ms"])


def test_land_on_refuses_where_the_table_cannot_be_timed(tmp_path):
    table = synthetic_file(tmp_path / "lut.json")  # measured on a machine "made up"
    with pytest.raises(SsrDeployError, match="another machine or library versions"):
        _search(tmp_path, tmp_path / "lut.json", _middle(table), land="on")
    auto = _search(tmp_path, tmp_path / "lut.json", _middle(table), out="auto")
    assert auto.landing is None and any("not timed" in n for n in auto.notes)
    r = CliRunner().invoke(main, ["search", "--data", "synthetic:8", "--land", "on", "--out",
                                  str(tmp_path / "x")])
    assert r.exit_code == 2 and "--land on needs --lut" in r.output
