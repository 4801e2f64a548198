"""TensorRT (10.3+ and 11) and TensorRT-RTX (1.7+): which library (``library``), the CUDA glue
through cuda-python (``cuda``), optimisation profiles (``profiles``), the one ONNX -> engine
build (``build``), the engine runner with its IProfiler (``runner``) and the latency-table
part timer (``timer``). Importing this package imports no TensorRT and no CUDA: each loads
its library when it is used."""

from ssr_deploy.backends.tensorrt.runner import TensorRTBackend, TensorRTOptions
from ssr_deploy.backends.tensorrt.timer import TensorRTTimer

__all__ = ["TensorRTBackend", "TensorRTOptions", "TensorRTTimer"]
