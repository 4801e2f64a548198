"""ONNX Runtime: CPU by default (the embedded default), CUDA / TensorRT providers on request."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ssr_deploy.errors import SsrDeployError
from ssr_deploy.export.metadata import read_sidecar
from ssr_deploy.runtime.backends.base import Backend

PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                          "CPUExecutionProvider"]}


def import_onnxruntime():
    """onnxruntime, or one line saying which extra brings it."""
    try:
        import onnxruntime
    except ImportError:
        raise SsrDeployError("onnxruntime is not installed: pip install 'ssr-deploy[cpu]' (or "
                             "[cu12] / [cu13] on an NVIDIA machine)") from None
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 io_binding: bool | None = None) -> None:
        """``threads``: intra-op threads (default: onnxruntime's, the physical cores).
        ``io_binding`` (default: on for GPU providers) binds host input and output buffers
        so onnxruntime copies straight to and from the device."""
        ort = import_onnxruntime()
        self.metadata = read_sidecar(path)
        kind = device.split(":")[0]
        if kind not in PROVIDERS:
            raise SsrDeployError(f"device {device!r} is not known; use cpu, cuda or tensorrt")
        missing = set(PROVIDERS[kind][:1]) - set(ort.get_available_providers())
        if missing:
            raise SsrDeployError(f"onnxruntime here has no {missing.pop()}; install "
                                 "onnxruntime-gpu (pip install 'ssr-deploy[cu12]') or use cpu")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=PROVIDERS[kind])
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0][:200]
            raise SsrDeployError(f"onnxruntime cannot load {path}: {first}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.device_name = kind
        self.io_binding = kind != "cpu" if io_binding is None else io_binding

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return self.session.run(None, {self.input_name: batch})[0]
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def close(self) -> None:
        self.session = None
