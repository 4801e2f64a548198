"""A whole network's time at the table's speed on a shared machine: measurements during
which the machine's speed changed are taken again and left out, in the build's calibration
networks as in what a search or the benchmark measures after it."""

from __future__ import annotations

import pytest

from ssr_deploy.latency import calibrate, speed


class Machine:
    """A reference network of 10 ms and others, on a machine whose speed follows
    ``speeds`` (one value per timing, the last held)."""

    def __init__(self, speeds: list[float], ms: dict[str, float]) -> None:
        self.speeds, self.ms, self.calls = list(speeds), ms, []

    def time(self, name: str) -> float:
        factor = self.speeds.pop(0) if len(self.speeds) > 1 else self.speeds[0]
        self.calls.append(name)
        return self.ms[name] * factor


def test_a_measurement_whose_reference_moved_is_taken_again_and_left_out():
    # a burst begins while the network runs and ends during the next: the references
    # around both differ by half
    m = Machine([1.0, 1.5, 1.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], {"ref": 10.0, "net": 40.0})
    rows = speed.measure(lambda: m.time("net"), lambda: m.time("ref"), passes=2)
    assert [speed.steady(r) for r in rows] == [False, False, True, True]
    figure = speed.at_table_speed(rows, best=10.0)
    assert figure["ms"] == pytest.approx(40.0)  # the burst's 60 ms / 1.25 = 48 left out
    assert figure["passes"] == 4 and figure["steady"] == 2
    assert figure["raw_ms"] == pytest.approx(40.0)
    # each reference time serves the measurement after it too: one reference per network
    assert m.calls == ["ref"] + ["net", "ref"] * 4
    # everything measured is kept in the rows a caller passes in (a resumed benchmark)
    rows2 = [(40.0, 10.0, 10.0)]
    speed.measure(lambda: 40.0, lambda: 10.0, passes=2, rows=rows2)
    assert len(rows2) == 2


def test_a_machine_that_never_holds_still_stops_after_so_many_tries():
    speeds = [1.0, 1.0, 1.3, 1.3] * 10  # each reference 30% off the one before
    m = Machine(speeds, {"ref": 10.0, "net": 40.0})
    rows = speed.measure(lambda: m.time("net"), lambda: m.time("ref"), passes=3)
    assert len(rows) == speed.TRIES * 3
    figure = speed.at_table_speed(rows, best=10.0)
    assert figure["steady"] == 0 and figure["passes"] == 9
    # none steady: all rows count, each at the speed around it
    assert 34.0 < figure["ms"] < 46.0 and figure["spread"] > 0


def test_a_steady_slow_machine_is_brought_to_the_table_speed():
    rows = [(60.0, 15.0, 15.3), (61.0, 15.2, 15.0), (59.5, 15.0, 14.9)]
    figure = speed.at_table_speed(rows, best=10.0)
    assert figure["ms"] == pytest.approx(40.0, rel=0.02)
    assert figure["machine_speed"] == pytest.approx(1.5, rel=0.02)
    assert figure["steady"] == 3 and figure["raw_ms"] == 59.5


def test_the_build_times_a_calibration_network_again_while_the_machine_changes_speed():
    ref, key = calibrate.REFERENCE, "network/calibration-0"

    class Probe:
        def __init__(self, key):
            self.key = key

    # a burst begins while the first network runs and lasts
    m = Machine([1.0, 1.6],
                {ref: 10.0, key: 30.0, "network/calibration-1": 50.0})

    class Clock:
        def time(self, probe):
            return m.time(probe.key)

        def forget(self, _key):
            pass

    probes = [Probe(ref), Probe(key), Probe("network/calibration-1")]
    timelines = [[["part", 1.0]]]
    calibrate.measure_networks(Clock(), probes, timelines, lambda: None, lambda: None)
    keys = [k for k, _ in timelines[0]]
    assert keys == ["part", ref, key, ref, key, ref, "network/calibration-1", ref]
    rows = calibrate.network_rows(timelines)
    assert [speed.steady(r) for r in rows[key]] == [False, True]
    assert speed.at_table_speed(rows[key], 10.0)["ms"] == pytest.approx(30.0)
    assert speed.at_table_speed(rows["network/calibration-1"], 10.0)["ms"] == \
        pytest.approx(50.0)
    # the reference's own rows: its times between two networks
    assert len(rows[ref]) == 2
    # a pass cut between a network and the reference after it is completed on resume
    cut = [[ref, 10.0], [key, 30.0]]
    calibrate.measure_networks(Clock(), probes[:2], [cut], lambda: None, lambda: None)
    assert cut[-1][0] == ref and calibrate.network_rows([cut])[key]


def test_of_the_steady_measurements_those_at_the_machines_fastest_count():
    """A network slowed more than the reference during a slow stretch (what others run
    takes its memory bandwidth more): the measurements taken at full speed decide."""
    rows = [(40.0, 10.0, 10.2), (41.0, 10.1, 10.0), (60.0, 13.0, 13.0), (61.0, 13.1, 13.0)]
    figure = speed.at_table_speed(rows, best=10.0)
    assert figure["ms"] == pytest.approx(40.3, rel=0.01)
    assert figure["machine_speed"] == pytest.approx(1.0, abs=0.02)
    assert figure["steady"] == 4
