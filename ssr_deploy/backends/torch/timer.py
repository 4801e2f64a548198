"""Latency-table parts timed as the torch backend runs a network: eager, channels_last, fp16
autocast on a GPU at ``precision="fp16"``; CUDA work is waited for before the clock stops."""

from __future__ import annotations

import numpy as np
import torch

from ssr_deploy.backends.base import Part, PartTimer, median_ms
from ssr_deploy.errors import SsrDeployError


class TorchTimer(PartTimer):
    """Each part's module itself (no export)."""

    exports = False
    precisions = {"cpu": ("fp32",), "cuda": ("fp32", "fp16")}

    def __init__(self, device: str, precision: str, repeats: int,
                 threads: int | None = None) -> None:
        super().__init__(device, precision, repeats, threads)
        self.torch_device = torch.device(device)
        if self.torch_device.type == "cuda" and not torch.cuda.is_available():
            raise SsrDeployError("--device cuda: no CUDA GPU is visible to PyTorch here")

    def _sync(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def time(self, part: Part, inputs: list[np.ndarray]) -> float:
        module = part().eval().to(self.torch_device, memory_format=torch.channels_last)
        xs = [torch.from_numpy(x).to(self.torch_device) for x in inputs]
        xs = [x.contiguous(memory_format=torch.channels_last) if x.dim() == 4
              and x.dtype == torch.float32 else x for x in xs]
        fp16 = self.precision == "fp16"

        def run():
            with torch.inference_mode(), torch.autocast(self.torch_device.type, torch.float16,
                                                        enabled=fp16):
                module(*xs)

        return median_ms(run, self.repeats, warmup=3, sync=self._sync)

    def time_copies(self, frame: np.ndarray, labels_shape: tuple[int, ...]) -> float:
        """The torch backend's copies: the frame pinned and uploaded, the labels back."""
        host = torch.from_numpy(frame)
        labels = torch.zeros(labels_shape, dtype=torch.uint8, device=self.torch_device)

        def run():
            host.pin_memory().to(self.torch_device, non_blocking=True)
            labels.cpu()

        return median_ms(run, self.repeats, warmup=3, sync=self._sync)

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def device_label(self) -> str | None:
        if self.torch_device.type != "cuda":
            return None
        return torch.cuda.get_device_name(self.torch_device)
