"""Landing on the target as measured, not only as predicted. A latency table predicts a
network within a few percent, and a search picks, among the networks the table puts on the
target, the one its probabilities favour: a choice that leans towards networks the table
under-predicts (measured: 7 of 9 found networks ran slower than predicted, up to 10%, where
40 random networks' mean error was under 2%). So where the table was measured on this
machine and its path runs here, the search times the network it is heading for (the anchor)
at the first shrinking step, exported and run as a user runs it and brought to the table's
speed (``latency.networks.TableSpeedClock``), and aims where the table, corrected by what
was measured, puts the target:

    aim <- target / r,  log r = sum_i log(measured_i / predicted_i) / s_i^2
                                / (1 / sigma^2 + sum_i 1 / s_i^2)

where s_i is a measurement's spread over its steady passes (a busy machine's noise; one
with no steady pass counts as no better than the table) and sigma the table's own error
on networks it was not fitted on (its leave-one-out error): the table's
word against the measurements', each as good as it is, so one measurement taken during a
burst of other work does not throw the search across the space. The aim is held in a band
a third as wide as --cost-band (the search then has its epochs to move there). Where
settling begins (or the epochs run out), when the space left is nearly the network found,
it times the anchor again, up to ``ROUNDS`` networks, until one is measured within
--cost-band of the target or the space left holds no network not yet timed, each moving the
aim the same way; from there the networks settling timed alone set the ratio (the first
step's network is of another kind: on 8 of 9 searches it ran 0.81-0.96x its prediction
where the networks settling timed ran 0.91-1.10x). The network the search ends on is timed
too; where it runs outside --cost-band, the same layers and ops are timed at other widths,
up to ``WIDTHS`` networks, each the one nearest the found network's widths that the table,
corrected by what the last of them ran at, puts on the target (networks this alike share
the table's error; widths are what settling has least room left to move), until one runs
within the band. The search ends on the network timed nearest the target, where nearer than
the found one (the table errs by network, not by one factor). What was measured is
reported beside the predictions (``landing.json``)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.errors import UsageError
from ssr_deploy.genotype import Genotype

ROUNDS = 5
WIDTHS = 3  # networks of the found one's ops timed at other widths, where it misses
TABLE_ERROR = 0.05  # a table's error on networks it was not fitted on, where it has no figure
MIN_SPREAD = 0.01  # no measurement is taken as closer than 1%
LANDED_BAND = 3  # once aimed by a measurement, the band is --cost-band over this
FILE = "landing.json"


class Landing:
    """The search's measurements on the table's path: the rounds that moved its aim, and
    the found network's."""

    def __init__(self, clock, space, op_list: list, num_classes: int,
                 table_error: float = TABLE_ERROR) -> None:
        self.clock, self.space, self.op_list = clock, space, op_list
        self.num_classes, self.table_error = num_classes, table_error
        self.rounds: list[dict[str, Any]] = []
        self.settled = False  # settling's networks have been timed: the landing is over

    def ratio(self) -> float:
        """measured / predicted, as the networks timed and the table's own error say it
        (1: the table's word, where nothing was timed); once settling has timed a network,
        settling's alone."""
        weight, total = 1 / self.table_error ** 2, 0.0
        settling = [row for row in self.rounds if row.get("settling")]
        for row in settling or self.rounds:
            s = max(row["spread"], MIN_SPREAD, self.table_error if row.get("steady") == 0
                    else 0.0)
            w = 1 / s ** 2
            weight, total = weight + w, total + w * np.log(row["ms"] / row["predicted_ms"])
        return float(np.exp(total / weight))

    def timed(self, genotype: Genotype) -> dict[str, Any] | None:
        """The round that timed this network, if one did."""
        name = named(genotype).name
        return next((row for row in self.rounds if row["network"] == name), None)

    def genotype(self, choices: list) -> Genotype:
        """The network of a pick's choices, named by what it is (one network, one export)."""
        from ssr_deploy.search.supernet import genotype_of

        return named(genotype_of(self.space, self.op_list, choices, self.num_classes,
                                 description="a search's anchor"))

    def time(self, genotype: Genotype) -> dict[str, float]:
        """The network's ms at the table's speed (``ms``), as run (``raw_ms``), the
        machine's speed then, the spread over passes, how many passes and how many were
        steady; a network a round already timed is not timed again."""
        if row := self.timed(genotype):
            return {k: row[k] for k in ("ms", "raw_ms", "machine_speed", "spread", "passes",
                                        "steady") if k in row}
        return self.clock.time(named(genotype))

    def record(self, aim: float, predicted: float, genotype: Genotype, settling: bool,
               choices: list | None = None) -> dict[str, Any]:
        """Time the network and keep it as a round (``choices``: the pick it is, so the
        search can end on it)."""
        row = {"network": named(genotype).name, "aim_ms": aim, "predicted_ms": predicted,
               **self.time(genotype), "settling": settling,
               "choices": None if choices is None else [
                   None if c is None else [int(x) for x in c] for c in choices]}
        self.rounds.append(row)
        return row

    def state(self) -> dict[str, Any]:
        return {"rounds": self.rounds, "settled": self.settled}

    def load(self, state: dict[str, Any]) -> None:
        self.rounds, self.settled = list(state["rounds"]), bool(state["settled"])

    def close(self) -> None:
        """The exports go once the search has its network."""
        self.clock.remove()


def named(genotype: Genotype) -> Genotype:
    """The genotype named by its layers (``net-<digest>``): one network, one export."""
    layers = json.dumps(genotype.to_dict()["stages"], sort_keys=True).encode()
    return dataclasses.replace(genotype, name=f"net-{hashlib.sha256(layers).hexdigest()[:12]}")


def landing_for(config, measure, folder: Path, world: int, op_list: list
                ) -> tuple[Landing | None, str | None]:
    """(the search's Landing, or None; a note saying why not where ``--land auto`` found
    it cannot). ``--land on`` refuses in one line where it cannot. ``op_list``: the
    supernet's ops, as a pick's op indices index them."""
    from ssr_deploy.search.measure import LatencyMeasure

    if config.land == "off" or not isinstance(measure, LatencyMeasure):
        return None, None
    table = measure.table
    from ssr_deploy.latency.networks import TableSpeedClock

    why = ("a search under torchrun does not time networks (its processes would share the "
           "machine)") if world > 1 else TableSpeedClock.unavailable(table)
    if why:
        if config.land == "on":
            raise UsageError(f"--land on: the table's networks cannot be timed here: {why}; "
                             "search on the machine the table was built on, or --land off")
        return None, (f"the network found is not timed on {table.describe()}: {why} (it "
                      "lands where the table predicts)")
    fit = (table.meta.get("calibration") or {}).get("fit") or {}
    held_out = fit.get("leave_one_out_mean_rel_error")  # mean |e| of a normal: 0.8 sigma
    return Landing(TableSpeedClock(table, Path(folder) / "landing"), table.space, op_list,
                   table.num_classes, held_out * 1.25 if held_out else TABLE_ERROR), None
