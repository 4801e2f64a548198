"""OpenVINO as this project uses it: the library (one line naming the extra when it is not
installed), what this CPU computes in, and compiled models with the precision always set.

OpenVINO's CPU plugin runs an fp32 graph in bf16 *silently* on CPUs that have bf16 (its
default precision hint), emulates bf16 on other AVX-512 CPUs (slower than fp32) and ignores
a bf16 hint on CPUs without AVX-512. So every compile here names its precision
(``INFERENCE_PRECISION_HINT``), reads back what OpenVINO chose, and refuses a mismatch.

Input shapes are made static per batch shape before compiling (``CompiledModels``): on the
CPU a static shape runs about 20% faster than the dynamic-batch graph (35 vs 45 ms at
512x1024, bf16, measured on the project's CPU).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.names import module_in

#: our precision names -> OpenVINO's INFERENCE_PRECISION_HINT values
HINTS = {"fp32": "f32", "bf16": "bf16"}
#: OpenVINO element types -> numpy's names, for the IR's I/O
DTYPES = {"u8": "uint8", "i32": "int32", "i64": "int64", "f16": "float16", "f32": "float32"}
#: compiled shapes kept per model (each is a few MB; the runtime sees a handful of batches)
MAX_COMPILED = 4


def import_openvino():
    """openvino, or one line saying which extra brings it."""
    try:
        import openvino
    except ImportError:
        raise SsrDeployError("OpenVINO is not installed: pip install 'ssr-deploy[openvino]' "
                             "(or pip install openvino)") from None
    return openvino


@functools.cache
def core():
    """The one ``openvino.Core`` of this process."""
    return import_openvino().Core()


def version() -> str:
    return import_openvino().get_version().split("-")[0]


def bf16_support() -> str:
    """``native`` (avx512_bf16 or AMX), ``emulated`` (AVX-512 without bf16: OpenVINO runs
    bf16 in software, slower than fp32) or ``none`` (OpenVINO ignores a bf16 hint); under
    ONEDNN_MAX_CPU_ISA as the kernels are capped (``ssr_deploy.cpu``)."""
    from ssr_deploy.cpu import this_cpu

    cpu = this_cpu()
    if not cpu.flags:  # not Linux: trust OpenVINO's own list of what this CPU computes in
        listed = "BF16" in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        return "native" if listed else "none"
    if cpu.bf16:
        return "native"
    return "emulated" if cpu.kind in ("avx512", "vnni", "amx") and "avx512f" in cpu.flags \
        else "none"


def cpu_name() -> str:
    return str(core().get_property("CPU", "FULL_DEVICE_NAME"))


def check_bf16(what: str) -> None:
    """One line when this CPU cannot compute in bf16 natively."""
    support = bf16_support()
    if support != "native":
        how = ("OpenVINO would emulate it, slower than fp32" if support == "emulated" else
               "OpenVINO would ignore it and compute in fp32")
        raise UsageError(f"{what}: this CPU ({cpu_name()}) has no bf16 instructions "
                         f"(avx512_bf16 or AMX); {how}. Use fp32, or int8 (its float parts "
                         "then run in fp32)")


def float_precision(wanted: str | None) -> str:
    """The float precision to compile at: ``wanted``, or the best this CPU runs natively."""
    if wanted is not None:
        if wanted not in HINTS:
            raise UsageError(f"precision {wanted!r}: OpenVINO runs fp32 or bf16")
        return wanted
    return "bf16" if bf16_support() == "native" else "fp32"


def read_model(source: str | Path | bytes):
    """An ``openvino.Model`` from an IR (.xml, its .bin beside it), an ONNX file, or a
    serialized ONNX."""
    try:
        if isinstance(source, bytes):
            return core().read_model(source, b"")
        return core().read_model(str(source))
    except RuntimeError as e:
        name = "the model" if isinstance(source, bytes) else Path(source).name
        raise SsrDeployError(f"OpenVINO cannot read {name}: {first_line(e)}") from None


def first_line(e: BaseException) -> str:
    """OpenVINO's exceptions carry a stack of 'Exception from ...' lines: the message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()
             and not ln.strip().startswith(("Exception from", "Check '"))]
    return (lines[0] if lines else str(e).strip().splitlines()[-1])[:200]


class CompiledModels:
    """One model compiled for the CPU at ``precision`` (fp32 | bf16), once per input shape
    (static shapes), with an infer request each. ``profile``: OpenVINO's performance
    counters on. ``threads``: inference threads (default: OpenVINO's, the cores). Calls from
    several threads take turns (an infer request runs one inference at a time, on every
    core)."""

    def __init__(self, model, precision: str, threads: int | None = None,
                 profile: bool = False) -> None:
        self.model, self.precision = model, precision
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": HINTS[precision],
                                       "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": profile}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._lock = threading.Lock()

    def request(self, shape: tuple[int, ...]):
        """The infer request for inputs of ``shape``, compiled on first use."""
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape][1]
        model = self.model.clone()
        model.reshape({0: list(shape)})
        try:
            compiled = core().compile_model(model, "CPU", self.config)
        except RuntimeError as e:
            raise SsrDeployError(f"OpenVINO {version()} cannot compile the model for "
                                 f"{list(shape)} at {self.precision}: {first_line(e)}; run "
                                 "it at fp32, or with --backend onnxruntime") from None
        chosen = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        expected = {"f32": "float32", "bf16": "bfloat16"}[HINTS[self.precision]]
        if expected not in chosen:
            raise SsrDeployError(f"OpenVINO compiled the model in {chosen}, not the "
                                 f"{self.precision} asked for; run it at fp32")
        self._compiled[shape] = (compiled, compiled.create_infer_request())
        while len(self._compiled) > MAX_COMPILED:
            self._compiled.popitem(last=False)
        return self._compiled[shape][1]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            request = self.request(tuple(batch.shape))
            request.infer({0: np.ascontiguousarray(batch)}, share_inputs=True)
            return request.get_output_tensor(0).data.copy()

    def compiled(self, shape: tuple[int, ...]):
        return self._compiled[shape][0]


def graph_runner(precision: str):
    """For a precision check: an in-memory ONNX graph -> a function running it in OpenVINO
    at ``precision`` (static shapes, as the backend runs it) that returns its outputs."""
    def make(model):
        compiled = CompiledModels(read_model(model.SerializeToString()), precision)
        return lambda x: [compiled(x)]

    return make


# ---- per-layer time --------------------------------------------------------------------
#: node types only our fused I/O has, renamed by OpenVINO's transformations (ArgMax -> TopK)
IO_TYPES = {"TopK"}


def tensor_owners(model) -> dict[str, str]:
    """Tensor name -> module, from the module-prefixed names of the model's nodes."""
    owners = {}
    for op in model.get_ordered_ops():
        module = module_in(op.get_friendly_name())
        if module == "other":
            continue
        for output in op.outputs():
            for name in output.get_names():
                owners[name] = module
    return owners


def node_module(name: str, node_type: str, original: str, owners: dict[str, str]) -> str:
    """The genotype module of an executed node: its own name, the names of the nodes
    OpenVINO fused into it (``originalLayersNames``), or the tensor it was named after
    (``add_20_QuantizeLinear`` -> ``add_20``)."""
    for text in (name, original):
        module = module_in(text)
        if module != "other":
            return module
    if node_type in IO_TYPES:
        return "io"
    base = name
    while base:
        if base in owners:
            return owners[base]
        base = base.rpartition("_")[0]
    return "other"


def original_names(compiled) -> dict[str, str]:
    """Executed node -> the original nodes OpenVINO fused into it, comma-separated."""
    names = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "originalLayersNames" in info:
            names[op.get_friendly_name()] = info["originalLayersNames"].astype(str)
    return names
