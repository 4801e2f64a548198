"""Latency-table parts timed in onnxruntime sessions made as the runtime makes them."""

from __future__ import annotations

import numpy as np

from ssr_deploy.backends.base import Part, PartTimer, median_ms
from ssr_deploy.backends.onnxruntime.runner import OnnxRuntimeOptions, new_session


class OnnxRuntimeTimer(PartTimer):
    """Each part's ONNX in its own session: the runtime's providers and threads."""

    precisions = {"cpu": ("fp32", "int8"), "cuda": ("fp32",)}
    whole_networks = True

    def time(self, part: Part, inputs: list[np.ndarray]) -> float:
        kind, _, index = self.device.partition(":")
        session = new_session(part, kind, int(index or 0), OnnxRuntimeOptions(self.threads))
        feeds = {i.name: x for i, x in zip(session.get_inputs(), inputs, strict=True)}
        return median_ms(lambda: session.run(None, feeds), self.repeats)

    def versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnxruntime": onnxruntime.__version__}
