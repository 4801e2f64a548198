"""The table's clock: each part timed through the chosen backend's ``PartTimer`` (the backend
runs it as it runs networks), exported once as ``export onnx`` writes a network (an fp16
table times the fp16 graph, as an fp16 engine is built from one; an int8 table the part
quantized as the backend's int8 export quantizes), on seeded inputs. Whole networks are timed
as a user runs them where the path allows (``networks.NetworkClock``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.backends import part_timer_class
from ssr_deploy.backends.base import Part, PartTimer
from ssr_deploy.latency.networks import NetworkClock
from ssr_deploy.latency.options import IO_KEY, LutOptions, part_module
from ssr_deploy.latency.parts import Probe, example_input, export_part, quantize_for_timing


class Clock:
    def __init__(self, o: LutOptions, networks: Path | None = None) -> None:
        """``networks``: the folder whole networks are exported into while the table is
        built (None: timed through the part timer, as parts are)."""
        self.o = o
        self.networks = NetworkClock(o, networks) if networks and NetworkClock.handles(o) \
            else None
        self.timer: PartTimer = part_timer_class(o.backend)(o.device, o.precision, o.repeats,
                                                             o.threads)
        self.rng = np.random.default_rng(o.seed)
        self._parts: dict[str, Part] = {}

    def time(self, probe: Probe) -> float:
        """The part's median ms (a frame's copies in and out for the ``io`` part)."""
        if probe.genotype is not None and self.networks is not None:
            return self.networks.time(probe.genotype)
        if probe.key == IO_KEY:
            frame = example_input(*probe.inputs[0], self.rng)
            return self.timer.time_copies(frame, frame.shape[:3])
        inputs = [example_input(shape, dtype, self.rng) for shape, dtype in probe.inputs]
        return self.timer.time(self.part(probe), inputs)

    def part(self, probe: Probe) -> Part:
        """What the timer runs: the part's ONNX, exported once, or its module."""
        if not self.timer.exports:
            return probe.module
        if probe.key not in self._parts:
            model = export_part(probe)
            if self.o.precision == "fp16":
                import onnx

                from ssr_deploy.export.fp16 import to_fp16

                model = to_fp16(onnx.load_from_string(model)).SerializeToString()
            elif self.o.precision == "int8" and part_module(probe.key) not in \
                    self.o.fp32_layers:  # a module the export keeps in float is not quantized
                model = quantize_for_timing(model, probe.inputs, self.o.int8_options())
            self._parts[probe.key] = model
        return self._parts[probe.key]

    def forget(self, key: str) -> None:
        """Drop a part's graph (a whole network is big, and timed once per pass)."""
        self._parts.pop(key, None)

    def fingerprint(self) -> dict[str, str | None]:
        """The accelerator (where there is one) and library versions the times depend on."""
        return {"device_name": self.timer.device_label(), **self.timer.versions()}

    def machine_fingerprint(self, machine: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a table's times hold on: the CPU and its cores, the accelerator where the
        table times on one, the library versions (``machine``: ``machine_info()``'s)."""
        from ssr_deploy.runtime.bench import machine_info

        machine = machine or machine_info()
        measured = self.fingerprint()
        gpu = measured.pop("device_name") or (machine.get("gpu") or {}).get("name")
        return {"cpu": machine.get("cpu"), "cores": machine.get("cores"),
                "gpu": gpu if self.o.device.startswith("cuda") else None, **measured}
