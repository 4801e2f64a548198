"""Latency-table parts compiled by OpenVINO as the backend compiles a network: static shapes,
the float precision named (fp32, or bf16 on CPUs that have it; an int8 part's float parts
as an int8 IR's run), OpenVINO's latency hint."""

from __future__ import annotations

import numpy as np

from ssr_deploy.backends.base import Part, PartTimer, median_ms
from ssr_deploy.backends.openvino import library as ov


class OpenVinoTimer(PartTimer):
    precisions = {"cpu": ("fp32", "bf16", "int8")}
    int8_target = "openvino"
    has_int8_forms = True
    whole_networks = True
    int8_export = "ir"
    runs_at_precision = True

    @classmethod
    def default_int8_form(cls) -> str:
        """The form this CPU runs right and fastest (``forms.candidates``' first)."""
        from ssr_deploy.backends.openvino.forms import candidates
        from ssr_deploy.cpu import this_cpu

        return candidates(this_cpu())[0]

    def __init__(self, device: str, precision: str, repeats: int,
                 threads: int | None = None) -> None:
        super().__init__(device, precision, repeats, threads)
        ov.import_openvino()

    @classmethod
    def check(cls, backend: str, device: str, precision: str) -> None:
        super().check(backend, device, precision)
        if precision == "bf16":
            ov.check_bf16("--precision bf16")

    def time(self, part: Part, inputs: list[np.ndarray]) -> float:
        # an int8 part's float parts at the IR's precision: bf16 where the CPU has it
        float_precision = ov.float_precision(None if self.precision == "int8" else
                                             self.precision)
        compiled = ov.CompiledModels(ov.read_model(part), float_precision, self.threads)
        request = compiled.request(tuple(inputs[0].shape))  # a part's shapes are static
        feeds = dict(enumerate(inputs))
        return median_ms(lambda: request.infer(feeds, share_inputs=True), self.repeats)

    def versions(self) -> dict[str, str]:
        return {"openvino": ov.version()}
