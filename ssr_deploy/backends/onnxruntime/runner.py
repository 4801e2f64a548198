"""ONNX Runtime: CPU by default (the embedded default), CUDA / TensorRT providers on request;
its own per-node profiler mapped back to the genotype's modules."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssr_deploy.backends.base import Backend, LayerTimes
from ssr_deploy.errors import SsrDeployError, UsageError
from ssr_deploy.io import atomic_write
from ssr_deploy.names import module_of_node
from ssr_deploy.spec import ModelSpec

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


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """``threads``: intra-op threads (default: onnxruntime's, the physical cores).
    ``io_binding`` (default: on for GPU providers) binds host input and output buffers so
    onnxruntime copies straight to and from the device. ``tensorrt``: on a GPU, use
    onnxruntime's TensorRT execution provider in front of CUDA. ``profile``: record
    onnxruntime's per-node profile (``end_profiling()`` returns the file)."""

    threads: int | None = None
    io_binding: bool | None = None
    tensorrt: bool = False
    profile: bool = False

    def __post_init__(self) -> None:
        if self.threads is not None and (not isinstance(self.threads, int)
                                         or isinstance(self.threads, bool) or self.threads < 1):
            raise UsageError(f"threads={self.threads!r}: give a whole number >= 1")


def new_session(model: str | Path | bytes, device: str = "cpu", index: int = 0,
                options: OnnxRuntimeOptions | None = None, profile_dir: Path | None = None):
    """An onnxruntime session as the runtime makes it (providers, threads, profiling into
    ``profile_dir``, a private temp folder by default) for a model file or serialized model."""
    ort = import_onnxruntime()
    o = options or OnnxRuntimeOptions()
    kind = "tensorrt" if device == "cuda" and o.tensorrt else device
    if o.tensorrt and device != "cuda":
        raise UsageError("tensorrt=True needs device cuda")
    if kind not in PROVIDERS:
        raise UsageError(f"device {device!r}: use cpu or cuda")
    missing = set(PROVIDERS[kind][:1]) - set(ort.get_available_providers())
    if missing:
        raise SsrDeployError(f"onnxruntime here has no {missing.pop()}; install "
                             "onnxruntime-gpu (pip install 'ssr-deploy[cu12]') or use cpu")
    session_options = ort.SessionOptions()
    session_options.log_severity_level = 4  # a failure is our one line, not its log line too
    if o.threads:
        session_options.intra_op_num_threads = o.threads
    if o.profile:  # into a private temp folder, not the user's working directory
        import tempfile

        folder = profile_dir or Path(tempfile.mkdtemp(prefix="ssr-deploy-ort-profile-"))
        session_options.enable_profiling = True
        session_options.profile_file_prefix = str(folder / "profile")
    providers: list[Any] = [(p, {"device_id": index}) if p != "CPUExecutionProvider"
                            else p for p in PROVIDERS[kind]]
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, session_options, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        first = str(e).strip().splitlines()[0][:200]
        name = "the model" if isinstance(model, bytes) else model
        raise SsrDeployError(f"onnxruntime cannot load {name}: {first}") from None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    Options = OnnxRuntimeOptions

    def __init__(self, path: str | Path, device: str = "cpu", index: int = 0,
                 options: OnnxRuntimeOptions | None = None) -> None:
        o = options or OnnxRuntimeOptions()
        self.path = Path(path)
        self.spec = ModelSpec.load(path)
        self.profile_dir = None
        if o.profile:  # the profiler's file lives here, removed at close even after a failure
            import tempfile

            self.profile_dir = Path(tempfile.mkdtemp(prefix="ssr-deploy-ort-profile-"))
        try:
            self.session = new_session(path, device, index, o, self.profile_dir)
        except BaseException:
            self.close()
            raise
        try:
            check_session_io(self.session, self.spec, self.path.name)
        except BaseException:
            self.close()
            raise
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.device_name = device if device == "cpu" else f"{device}:{index}"
        self.on_gpu = device != "cpu"
        self.io_binding = device != "cpu" if o.io_binding is None else o.io_binding

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return self.session.run(None, {self.input_name: batch})[0]
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, batch)
        binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def end_profiling(self) -> str:
        """Stop onnxruntime's profiler; the path of its JSON (Chrome trace format)."""
        return self.session.end_profiling()

    def layer_times(self, batch: np.ndarray, iters: int, trace: Path | None = None
                    ) -> LayerTimes:
        """onnxruntime's own per-node profile (the backend opened with ``profile=True``)."""
        if self.profile_dir is None:
            raise UsageError("open the onnxruntime backend with profile=True to profile it")
        for _ in range(iters):
            self.infer(batch)
        events = Path(self.end_profiling())
        try:
            try:
                recorded = json.loads(events.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise SsrDeployError(f"onnxruntime's profile {events} is incomplete: its "
                                     "folder's disk is full or the file exceeds the size "
                                     "limit; free space or lower --iters") from None
            if trace:  # onnxruntime writes the Chrome trace format already
                atomic_write(trace, lambda t: shutil.copyfile(events, t))
            times: dict[str, float] = defaultdict(float)
            owner = tensor_modules(self.path)
            for event in recorded:
                if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                    name = event["name"][: -len("_kernel_time")]
                    times[node_row(name, owner)] += event["dur"] / 1e3
        finally:
            events.unlink(missing_ok=True)
        return LayerTimes(dict(times))

    def close(self) -> None:
        self.session = None  # onnxruntime writes an unfinished profile as the session goes
        if getattr(self, "profile_dir", None) is not None:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            self.profile_dir = None


ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
             "tensor(float16)": "float16", "tensor(float)": "float32"}


def check_session_io(session, spec: ModelSpec, name: str) -> None:
    """The graph must take and return what its sidecar says (one input and one output, their
    names, dtypes, ranks and fixed dimensions): a sidecar of another graph is one line here,
    not onnxruntime's error at the first frame."""
    for kind, ports, want in (("input", session.get_inputs(), spec.input),
                              ("output", session.get_outputs(), spec.output)):
        port = ports[0] if len(ports) == 1 else None
        dims = list(port.shape) if port is not None else []
        fixed_ok = port is not None and len(dims) == len(want.shape) and all(
            not isinstance(d, int) or w == -1 or d == w for d, w in zip(dims, want.shape,
                                                                       strict=True))
        if port is None or port.name != want.name or ORT_TYPES.get(port.type) != want.dtype \
                or not fixed_ok:
            found = (f"{len(ports)} {kind}s" if port is None else
                     f"{kind} {port.name!r} {ORT_TYPES.get(port.type, port.type)} {dims}")
            raise SsrDeployError(f"{name} has {found}; its sidecar describes {want.name!r} "
                                 f"{want.dtype} {list(want.shape)}: the sidecar belongs to "
                                 "another graph; keep each model with its own, or export again")


def tensor_modules(path: Path) -> dict[str, str]:
    """Output tensor name -> module, from the module-prefixed node names of our export
    (without the onnx package, nothing: the nodes onnxruntime fused then count as other)."""
    try:
        import onnx
    except ImportError:
        return {}

    graph = onnx.load(str(path), load_external_data=False).graph
    return {out: module_of_node(node.name) for node in graph.node
            if module_of_node(node.name, None) for out in node.output}


def node_row(name: str, owner: dict[str, str]) -> str:
    """onnxruntime renames the nodes it fuses after their output tensor (``relu_29_nchwc``)
    and adds layout reorders; give each a ``module/name`` row."""
    if "/" in name:
        return name
    base = name.removesuffix("_nchwc")
    while base:  # fused names add suffixes to a tensor name: add_2_mul_nchwc -> add_2
        if base in owner:
            return f"{owner[base]}/{name}"
        base = base.rpartition("_")[0]
    return f"{'layout-reorder' if name.startswith('Reorder') else 'other'}/{name}"
