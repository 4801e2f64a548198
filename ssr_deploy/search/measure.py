"""The search's cost measure, one object per kind, with everything the searcher asks of it:
MACs of the backbone or the whole network (``search.cost``), or latency predicted by a
table measured on the target device (``latency.table``). Each gives the differentiable
expected cost of the supernet, the cost of a discrete network, the per-choice tables the
constraint works on (``search.budget``), its unit, how it reads in a line and what
config.json records of it."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.search.budget import CostTables, latency_tables, macs_tables
from ssr_deploy.search.cost import expected_macs, genotype_cost


class MacsMeasure:
    unit, scale = "GMACs", 1e9

    def __init__(self, space, size: tuple[int, int], measure: str, num_classes: int) -> None:
        self.space, self.size, self.measure, self.num_classes = space, size, measure, num_classes

    def expected(self, net, full: bool = False) -> Tensor:
        return expected_macs(net, self.size, full, self.measure)

    def found(self, genotype) -> float:
        return float(genotype_cost(genotype, self.size, self.measure))

    def tables(self) -> CostTables:
        return macs_tables(self.space, self.size, self.measure, self.num_classes)

    def describe(self) -> str:
        return f"{self.measure} GMACs"

    def scale_of_deviation(self, smallest: float, full: float) -> float:
        """What the cost term measures the deviation against: the largest network (the
        authors')."""
        return full

    def settings(self, target: float, full: float) -> dict[str, Any]:
        return {"target_gmacs": target / 1e9, "full_gmacs": full / 1e9,
                "cost_measure": self.measure}

    def line(self, found: float, target: float) -> str:
        return (f"{self.measure} cost {found / 1e9:.3f} GMACs, target {target / 1e9:.3f} "
                f"({(found - target) / target:+.1%})")

    def outside(self, target: float, smallest: float, largest: float) -> str:
        return (f"target {target / 1e9:.3f} GMACs is outside what this space can reach "
                f"({self.measure} cost {smallest / 1e9:.3f} to {largest / 1e9:.3f} GMACs at "
                f"{self.size[0]}x{self.size[1]})")


class LatencyMeasure:
    unit, scale = "ms", 1.0

    def __init__(self, table) -> None:
        self.table = table

    def expected(self, net, full: bool = False) -> Tensor:
        return self.table.expected_ms(net, full)

    def found(self, genotype) -> float:
        return float(self.table.predict(genotype)["latency_ms"])

    def tables(self) -> CostTables:
        return latency_tables(self.table)

    def describe(self) -> str:
        return f"ms on {self.table.describe()}"

    def scale_of_deviation(self, smallest: float, full: float) -> float:
        """The range the architecture controls: the fastest network still has a stem,
        downsamplers and a head that take time."""
        return full - smallest

    def settings(self, target: float, full: float) -> dict[str, Any]:
        t = self.table
        return {"target_ms": target, "full_ms": full, "lut_sha256": t.sha256,
                "lut_device": t.describe(), "lut_machine": t.meta["fingerprint"]}

    def line(self, found: float, target: float) -> str:
        return (f"{found:.2f} ms predicted on {self.table.describe()}, target {target:.2f} "
                f"({(found - target) / target:+.1%})")

    def outside(self, target: float, smallest: float, largest: float) -> str:
        return (f"target {target:.2f} ms is outside what this space can reach on the table's "
                f"device ({smallest:.2f} to {largest:.2f} ms, {self.table.describe()})")


def cost_measure(config, space, num_classes: int) -> MacsMeasure | LatencyMeasure:
    """The measure a search's config asks for: latency with a table (``lut``), else MACs."""
    if not config.lut:
        return MacsMeasure(space, config.size, config.cost, num_classes)
    from ssr_deploy.latency.table import LatencyTable

    table = LatencyTable.load(config.lut)
    if table.meta["space"] != space.to_dict():
        raise SsrDeployError(f"{config.lut} was measured for another search space; "
                             "build the table with this search's --space")
    if table.num_classes != num_classes:
        raise SsrDeployError(f"{config.lut} was measured for {table.num_classes} "
                             f"classes and the data has {num_classes}: build a table "
                             f"for it, lut build ... --classes {config.data or num_classes} "
                             f"(the build's other options as before)")
    return LatencyMeasure(table)


def target_of(config, measure, full: float) -> float:
    """The target in the measure's own unit (MACs or ms): as given, else a ratio of full."""
    given = config.target_ms if isinstance(measure, LatencyMeasure) else (
        config.target_gmacs * 1e9 if config.target_gmacs else None)
    return given or config.target_ratio * full
