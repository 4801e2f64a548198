"""OpenVINO on the CPU: an IR that ``export openvino`` wrote and verified (``model.xml`` with
``model.bin`` and ``model.xml.json`` beside it), or an fp32 ONNX. The float precision is the
sidecar's (what the IR was verified at), or the one asked for; never OpenVINO's default.

A reduced-precision ONNX (fp16, int8 Q/DQ) was verified in onnxruntime, not here: it is
refused, with the command that converts and verifies it for OpenVINO.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ssr_deploy.backends.base import Backend, LayerTimes, write_layer_trace
from ssr_deploy.backends.openvino import library as ov
from ssr_deploy.backends.openvino.forms import check_here
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.spec import ModelSpec, file_sha256


@dataclass(frozen=True)
class OpenVinoOptions:
    """``precision``: the float precision to compute in, fp32 or bf16 (default: the IR's, as
    verified; fp32 for an ONNX). ``threads``: inference threads (default: OpenVINO's, the
    cores). ``profile``: OpenVINO's performance counters, for ``profile``."""

    precision: str | None = None
    threads: int | None = None
    profile: bool = False

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in ov.HINTS:
            raise UsageError(f"precision={self.precision!r}: OpenVINO runs fp32 or bf16")
        if self.threads is not None and (not isinstance(self.threads, int)
                                         or isinstance(self.threads, bool) or self.threads < 1):
            raise UsageError(f"threads={self.threads!r}: give a whole number >= 1")


class OpenVinoBackend(Backend):
    name = "openvino"
    Options = OpenVinoOptions

    def __init__(self, path: str | Path, device: str = "cpu", index: int = 0,
                 options: OpenVinoOptions | None = None) -> None:
        o = options or OpenVinoOptions()
        if device != "cpu":
            raise UsageError("the OpenVINO backend runs on the CPU: use --device cpu (on an "
                             "NVIDIA GPU, run the .onnx with TensorRT or onnxruntime)")
        ov.import_openvino()
        path = Path(path)
        self.spec = ModelSpec.load(path)
        self.notes: list[str] = []
        model = ov.read_model(_check_files(path, self.spec))
        _check_io(model, self.spec, path.name)
        verified = self.spec.openvino.inference_precision if self.spec.openvino else "fp32"
        precision = o.precision or verified
        if precision == "bf16" and ov.bf16_support() != "native":
            if o.precision:  # asked for: refused
                ov.check_bf16("precision bf16")
            precision = "fp32"
            self.notes.append(f"{path.name} was verified at bf16; this CPU has no bf16 "
                              "instructions, so it runs at fp32 (at least as exact, slower)")
        elif precision != verified:
            how = (f"{path.name} was verified at {verified}" if self.spec.openvino else
                   f"{path.name} is an fp32 ONNX")
            self.notes.append(f"runs at {precision} as asked, not verified: {how}; `ssr-deploy "
                              f"export openvino --precision {precision}` measures its agreement "
                              "with fp32")
        self.float_precision = precision
        self.owners = ov.tensor_owners(model)
        self.compiled = ov.CompiledModels(model, precision, o.threads, o.profile)
        self.notes += check_here(path, self.spec, self.compiled)
        self.profiling = o.profile
        self.device_name = ov.cpu_name()

    @property
    def precision(self) -> str:
        """``fp32``, ``bf16``, or ``int8 + bf16`` (int8 with its float parts in bf16)."""
        if self.spec.precision == "int8":
            return f"int8 + {self.float_precision}"
        return self.float_precision

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.compiled(batch)

    def layer_times(self, batch: np.ndarray, iters: int, trace: Path | None = None
                    ) -> LayerTimes:
        """OpenVINO's performance counters (the backend opened with ``profile=True``): each
        executed node's time, mapped to the module its name, the nodes fused into it, or its
        tensor comes from."""
        if not self.profiling:
            raise UsageError("open the OpenVINO backend with profile=True to profile it")
        self.infer(batch)  # compiles this shape; its first run is not counted
        request = self.compiled.request(tuple(batch.shape))
        original = ov.original_names(self.compiled.compiled(tuple(batch.shape)))
        times: dict[str, float] = defaultdict(float)
        order: list[str] = []
        for _ in range(iters):
            self.infer(batch)
            for node in request.profiling_info:
                if node.status != node.Status.EXECUTED:
                    continue
                module = ov.node_module(node.node_name, node.node_type,
                                        original.get(node.node_name, ""), self.owners)
                row = f"{module}/{node.node_name}"
                if row not in times:
                    order.append(row)
                times[row] += node.real_time.total_seconds() * 1e3
        if trace:
            write_layer_trace(trace, [(row, times[row] / iters) for row in order])
        return LayerTimes(dict(times), details={"time": f"CPU node time at {self.precision}",
                                                "device": self.device_name})

    def close(self) -> None:
        self.compiled = None


IR_VERSIONS = (b"10", b"11")


def _check_files(path: Path, spec: ModelSpec) -> Path:
    """The file OpenVINO reads: an IR with its own .bin and sidecar, or an fp32 ONNX."""
    if path.suffix.lower() == ".onnx":
        if spec.precision != "fp32":
            raise UsageError(
                f"{path.name} is an {spec.precision} graph verified in onnxruntime, not in "
                f"OpenVINO: convert the fp32 ONNX with `ssr-deploy export openvino "
                f"{spec.fp32_onnx or 'model.onnx'} -o model.xml --precision "
                f"{'int8' if spec.precision == 'int8' else 'bf16'}` (verified in OpenVINO), "
                "or run it with --backend onnxruntime")
        return path
    if spec.openvino is None:
        raise SsrDeployError(f"{path.name}'s sidecar is not an OpenVINO IR's: export the IR "
                             "with `ssr-deploy export openvino`")
    with open(path, "rb") as f:  # the IR reader refuses other versions, and then OpenVINO's
        head = f.read(4096)      # other frontends print parse errors of their own
    found = re.search(rb"<net\b[^>]*\bversion=\"([^\"]*)\"", head)
    if not found or found[1] not in IR_VERSIONS:
        said = found[1].decode(errors="replace")[:12] if found else "none"
        raise SsrDeployError(f"{path.name} is not an OpenVINO IR this OpenVINO reads (IR "
                             f"version {said}; it reads {b', '.join(IR_VERSIONS).decode()}): "
                             "export it again with `ssr-deploy export openvino`")
    weights = path.with_suffix(".bin")
    if not weights.is_file():
        raise SsrDeployError(f"{path.name} has no {weights.name} beside it: keep the .bin that "
                             "`ssr-deploy export openvino` wrote next to it, or export again")
    if file_sha256(weights) != spec.openvino.bin_sha256:
        raise SsrDeployError(f"{weights.name} does not belong to {path.name} (sha256 differs "
                             "from its sidecar's): it is another network's or another "
                             "export's weights; keep each IR's .xml, .bin and .json together, "
                             "or export again")
    return path


def _check_io(model, spec: ModelSpec, name: str) -> None:
    """The model must take and return what its sidecar says (names, dtypes, rank)."""
    for kind, ports, want in (("input", model.inputs, spec.input),
                              ("output", model.outputs, spec.output)):
        if len(ports) != 1:
            raise SsrDeployError(f"{name} has {len(ports)} {kind}s; its sidecar describes one: "
                                 "it belongs to another model, export again")
        port = ports[0]
        dtype = ov.DTYPES.get(port.get_element_type().get_type_name(),
                              port.get_element_type().get_type_name())
        rank = port.get_partial_shape().rank.get_length()
        if want.name not in port.get_names() or dtype != want.dtype or rank != len(want.shape):
            raise SsrDeployError(f"{name}: {kind} {sorted(port.get_names())[0]} is {dtype} of "
                                 f"rank {rank}, its sidecar says {want.name!r} {want.dtype} of "
                                 f"rank {len(want.shape)}: it belongs to another model, export "
                                 "again")
