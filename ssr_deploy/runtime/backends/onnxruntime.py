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


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        import onnxruntime as ort

        self.metadata = read_sidecar(path)
        kind = device.split(":")[0]
        if kind not in PROVIDERS:
            raise SsrDeployError(f"device {device!r} is not known; use cpu, cuda or tensorrt")
        missing = set(PROVIDERS[kind][:1]) - set(ort.get_available_providers())
        if missing:
            raise SsrDeployError(f"onnxruntime here has no {missing.pop()}; install "
                                 "onnxruntime-gpu (pip install 'ssr-deploy[gpu]') or use cpu")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=PROVIDERS[kind])
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0][:200]
            raise SsrDeployError(f"onnxruntime cannot load {path}: {first}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.device_name = kind

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def close(self) -> None:
        self.session = None
